/**
 * `vqalab report verify report.html`: re-run the notebook embedded in a report with its recorded
 * parameters and kernel, and compare the metrics: exactly when the run was on CPU, within
 * tolerances (recorded by the run, or rtol 1e-3 / atol 1e-5) when it recorded a GPU device.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Tolerance } from './facts.js';
import { readReportData, type ReportData } from './html.js';
import { compareMetrics, extractMetrics, GPU_DEFAULT_TOLERANCE, type MetricDiff } from './metrics.js';
import { serializeNotebook } from './nbformat.js';
import type { ParamValue, Params } from './params.js';
import { REDACTED } from './redact.js';
import { runNotebook, writeReport, type RunOptions, type RunResult } from './runner.js';
import { ranOnGpu, type Stamp } from './stamp.js';

export interface VerifyOptions extends Omit<RunOptions, 'notebook' | 'params'> {
  /** Values for parameters the report redacted (secrets are never stored). */
  params?: Params;
  /** Override the tolerance on GPU runs. */
  tolerance?: Partial<Tolerance>;
  /** Keep the re-run's notebook and report here. */
  outDir?: string;
}

export interface VerifyResult {
  ok: boolean;
  gpu: boolean;
  compared: number;
  diffs: MetricDiff[];
  rerun: RunResult;
  data: ReportData;
  /** Why verification could not even compare (the re-run failed, no metrics). */
  problem?: string;
}

function isRedacted(v: ParamValue): boolean {
  return typeof v === 'string' && v.includes(REDACTED.slice(0, -1));
}

/** Where the original run's cwd was, if it still exists here; else the report's directory. */
function runDir(data: ReportData, reportPath: string): string {
  const dir = data.stamp.notebook?.dir;
  return dir && existsSync(dir) ? dir : path.dirname(path.resolve(reportPath));
}

export async function verifyReport(reportPath: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const data = readReportData(readFileSync(reportPath, 'utf8'), reportPath);
  const params: Params = { ...data.source.parameters };
  for (const [k, v] of Object.entries(params)) {
    if (!isRedacted(v)) continue;
    if (opts.params && k in opts.params) continue;
    throw new Error(
      `${reportPath}: parameter "${k}" was redacted from the report (a secret); pass it again with --param ${k}=…`,
    );
  }
  Object.assign(params, opts.params ?? {});
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vqalab-verify-'));
  try {
    // Run from a copy beside nothing else: the notebook's own relative paths resolve against
    // cwd (default: the report's directory), as they did when the report was made next to them.
    const nbPath = path.join(dir, data.source.notebookName || 'notebook.ipynb');
    await writeFile(nbPath, serializeNotebook(data.source.notebook));
    const rerun = await runNotebook({
      ...opts,
      notebook: nbPath,
      params,
      kernel: opts.kernel ?? (data.source.kernel || undefined),
      cwd: opts.cwd ?? runDir(data, reportPath),
    });
    if (opts.outDir) await writeReport(rerun, nbPath, opts.outDir);
    const gpu = ranOnGpu(data.stamp as Stamp) || ranOnGpu(rerun.stamp);
    const tolerances = { ...(data.stamp.facts?.tolerances ?? {}) };
    const defaultTolerance = { ...GPU_DEFAULT_TOLERANCE, ...(opts.tolerance ?? {}) };
    const { diffs, compared } = compareMetrics(data.metrics, extractMetrics(rerun.notebook), {
      gpu,
      tolerances,
      defaultTolerance,
    });
    let problem: string | undefined;
    if (rerun.status !== 'ok')
      problem = `the re-run stopped at cell ${rerun.failedCell}: ${rerun.stamp.run.error ?? rerun.status}`;
    else if (Object.keys(data.metrics).length === 0)
      problem = 'the report recorded no metrics, so there is nothing to compare';
    return { ok: !problem && diffs.length === 0, gpu, compared, diffs, rerun, data, problem };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
