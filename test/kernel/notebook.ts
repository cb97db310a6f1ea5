/**
 * Running notebooks headless for the tests: nbformat v4 notebooks built in code, execution
 * through nbclient (test/kernel/python/run_notebook.py), and the checks every executed notebook
 * must pass (every code cell ran; rich outputs carry their fallbacks).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { MIME, STAMP_MIME } from '../../src/display/types.js';
import { pythonDir, runPython } from './helpers.js';

export interface NotebookCell {
  cell_type: 'code' | 'markdown';
  source: string;
  metadata: Record<string, unknown>;
  execution_count?: number | null;
  outputs?: NotebookOutput[];
}

export interface NotebookOutput {
  output_type: 'stream' | 'display_data' | 'execute_result' | 'error';
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  name?: string;
  text?: string | string[];
  ename?: string;
  evalue?: string;
  traceback?: string[];
  execution_count?: number | null;
}

export interface Notebook {
  cells: NotebookCell[];
  metadata: Record<string, unknown>;
  nbformat: 4;
  nbformat_minor: number;
}

/** A notebook of the given cells (strings are code; `{ md }` is markdown) for the vqalab kernel. */
export function notebook(cells: (string | { md: string })[]): Notebook {
  return {
    cells: cells.map((c) =>
      typeof c === 'string'
        ? { cell_type: 'code', source: c, metadata: {}, execution_count: null, outputs: [] }
        : { cell_type: 'markdown', source: c.md, metadata: {} },
    ),
    metadata: {
      kernelspec: { name: 'vqalab', display_name: 'TypeScript (vqalab)', language: 'typescript' },
      language_info: { name: 'typescript', file_extension: '.ts' },
    },
    nbformat: 4,
    nbformat_minor: 5,
  };
}

export interface RunSummary {
  seconds: number;
  error: string | null;
  cells: {
    cell_type: string;
    execution_count: number | null;
    outputs: { output_type: string; mimes: string[]; ename: string | null }[];
  }[];
}

export async function executeNotebook(
  python: string,
  env: NodeJS.ProcessEnv,
  input: string,
  output: string,
  options: { cwd: string; allowErrors?: boolean; html?: string; cellTimeoutS?: number; timeoutMs?: number },
): Promise<{ summary: RunSummary; executed: Notebook; stderr: string }> {
  const args = [
    path.join(pythonDir, 'run_notebook.py'),
    input,
    output,
    '--cwd',
    options.cwd,
    '--timeout',
    String(options.cellTimeoutS ?? 600),
  ];
  if (options.allowErrors) args.push('--allow-errors');
  if (options.html) args.push('--html', options.html);
  const r = await runPython(python, args, { env, cwd: options.cwd, timeoutMs: options.timeoutMs ?? 900_000 });
  let summary: RunSummary;
  try {
    summary = JSON.parse(r.stdout) as RunSummary;
  } catch {
    throw new Error(`run_notebook.py failed (exit ${r.code}) on ${input}:\n${r.stderr.slice(-4000)}`);
  }
  const executed = JSON.parse(readFileSync(output, 'utf8')) as Notebook;
  return { summary, executed, stderr: r.stderr };
}

const VENDOR = /^application\/vnd\.vqalab\./;
/** Widgets (drawn by the extension) need an HTML fallback; other vendor types need text. */
const WIDGETS = new Set<string>(Object.values(MIME));
/** Report facts are shown nowhere, on purpose (src/report/facts.ts): only the stamp type, no fallback. */
const SHOWN_NOWHERE = new Set<string>([STAMP_MIME]);

/**
 * What must hold for any executed notebook: every code cell has an execution count, every output
 * with one of our widget types also has text/html and text/plain (viewers without our extension
 * show those), any other vendor type has text/plain, except report facts, which carry their type
 * alone (shown nowhere). Returns the problems found, naming the cell.
 */
export function notebookProblems(nb: Notebook, name: string): string[] {
  const problems: string[] = [];
  nb.cells.forEach((cell, i) => {
    if (cell.cell_type !== 'code') return;
    const where = `${name} cell ${i + 1}`;
    if (typeof cell.execution_count !== 'number')
      problems.push(`${where}: not executed (execution_count ${String(cell.execution_count)})`);
    for (const out of cell.outputs ?? []) {
      if (out.output_type === 'error') problems.push(`${where}: ${out.ename}: ${out.evalue}`);
      const mimes = Object.keys(out.data ?? {});
      if (mimes.includes(STAMP_MIME) && mimes.length > 1)
        problems.push(`${where}: report facts carry ${mimes.join(', ')}: they would be shown`);
      for (const vendor of mimes.filter((m) => VENDOR.test(m) && !SHOWN_NOWHERE.has(m))) {
        for (const fallback of WIDGETS.has(vendor) ? ['text/html', 'text/plain'] : ['text/plain']) {
          if (!mimes.includes(fallback))
            problems.push(`${where}: output with ${vendor} lacks its ${fallback} fallback`);
        }
      }
    }
  });
  return problems;
}

export function textOf(out: NotebookOutput): string {
  const t = out.text ?? out.data?.['text/plain'] ?? '';
  return Array.isArray(t) ? t.join('') : String(t);
}
