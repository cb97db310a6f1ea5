/** Finding parity cases under a folder, running the registered checkers, and reporting. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { checkers as registered } from './checkers.js';
import { withinTolerance, type ParityChecker, type ParityOptions, type ParityResult } from './types.js';

const SKIP = new Set(['node_modules', 'images', 'policy', 'reference']);

/** Every folder at or under `root` that holds a meta.json, sorted. */
export function findCases(root: string): string[] {
  if (!existsSync(root)) throw new Error(`${root}: no such folder`);
  if (!statSync(root).isDirectory()) throw new Error(`${root}: not a folder (give the folder that holds the cases)`);
  const out: string[] = [];
  const walk = (dir: string) => {
    if (existsSync(path.join(dir, 'meta.json'))) out.push(dir);
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory() && !e.name.startsWith('.') && !SKIP.has(e.name)) walk(path.join(dir, e.name));
    }
  };
  walk(root);
  return out.sort();
}

function readMeta(caseDir: string): Record<string, unknown> {
  const p = path.join(caseDir, 'meta.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(p, 'utf8'));
  } catch (err) {
    throw new Error(`${p}: not valid JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${p}: expected a JSON object`);
  return raw as Record<string, unknown>;
}

/**
 * Run every applicable checker on every case under `root`. A case no checker applies to fails
 * (a fixture nobody checks is a mistake), as does a checker that throws.
 */
export async function runParity(
  root: string,
  options: ParityOptions,
  { checkers = registered, onResult }: { checkers?: ParityChecker[]; onResult?: (r: ParityResult) => void } = {},
): Promise<ParityResult[]> {
  const cases = findCases(root);
  if (cases.length === 0) throw new Error(`${root}: no parity cases (folders with a meta.json) found`);
  const results: ParityResult[] = [];
  const push = (r: ParityResult) => {
    results.push(r);
    onResult?.(r);
  };
  for (const dir of cases) {
    const caseName = path.relative(root, dir) || path.basename(dir);
    let meta: Record<string, unknown>;
    try {
      meta = readMeta(dir);
    } catch (err) {
      push({ checker: '-', caseName, caseDir: dir, measurements: [], error: (err as Error).message, ok: false });
      continue;
    }
    const applicable = checkers.filter((c) => c.applies(dir, meta));
    if (applicable.length === 0) {
      push({
        checker: '-',
        caseName,
        caseDir: dir,
        measurements: [],
        ok: false,
        error: `no checker applies to this case (registered: ${checkers.map((c) => c.name).join(', ')}); see docs/data.md for the layouts`,
      });
      continue;
    }
    for (const c of applicable) {
      try {
        const measurements = await c.check(dir, meta, options);
        push({ checker: c.name, caseName, caseDir: dir, measurements, ok: measurements.every(withinTolerance) });
      } catch (err) {
        push({ checker: c.name, caseName, caseDir: dir, measurements: [], error: (err as Error).message, ok: false });
      }
    }
  }
  return results;
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  return Math.abs(v) >= 0.01 && Math.abs(v) < 1000 ? v.toPrecision(4) : v.toExponential(2);
}

/** A plain-text report: one line per case and checker, then the worst measurements overall. */
export function formatParityReport(results: ParityResult[], top = 10): string {
  const lines: string[] = [];
  for (const r of results) {
    const bad = r.measurements.filter((m) => !withinTolerance(m)).length;
    const status = r.ok ? 'ok  ' : 'FAIL';
    const detail = r.error
      ? `error: ${r.error}`
      : `${r.measurements.length} measurements${bad ? `, ${bad} beyond tolerance` : ''}`;
    lines.push(`${status} ${r.checker.padEnd(8)} ${r.caseName}: ${detail}`);
  }
  const all = results.flatMap((r) =>
    r.measurements.map((m) => ({ r, m, ratio: m.tolerance > 0 ? m.value / m.tolerance : m.value > 0 ? Infinity : 0 })),
  );
  all.sort((a, b) => (Number.isNaN(b.ratio) ? Infinity : b.ratio) - (Number.isNaN(a.ratio) ? Infinity : a.ratio));
  if (all.length > 0) {
    lines.push('', `worst ${Math.min(top, all.length)} of ${all.length} measurements (value / tolerance):`);
    for (const { r, m } of all.slice(0, top)) {
      lines.push(
        `  ${withinTolerance(m) ? 'ok  ' : 'FAIL'} ${r.caseName} ${m.name}: ${fmt(m.value)} / ${fmt(m.tolerance)}${m.note ? `  (${m.note})` : ''}`,
      );
    }
  }
  const failed = results.filter((r) => !r.ok).length;
  lines.push(
    '',
    failed
      ? `check-parity: ${failed} of ${results.length} checks FAILED`
      : `check-parity: all ${results.length} checks passed`,
  );
  return lines.join('\n') + '\n';
}
