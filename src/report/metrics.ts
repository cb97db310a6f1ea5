/**
 * The metrics a report records and `vqalab report verify` compares: every point of every run in
 * the notebook's metrics displays (`application/vnd.vqalab.metrics.v1+json`, keyed
 * `run/metric@step`; a display updated in place counts in its final state) plus the metrics given
 * to `recordFacts` (keyed `facts/name`). CPU runs must match exactly; GPU runs within tolerances.
 */
import type { StampFacts, Tolerance } from './facts.js';
import type { Notebook } from './nbformat.js';
import { mergedFacts } from './stamp.js';

export const METRICS_MIME = 'application/vnd.vqalab.metrics.v1+json';

/** key → value; null stands for a non-finite value (JSON cannot hold NaN). */
export type MetricTable = Record<string, number | null>;

export const GPU_DEFAULT_TOLERANCE: Tolerance = { rtol: 1e-3, atol: 1e-5 };

export function extractMetrics(nb: Notebook): MetricTable {
  const table: MetricTable = {};
  for (const cell of nb.cells) {
    if (cell.cell_type !== 'code') continue;
    for (const o of cell.outputs) {
      if (o.output_type !== 'display_data' && o.output_type !== 'execute_result') continue;
      const payload = o.data[METRICS_MIME] as
        | { runs?: { name?: string; points?: Record<string, unknown>[] }[] }
        | undefined;
      if (!payload || !Array.isArray(payload.runs)) continue;
      for (const run of payload.runs) {
        for (const p of run.points ?? []) {
          for (const [k, v] of Object.entries(p)) {
            if (k === 'step') continue;
            if (typeof v === 'number' || v === null)
              table[`${run.name ?? 'run'}/${k}@${p.step}`] = typeof v === 'number' && Number.isFinite(v) ? v : null;
          }
        }
      }
    }
  }
  const facts: StampFacts = mergedFacts(nb);
  for (const [k, v] of Object.entries(facts.metrics ?? {})) table[`facts/${k}`] = Number.isFinite(v) ? v : null;
  return table;
}

export interface MetricDiff {
  key: string;
  recorded: number | null | undefined;
  rerun: number | null | undefined;
  /** Why it failed: 'missing in re-run', 'not in the report', 'differs', 'outside tolerance'. */
  reason: string;
  tolerance?: Tolerance;
}

export interface CompareOptions {
  /** Compare within tolerances (GPU) instead of exactly (CPU). */
  gpu: boolean;
  tolerances?: Record<string, Tolerance>;
  defaultTolerance?: Tolerance;
}

/** The metric name inside a key (`run/loss@3` → `loss`, `facts/accuracy` → `accuracy`). */
function metricName(key: string): string {
  const slash = key.lastIndexOf('/');
  const at = key.lastIndexOf('@');
  return key.slice(slash + 1, at > slash ? at : undefined);
}

export function compareMetrics(
  recorded: MetricTable,
  rerun: MetricTable,
  opts: CompareOptions,
): { diffs: MetricDiff[]; compared: number } {
  const diffs: MetricDiff[] = [];
  const keys = new Set([...Object.keys(recorded), ...Object.keys(rerun)]);
  let compared = 0;
  for (const key of [...keys].sort()) {
    const a = recorded[key],
      b = rerun[key];
    if (!(key in rerun)) {
      diffs.push({ key, recorded: a, rerun: undefined, reason: 'missing in re-run' });
      continue;
    }
    if (!(key in recorded)) {
      diffs.push({ key, recorded: undefined, rerun: b, reason: 'not in the report' });
      continue;
    }
    compared++;
    if (a === b) continue;
    if (a === null || b === null || a === undefined || b === undefined || !opts.gpu) {
      diffs.push({ key, recorded: a, rerun: b, reason: 'differs' });
      continue;
    }
    const tol =
      opts.tolerances?.[metricName(key)] ??
      opts.tolerances?.[key] ??
      opts.tolerances?.['*'] ??
      opts.defaultTolerance ??
      GPU_DEFAULT_TOLERANCE;
    if (Math.abs(a - b) > tol.atol + tol.rtol * Math.abs(a))
      diffs.push({ key, recorded: a, rerun: b, reason: 'outside tolerance', tolerance: tol });
  }
  return { diffs, compared };
}

/** A readable table of the differences. */
export function formatDiffs(diffs: MetricDiff[], limit = 50): string {
  const fmt = (v: number | null | undefined) => (v === undefined ? '—' : v === null ? 'NaN' : String(v));
  const rows = diffs.slice(0, limit).map((d) => {
    const delta =
      typeof d.recorded === 'number' && typeof d.rerun === 'number' ? `Δ ${(d.rerun - d.recorded).toPrecision(3)}` : '';
    const tol = d.tolerance ? ` (rtol ${d.tolerance.rtol}, atol ${d.tolerance.atol})` : '';
    return [d.key, fmt(d.recorded), fmt(d.rerun), `${d.reason}${tol}`, delta];
  });
  const head = ['metric', 'report', 're-run', 'why', ''];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const more = diffs.length > limit ? `\n… and ${diffs.length - limit} more` : '';
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + more;
}
