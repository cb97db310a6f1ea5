/**
 * nbformat 4: the notebook JSON that Jupyter writes, read with errors naming the file and the cell,
 * and written the way Jupyter writes it (multiline strings as arrays of lines, one-space indent).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

export type MultilineString = string | string[];
export type MimeBundle = Record<string, unknown>;

export interface StreamOutput {
  output_type: 'stream';
  name: 'stdout' | 'stderr';
  text: MultilineString;
}
export interface DisplayDataOutput {
  output_type: 'display_data';
  data: MimeBundle;
  metadata: Record<string, unknown>;
}
export interface ExecuteResultOutput {
  output_type: 'execute_result';
  execution_count: number | null;
  data: MimeBundle;
  metadata: Record<string, unknown>;
}
export interface ErrorOutput {
  output_type: 'error';
  ename: string;
  evalue: string;
  traceback: string[];
}
export type Output = StreamOutput | DisplayDataOutput | ExecuteResultOutput | ErrorOutput;

export interface CellBase {
  id?: string;
  source: MultilineString;
  metadata: Record<string, any>;
}
export interface CodeCell extends CellBase {
  cell_type: 'code';
  execution_count: number | null;
  outputs: Output[];
}
export interface MarkdownCell extends CellBase {
  cell_type: 'markdown';
  attachments?: Record<string, MimeBundle>;
}
export interface RawCell extends CellBase {
  cell_type: 'raw';
  attachments?: Record<string, MimeBundle>;
}
export type Cell = CodeCell | MarkdownCell | RawCell;

export interface Notebook {
  nbformat: 4;
  nbformat_minor: number;
  metadata: Record<string, any>;
  cells: Cell[];
}

export class NotebookError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotebookError';
  }
}

export function joinText(s: MultilineString | undefined): string {
  if (s === undefined) return '';
  return Array.isArray(s) ? s.join('') : s;
}

/** Split into lines that keep their '\n' (the on-disk form Jupyter writes). */
export function splitLines(s: string): string[] {
  const lines = s.split(/(?<=\n)/);
  return lines.length === 1 && lines[0] === '' ? [] : lines;
}

export function cellTags(cell: Cell): string[] {
  const tags = cell.metadata?.tags;
  return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string') : [];
}

/** Check the parts of nbformat 4 the runner and exporter rely on; `where` names the file in errors. */
export function parseNotebook(json: unknown, where: string): Notebook {
  const nb = json as any;
  if (!nb || typeof nb !== 'object' || Array.isArray(nb))
    throw new NotebookError(`${where}: expected a notebook JSON object`);
  if (nb.nbformat !== 4)
    throw new NotebookError(`${where}: field "nbformat" must be 4, got ${JSON.stringify(nb.nbformat)}`);
  if (!Array.isArray(nb.cells)) throw new NotebookError(`${where}: field "cells" must be an array`);
  nb.metadata ??= {};
  nb.nbformat_minor ??= 4;
  nb.cells.forEach((cell: any, i: number) => {
    const at = `${where}: cell ${i}`;
    if (!cell || typeof cell !== 'object') throw new NotebookError(`${at}: expected an object`);
    if (!['code', 'markdown', 'raw'].includes(cell.cell_type))
      throw new NotebookError(
        `${at}: field "cell_type" must be code, markdown or raw, got ${JSON.stringify(cell.cell_type)}`,
      );
    if (
      typeof cell.source !== 'string' &&
      !(Array.isArray(cell.source) && cell.source.every((l: unknown) => typeof l === 'string'))
    ) {
      throw new NotebookError(`${at}: field "source" must be a string or an array of strings`);
    }
    cell.metadata ??= {};
    if (cell.cell_type === 'code') {
      cell.outputs ??= [];
      cell.execution_count ??= null;
      if (!Array.isArray(cell.outputs)) throw new NotebookError(`${at}: field "outputs" must be an array`);
      cell.outputs.forEach((o: any, j: number) => {
        if (!o || !['stream', 'display_data', 'execute_result', 'error'].includes(o.output_type)) {
          throw new NotebookError(`${at}, output ${j}: unknown output_type ${JSON.stringify(o?.output_type)}`);
        }
      });
    }
  });
  return nb as Notebook;
}

export function readNotebook(file: string): Notebook {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new NotebookError(`${file}: cannot read notebook: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new NotebookError(`${file}: not valid JSON: ${(err as Error).message}`);
  }
  return parseNotebook(json, file);
}

const TEXT_MIME = /^text\/|^image\/svg\+xml$|^application\/(javascript|x-latex)$/;

function normalizeBundle(data: MimeBundle): MimeBundle {
  const out: MimeBundle = {};
  for (const [mime, value] of Object.entries(data)) {
    out[mime] =
      typeof value === 'string' && TEXT_MIME.test(mime)
        ? splitLines(value)
        : Array.isArray(value) &&
            value.every((v) => typeof v === 'string') &&
            !TEXT_MIME.test(mime) &&
            !mime.endsWith('json')
          ? value.join('')
          : value;
  }
  return out;
}

function normalizeOutput(o: Output): Output {
  switch (o.output_type) {
    case 'stream':
      return { ...o, text: splitLines(joinText(o.text)) };
    case 'display_data':
      return { output_type: 'display_data', data: normalizeBundle(o.data), metadata: o.metadata ?? {} };
    case 'execute_result':
      return {
        output_type: 'execute_result',
        execution_count: o.execution_count,
        data: normalizeBundle(o.data),
        metadata: o.metadata ?? {},
      };
    default:
      return o;
  }
}

/** A deep copy in Jupyter's on-disk form; adds cell ids when nbformat_minor >= 5. */
export function normalizeNotebook(nb: Notebook): Notebook {
  const copy = structuredClone(nb);
  for (const cell of copy.cells) {
    cell.source = splitLines(joinText(cell.source));
    if (copy.nbformat_minor >= 5 && !cell.id) cell.id = randomUUID().slice(0, 8);
    if (cell.cell_type === 'code') cell.outputs = cell.outputs.map(normalizeOutput);
  }
  return copy;
}

export function serializeNotebook(nb: Notebook): string {
  return JSON.stringify(normalizeNotebook(nb), null, 1) + '\n';
}

/** The notebook with outputs and execution counts removed (what a re-run starts from). */
export function stripOutputs(nb: Notebook): Notebook {
  const copy = structuredClone(nb);
  for (const cell of copy.cells) {
    if (cell.cell_type === 'code') {
      cell.outputs = [];
      cell.execution_count = null;
      delete cell.metadata.execution;
    }
  }
  return copy;
}
