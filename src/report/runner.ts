/**
 * `vqalab report run` as a library: execute a notebook headless through our protocol client with
 * papermill-style parameters, stop at the first failing cell (unless allowErrors), stamp the run,
 * redact secrets, and write the executed .ipynb and report.html atomically.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../util/fs.js';
import { renderReport, type RenderedReport, type ReportData } from './html.js';
import { extractMetrics } from './metrics.js';
import {
  cellTags,
  joinText,
  readNotebook,
  serializeNotebook,
  stripOutputs,
  type CodeCell,
  type Notebook,
} from './nbformat.js';
import { injectParameters, type Params } from './params.js';
import { Kernel, KernelDiedError } from './protocol/kernel.js';
import { getKernelSpec, type KernelSearchOptions } from '../jupyter/kernelspec.js';
import { DisplayRegistry } from './protocol/outputs.js';
import { Redactor } from './redact.js';
import { gitFacts, hostFacts, mergedFacts, sha256, softwareFacts, type Stamp } from './stamp.js';

export interface RunOptions {
  notebook: string;
  params?: Params;
  /** Kernelspec name; default the notebook's metadata.kernelspec.name. */
  kernel?: string;
  search?: KernelSearchOptions;
  allowErrors?: boolean;
  /** Per-cell limit; a cell over it is interrupted and recorded as CellTimeoutError. */
  cellTimeoutMs?: number;
  startupTimeoutMs?: number;
  /** Working directory of the kernel (default: the notebook's directory). */
  cwd?: string;
  /** Extra environment for the kernel. */
  env?: Record<string, string>;
  /** Aborting interrupts the running cell and stops the run (the partial notebook is kept). */
  signal?: AbortSignal;
  /** Progress lines ("cell 3/12 …"). */
  log?: (line: string) => void;
}

export interface RunResult {
  /** The executed notebook, redacted. */
  notebook: Notebook;
  /** The source notebook as given (outputs stripped, earlier injected cell removed). */
  source: Notebook;
  stamp: Stamp;
  status: 'ok' | 'error' | 'interrupted';
  failedCell?: number;
  redactions: number;
}

/**
 * What a report embeds to re-run from: outputs, the injected cell and the run's metadata dropped
 * (parameters travel separately), sources as plain strings. The same for a notebook before its run
 * and after it, so `run` and `export` embed the same thing.
 */
export function sourceNotebook(nb: Notebook): Notebook {
  const copy = stripOutputs(injectParameters(nb, {}, 'python').notebook);
  if (copy.metadata.vqalab) {
    delete copy.metadata.vqalab.report;
    if (Object.keys(copy.metadata.vqalab).length === 0) delete copy.metadata.vqalab;
  }
  delete copy.metadata.papermill;
  for (const cell of copy.cells) {
    cell.source = joinText(cell.source);
    delete cell.metadata.execution;
  }
  return copy;
}

function kernelNameOf(nb: Notebook, file: string, override?: string): string {
  const name = override ?? nb.metadata?.kernelspec?.name;
  if (typeof name !== 'string' || !name)
    throw new Error(`${file}: metadata.kernelspec.name is missing; pass --kernel NAME`);
  return name;
}

export async function runNotebook(opts: RunOptions): Promise<RunResult> {
  const file = path.resolve(opts.notebook);
  const raw = readFileSync(file);
  const given = readNotebook(file);
  const params = opts.params ?? {};
  const kernelName = kernelNameOf(given, file, opts.kernel);
  const spec = getKernelSpec(kernelName, opts.search);
  const language = spec.language || given.metadata?.kernelspec?.language || given.metadata?.language_info?.name || '';
  const source = sourceNotebook(given);
  const { notebook: nb } = injectParameters(stripOutputs(given), params, language);
  const log = opts.log ?? (() => undefined);

  const start = new Date();
  const t0 = performance.now();
  const kernel = await Kernel.start({
    spec,
    cwd: opts.cwd ?? path.dirname(file),
    env: opts.env,
    startupTimeoutMs: opts.startupTimeoutMs,
  });
  kernel.on('unresponsive', () => log('kernel heartbeat stopped answering (busy?)'));
  const displays = new DisplayRegistry();
  const codeCells = nb.cells.filter((c) => c.cell_type === 'code').length;
  let cellsRun = 0;
  let status: RunResult['status'] = 'ok';
  let failedCell: number | undefined;
  let errorLine: string | undefined;
  let interrupted = false;
  const onAbort = () => {
    interrupted = true;
    kernel.interrupt().catch(() => undefined);
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (const [i, cell] of nb.cells.entries()) {
      if (cell.cell_type !== 'code') continue;
      const tags = cellTags(cell);
      const code = joinText(cell.source);
      if (tags.includes('skip-execution') || code.trim() === '') continue;
      if (interrupted) break;
      cellsRun++;
      log(`cell ${i} (${cellsRun}/${codeCells})`);
      try {
        // Like nbclient: a cell allowed to fail must not make the kernel abort the requests after it
        // (ipykernel aborts queued execute requests after an error while stop_on_error is set, and
        // under load the next cell can arrive inside that window).
        const mayFail = Boolean(opts.allowErrors) || tags.includes('raises-exception');
        const outcome = await kernel.execute(code, { timeoutMs: opts.cellTimeoutMs, displays, stopOnError: !mayFail });
        (cell as CodeCell).outputs = outcome.outputs;
        (cell as CodeCell).execution_count = outcome.executionCount;
        cell.metadata.execution = { 'iopub.status.busy': outcome.startedAt, 'shell.execute_reply': outcome.endedAt };
        if (outcome.status !== 'ok' && !tags.includes('raises-exception')) {
          if (interrupted) {
            status = 'interrupted';
            failedCell = i;
            errorLine = 'interrupted';
            break;
          }
          const err = outcome.error;
          errorLine = err ? `${err.ename}: ${err.evalue}` : `status ${outcome.status}`;
          log(`cell ${i} failed: ${errorLine}`);
          if (!opts.allowErrors) {
            status = 'error';
            failedCell = i;
            break;
          }
        }
      } catch (err) {
        if (err instanceof KernelDiedError) {
          (cell as CodeCell).outputs.push({
            output_type: 'error',
            ename: 'KernelDiedError',
            evalue: err.message,
            traceback: [err.message],
          });
          status = 'error';
          failedCell = i;
          errorLine = `KernelDiedError: ${err.message.split('\n')[0]}`;
          break;
        }
        throw err;
      }
    }
    if (interrupted && status === 'ok') {
      status = 'interrupted';
      errorLine = 'interrupted';
    }
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    await kernel.shutdown().catch(() => kernel.close());
  }
  const end = new Date();

  const redactor = new Redactor();
  redactor.collectFrom(params);
  const executed = redactor.notebook(nb);
  const facts = mergedFacts(executed);
  const stamp: Stamp = {
    schema: 'vqalab.stamp.v1',
    notebook: {
      path: path.relative(process.cwd(), file) || path.basename(file),
      sha256: sha256(raw),
      dir: path.dirname(file),
    },
    parameters: redactor.json(params),
    kernel: {
      name: spec.name,
      displayName: spec.displayName,
      language: kernel.info?.language_info?.name ?? language,
      implementation: kernel.info?.implementation,
      implementationVersion: kernel.info?.implementation_version,
      languageVersion: kernel.info?.language_info?.version,
      protocolVersion: kernel.info?.protocol_version,
    },
    git: gitFacts(path.dirname(file)),
    host: hostFacts(),
    software: softwareFacts(),
    time: { start: start.toISOString(), end: end.toISOString(), durationSeconds: (performance.now() - t0) / 1000 },
    run: {
      status,
      allowErrors: !!opts.allowErrors,
      cellsRun,
      codeCells,
      ...(failedCell !== undefined ? { failedCell } : {}),
      ...(errorLine ? { error: redactor.text(errorLine) } : {}),
    },
    facts: redactor.json(facts),
  };
  executed.metadata.vqalab = {
    ...(executed.metadata.vqalab ?? {}),
    report: { stamp, parameters: stamp.parameters, kernel: spec.name },
  };
  // papermill's place for parameters, so tools that know papermill find them.
  executed.metadata.papermill = { ...(executed.metadata.papermill ?? {}), parameters: stamp.parameters };
  return {
    notebook: executed,
    source: redactor.notebook(source),
    stamp,
    status,
    failedCell,
    redactions: redactor.count,
  };
}

/** The text of the notebook's first markdown heading, used as the report title. */
function firstHeading(nb: Notebook): string | undefined {
  for (const cell of nb.cells) {
    if (cell.cell_type !== 'markdown') continue;
    const m = /^\s{0,3}#{1,2}\s+(.+?)\s*#*\s*$/m.exec(joinText(cell.source));
    if (m) return m[1];
  }
  return undefined;
}

/** The embedded data of a report for an executed notebook. */
export function reportData(
  executed: Notebook,
  source: Notebook,
  notebookName: string,
  fallbackStamp?: Partial<Stamp>,
): ReportData {
  const recorded = executed.metadata?.vqalab?.report as
    | { stamp?: Stamp; parameters?: Params; kernel?: string }
    | undefined;
  const stamp = recorded?.stamp ?? { ...fallbackStamp, facts: mergedFacts(executed) };
  const parameters = recorded?.parameters ?? (executed.metadata?.papermill?.parameters as Params | undefined) ?? {};
  return {
    schema: 'vqalab.report.v1',
    title:
      typeof executed.metadata?.title === 'string'
        ? executed.metadata.title
        : (firstHeading(executed) ?? notebookName.replace(/\.ipynb$/, '')),
    stamp: { ...stamp, facts: stamp.facts ?? mergedFacts(executed) },
    source: {
      notebook: source,
      notebookName,
      parameters,
      kernel: recorded?.kernel ?? executed.metadata?.kernelspec?.name ?? '',
    },
    metrics: extractMetrics(executed),
  };
}

export interface WrittenReport {
  ipynb: string;
  html: string;
  htmlBytes: number;
  rendered: RenderedReport;
}

/** Write NAME.ipynb (executed) and report.html into `outDir`, each atomically. */
export async function writeReport(
  result: Pick<RunResult, 'notebook' | 'source' | 'stamp'>,
  notebookPath: string,
  outDir: string,
): Promise<WrittenReport> {
  await fsp.mkdir(outDir, { recursive: true });
  const name = path.basename(notebookPath);
  const ipynb = path.join(outDir, name);
  const html = path.join(outDir, 'report.html');
  if (path.resolve(ipynb) === path.resolve(notebookPath))
    throw new Error(`--out ${outDir} would overwrite the source notebook ${notebookPath}; choose another directory`);
  await writeFileAtomic(ipynb, serializeNotebook(result.notebook));
  const rendered = await renderReport(result.notebook, reportData(result.notebook, result.source, name, result.stamp));
  await writeFileAtomic(html, rendered.html);
  return { ipynb, html, htmlBytes: Buffer.byteLength(rendered.html), rendered };
}

/** Start/end from the per-cell timestamps nbclient and papermill record (metadata.execution). */
function timesFromCells(nb: Notebook): Pick<Stamp, 'time'> | Record<string, never> {
  const times: number[] = [];
  for (const cell of nb.cells) {
    const ex = cell.metadata?.execution as Record<string, string> | undefined;
    for (const v of Object.values(ex ?? {})) {
      const t = Date.parse(v);
      if (Number.isFinite(t)) times.push(t);
    }
  }
  if (!times.length) return {};
  const start = Math.min(...times),
    end = Math.max(...times);
  return {
    time: {
      start: new Date(start).toISOString(),
      end: new Date(end).toISOString(),
      durationSeconds: (end - start) / 1000,
    },
  };
}

/**
 * An already executed notebook → the same HTML, without running it. Uses the stamp a vqalab run
 * stored in the notebook's metadata; for notebooks run elsewhere the stamp has the recorded facts
 * from outputs and this machine's git/software marked as "at export".
 */
export async function exportNotebook(
  notebookPath: string,
): Promise<{ html: string; rendered: RenderedReport; redactions: number }> {
  const file = path.resolve(notebookPath);
  const nb = readNotebook(file);
  const redactor = new Redactor();
  const executed = redactor.notebook(nb);
  const hasStamp = !!executed.metadata?.vqalab?.report?.stamp;
  const fallback: Partial<Stamp> | undefined = hasStamp
    ? undefined
    : {
        schema: 'vqalab.stamp.v1',
        notebook: { path: path.basename(file), sha256: sha256(readFileSync(file)) },
        parameters: (executed.metadata?.papermill?.parameters as Params | undefined) ?? {},
        kernel: {
          name: executed.metadata?.kernelspec?.name ?? '',
          language: executed.metadata?.language_info?.name,
          languageVersion: executed.metadata?.language_info?.version,
        },
        git: gitFacts(path.dirname(file)),
        software: softwareFacts(),
        host: hostFacts(),
        ...timesFromCells(executed),
      };
  const source = sourceNotebook(executed);
  const rendered = await renderReport(executed, reportData(executed, source, path.basename(file), fallback));
  return { html: rendered.html, rendered, redactions: redactor.count };
}
