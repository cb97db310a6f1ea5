/**
 * `vqalab data verify`: checks a VQA Parquet file row by row: the schema (on load), duplicate
 * ids, empty questions, and every image (missing, or not decodable by sharp as the vision
 * processor decodes it), with a summary by answer type. Optionally writes a clean copy without
 * the bad rows (a duplicate id keeps its first row).
 */
import { statSync } from 'node:fs';
import os from 'node:os';
import sharp from 'sharp';
import { Progress } from '../util/progress.js';
import { VqaDataset } from './dataset.js';

export interface VerifyOptions {
  /** Decode every image (default true); false only checks that the files exist. */
  decodeImages?: boolean;
  /** Write the rows without problems to this Parquet file. */
  dropBad?: string;
  /** Images decoded at once (default: CPU count, at least 2). */
  concurrency?: number;
  quiet?: boolean;
  progressStream?: NodeJS.WriteStream;
  signal?: AbortSignal;
}

export type VerifyProblem = 'duplicate id' | 'empty question' | 'empty id' | 'missing image' | 'undecodable image';

export interface VerifyIssue {
  row: number;
  id: string;
  field: string;
  problem: VerifyProblem;
  detail: string;
}

export interface VerifyReport {
  file: string;
  rows: number;
  badRows: number;
  /** Every issue found, in row order. */
  issues: VerifyIssue[];
  counts: Record<VerifyProblem, number>;
  /** Rows and bad rows per answer type ("(none)" when the column is absent). */
  byAnswerType: Map<string, { rows: number; bad: number }>;
  images: { checked: number; missing: number; undecodable: number };
  dropped?: { output: string; rows: number };
  seconds: number;
}

async function checkImage(file: string, decode: boolean): Promise<{ problem: 'missing image' | 'undecodable image'; detail: string } | undefined> {
  try {
    if (!statSync(file).isFile()) return { problem: 'missing image', detail: `${file} is not a file` };
  } catch {
    return { problem: 'missing image', detail: `${file} does not exist` };
  }
  if (!decode) return undefined;
  try {
    // A full decode (as the processor's, same failOn), shrunk on load so it costs little memory.
    await sharp(file, { failOn: 'error' }).resize({ width: 32, height: 32, fit: 'inside' }).raw().toBuffer();
    return undefined;
  } catch (err) {
    const msg = [...new Set((err as Error).message.split('\n').map((l) => l.trim()).filter(Boolean))].join('; ');
    return { problem: 'undecodable image', detail: `${file}: ${msg}` };
  }
}

export async function verifyDataset(file: string, o: VerifyOptions = {}): Promise<VerifyReport> {
  const t0 = performance.now();
  const ds = await VqaDataset.fromParquet(file); // schema errors throw here, naming the column
  const issues: VerifyIssue[] = [];
  const bad = new Uint8Array(ds.size);
  const firstRow = new Map<string, number>();
  const add = (row: number, id: string, field: string, problem: VerifyProblem, detail: string) => {
    issues.push({ row, id, field, problem, detail });
    bad[row] = 1;
  };
  // Rows by image path: each image is checked once however many questions use it.
  const users = new Map<string, number[]>();
  for (let i = 0; i < ds.size; i++) {
    const s = ds.get(i);
    if (s.id.trim() === '') add(i, s.id, 'id', 'empty id', 'id is empty');
    const first = firstRow.get(s.id);
    if (first !== undefined) add(i, s.id, 'id', 'duplicate id', `id ${JSON.stringify(s.id)} already used by row ${first}`);
    else firstRow.set(s.id, i);
    if (s.question.trim() === '') add(i, s.id, 'question', 'empty question', 'question is empty');
    const paths = s.imagePaths && s.imagePaths.length > 0 ? s.imagePaths : [s.imagePath];
    for (const p of paths) {
      let u = users.get(p);
      if (!u) users.set(p, (u = []));
      u.push(i);
    }
  }
  const decode = o.decodeImages ?? true;
  const progress = new Progress({ label: decode ? 'decoding images' : 'checking images', unit: 'images', total: users.size, quiet: o.quiet, stream: o.progressStream });
  const entries = [...users];
  const results = new Array<Awaited<ReturnType<typeof checkImage>>>(entries.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, o.concurrency ?? Math.max(2, os.cpus().length)) }, async () => {
    while (next < entries.length) {
      if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
      const k = next++;
      results[k] = await checkImage(entries[k]![0], decode);
      progress.tick();
    }
  });
  await Promise.all(workers);
  progress.done();
  let missing = 0, undecodable = 0;
  const imageIssues: VerifyIssue[] = [];
  entries.forEach(([p, rows], k) => {
    const r = results[k];
    if (!r) return;
    if (r.problem === 'missing image') missing++; else undecodable++;
    for (const row of rows) {
      const s = ds.get(row);
      const field = s.imagePaths && s.imagePaths.length > 1 ? `image_paths[${s.imagePaths.indexOf(p)}]` : 'image_path';
      imageIssues.push({ row, id: s.id, field, problem: r.problem, detail: r.detail });
      bad[row] = 1;
    }
  });
  issues.push(...imageIssues);
  issues.sort((a, b) => a.row - b.row);
  const counts: Record<VerifyProblem, number> = { 'duplicate id': 0, 'empty question': 0, 'empty id': 0, 'missing image': 0, 'undecodable image': 0 };
  for (const i of issues) counts[i.problem]++;
  const byAnswerType = new Map<string, { rows: number; bad: number }>();
  for (let i = 0; i < ds.size; i++) {
    const t = ds.get(i).answerType ?? '(none)';
    const e = byAnswerType.get(t) ?? { rows: 0, bad: 0 };
    e.rows++;
    if (bad[i]) e.bad++;
    byAnswerType.set(t, e);
  }
  let badRows = 0;
  for (const b of bad) badRows += b;
  const report: VerifyReport = {
    file, rows: ds.size, badRows, issues, counts,
    byAnswerType: new Map([...byAnswerType].sort((a, b) => b[1].rows - a[1].rows)),
    images: { checked: users.size, missing, undecodable }, seconds: 0,
  };
  if (o.dropBad) {
    const clean = ds.filter((_, i) => !bad[i]);
    await clean.writeParquet(o.dropBad);
    report.dropped = { output: o.dropBad, rows: clean.size };
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

/** The report as text: issues (up to `maxIssues`), the summary by answer type, the verdict. */
export function formatVerifyReport(r: VerifyReport, maxIssues = 20): string {
  const lines: string[] = [];
  for (const i of r.issues.slice(0, maxIssues)) lines.push(`${r.file}: row ${i.row} (id ${i.id}): ${i.field}: ${i.problem}: ${i.detail}`);
  if (r.issues.length > maxIssues) lines.push(`... and ${r.issues.length - maxIssues} more issues`);
  if (lines.length) lines.push('');
  lines.push(`${r.file}: ${r.rows} rows, ${r.images.checked} images checked in ${r.seconds.toFixed(1)} s`);
  const w = Math.max(11, ...[...r.byAnswerType.keys()].map((k) => k.length));
  lines.push(`  ${'answer type'.padEnd(w)}  ${'rows'.padStart(8)}  ${'bad'.padStart(6)}`);
  for (const [k, v] of r.byAnswerType) lines.push(`  ${k.padEnd(w)}  ${String(v.rows).padStart(8)}  ${String(v.bad).padStart(6)}`);
  const c = Object.entries(r.counts).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}${n > 1 ? 's' : ''}`);
  lines.push(r.badRows === 0 ? 'verify: ok, no problems found' : `verify: ${r.badRows} bad row${r.badRows > 1 ? 's' : ''} (${c.join(', ')})`);
  if (r.dropped) lines.push(`verify: wrote ${r.dropped.rows} good rows to ${r.dropped.output}`);
  return lines.join('\n') + '\n';
}
