/**
 * `vqalab data verify`: checks a VQA Parquet file row by row: the schema (on load), duplicate
 * ids, empty questions, and every image (missing, larger than the pixel budget by its header —
 * checked before any decode —, or not decodable by sharp as the vision processor decodes it),
 * with a summary by answer type. Optionally writes a clean copy without the bad rows (a duplicate
 * id keeps its first row).
 *
 * With a model (`--model DIR`), each row's prompt is built as a training run builds it (the
 * model's chat template, the image tokens its processor plans from the image headers) and checked
 * against the model's context: a question far too long is refused by its characters before it is
 * tokenised.
 */
import { statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { readConfig } from '../engine/config.js';
import { resolveModelFolder } from '../engine/folder.js';
import type { ImageInput } from '../engine/types.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { Progress } from '../util/progress.js';
import { processorOptionsFrom } from '../vision/processor-config.js';
import { Qwen2VLImageProcessor } from '../vision/qwen2vl.js';
import { VqaDataset } from './dataset.js';

/** Most pixels (from the header) of one image a run will decode; the same default as `vqalab serve --max-image-pixels`. */
export const DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096;

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
  /** Most pixels per image, read from its header before decoding (default 4096·4096). */
  maxImagePixels?: number;
  /** A model folder: check each prompt's length as training builds it, against its context. */
  model?: string;
  /** Context length to check against (default: the model's max_position_embeddings). */
  maxSequenceLength?: number;
  /** Completion tokens a run asks for after the prompt (default 1). */
  maxNewTokens?: number;
}

export type VerifyProblem =
  | 'duplicate id'
  | 'empty question'
  | 'empty id'
  | 'missing image'
  | 'undecodable image'
  | 'image too large'
  | 'prompt too long';

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

interface ImageCheck {
  problem?: 'missing image' | 'undecodable image' | 'image too large';
  detail?: string;
  width?: number;
  height?: number;
}

async function checkImage(file: string, decode: boolean, maxPixels: number): Promise<ImageCheck> {
  try {
    if (!statSync(file).isFile()) return { problem: 'missing image', detail: `${file} is not a file` };
  } catch {
    return { problem: 'missing image', detail: `${file} does not exist` };
  }
  // The header first: a decompression bomb is refused before any pixel is decoded.
  let width = 0,
    height = 0;
  try {
    const m = await sharp(file, { limitInputPixels: false }).metadata();
    width = m.autoOrient?.width ?? m.width ?? 0;
    height = m.autoOrient?.height ?? m.height ?? 0;
  } catch (err) {
    if (decode) return { problem: 'undecodable image', detail: `${file}: ${(err as Error).message.split('\n')[0]}` };
    return {};
  }
  if (width * height > maxPixels) {
    return {
      problem: 'image too large',
      detail: `${file}: ${width}x${height} = ${(width * height).toLocaleString('en-US')} pixels, more than the limit of ${maxPixels.toLocaleString('en-US')} (--max-image-pixels)`,
      width,
      height,
    };
  }
  if (!decode) return { width, height };
  try {
    // A full decode (as the processor's, same failOn), shrunk on load so it costs little memory.
    await sharp(file, { failOn: 'error' }).resize({ width: 32, height: 32, fit: 'inside' }).raw().toBuffer();
    return { width, height };
  } catch (err) {
    const msg = [
      ...new Set(
        (err as Error).message
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean),
      ),
    ].join('; ');
    return { problem: 'undecodable image', detail: `${file}: ${msg}` };
  }
}

/** What a training run's prompt for a row needs: the model's tokenizer, processor plan and context. */
interface PromptCheck {
  tokenizer: VlmTokenizer;
  processor: Qwen2VLImageProcessor;
  mergeSize: number;
  context: number;
  maxNewTokens: number;
  maxChars: number;
  source: string;
}

function promptCheck(dir: string, o: VerifyOptions): PromptCheck {
  const r = resolveModelFolder(dir);
  const config = readConfig(path.join(r.modelDir, 'config.json'));
  const tokenizer = VlmTokenizer.load(r.tokenizerDir);
  const context = o.maxSequenceLength ?? config.maxPositionEmbeddings;
  let longest = 1;
  for (let id = 0; id < tokenizer.vocabSize; id++) longest = Math.max(longest, tokenizer.idToToken(id)?.length ?? 0);
  return {
    tokenizer,
    processor: new Qwen2VLImageProcessor(processorOptionsFrom(r.tokenizerDir)),
    mergeSize: config.vision.spatialMergeSize,
    context,
    maxNewTokens: o.maxNewTokens ?? 1,
    maxChars: context * longest,
    source: dir,
  };
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
    if (first !== undefined)
      add(i, s.id, 'id', 'duplicate id', `id ${JSON.stringify(s.id)} already used by row ${first}`);
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
  const maxPixels = o.maxImagePixels ?? DEFAULT_MAX_IMAGE_PIXELS;
  const pc = o.model ? promptCheck(o.model, o) : undefined;
  const progress = new Progress({
    label: decode ? 'decoding images' : 'checking images',
    unit: 'images',
    total: users.size,
    quiet: o.quiet,
    stream: o.progressStream,
  });
  const entries = [...users];
  const results = new Array<Awaited<ReturnType<typeof checkImage>>>(entries.length);
  let next = 0;
  const workers = Array.from({ length: Math.max(1, o.concurrency ?? Math.max(2, os.cpus().length)) }, async () => {
    while (next < entries.length) {
      if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
      const k = next++;
      results[k] = await checkImage(entries[k]![0], decode, maxPixels);
      progress.tick();
    }
  });
  await Promise.all(workers);
  progress.done();
  let missing = 0,
    undecodable = 0;
  const imageIssues: VerifyIssue[] = [];
  const sizeOf = new Map<string, ImageCheck>();
  entries.forEach(([p, rows], k) => {
    const r = results[k]!;
    sizeOf.set(p, r);
    if (!r.problem) return;
    if (r.problem === 'missing image') missing++;
    else if (r.problem === 'undecodable image') undecodable++;
    for (const row of rows) {
      const s = ds.get(row);
      const field = s.imagePaths && s.imagePaths.length > 1 ? `image_paths[${s.imagePaths.indexOf(p)}]` : 'image_path';
      imageIssues.push({ row, id: s.id, field, problem: r.problem, detail: r.detail! });
      bad[row] = 1;
    }
  });
  issues.push(...imageIssues);
  if (pc) {
    // The prompt a training run builds for each row (its images planned from their headers).
    for (let i = 0; i < ds.size; i++) {
      if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
      const s = ds.get(i);
      if (s.question.length > pc.maxChars) {
        add(
          i,
          s.id,
          'question',
          'prompt too long',
          `the question has ${s.question.length.toLocaleString('en-US')} characters; no prompt that long fits ${pc.source}'s context of ${pc.context} tokens`,
        );
        continue;
      }
      const paths = s.imagePaths && s.imagePaths.length > 0 ? s.imagePaths : [s.imagePath];
      const planned: ImageInput[] = [];
      for (const p of paths) {
        const r = sizeOf.get(p);
        if (!r || r.problem || !r.width || !r.height) break;
        try {
          planned.push({ pixels: new Float32Array(0), gridThw: pc.processor.plan(r.height, r.width).gridThw });
        } catch (err) {
          add(i, s.id, 'image_path', 'undecodable image', `${p}: ${(err as Error).message}`);
          break;
        }
      }
      if (planned.length !== paths.length) continue; // the image problem is reported already
      const tokens = pc.tokenizer.buildPrompt(VlmTokenizer.vqaMessages(s.question, paths.length), planned, {
        mergeSize: pc.mergeSize,
      }).ids.length;
      if (tokens + pc.maxNewTokens > pc.context) {
        add(
          i,
          s.id,
          'question',
          'prompt too long',
          `the prompt is ${tokens.toLocaleString('en-US')} tokens (images included) + ${pc.maxNewTokens} new > the context of ${pc.context} tokens of ${pc.source}`,
        );
      }
    }
  }
  issues.sort((a, b) => a.row - b.row);
  const counts: Record<VerifyProblem, number> = {
    'duplicate id': 0,
    'empty question': 0,
    'empty id': 0,
    'missing image': 0,
    'undecodable image': 0,
    'image too large': 0,
    'prompt too long': 0,
  };
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
    file,
    rows: ds.size,
    badRows,
    issues,
    counts,
    byAnswerType: new Map([...byAnswerType].sort((a, b) => b[1].rows - a[1].rows)),
    images: { checked: users.size, missing, undecodable },
    seconds: 0,
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
  for (const i of r.issues.slice(0, maxIssues))
    lines.push(`${r.file}: row ${i.row} (id ${i.id}): ${i.field}: ${i.problem}: ${i.detail}`);
  if (r.issues.length > maxIssues) lines.push(`... and ${r.issues.length - maxIssues} more issues`);
  if (lines.length) lines.push('');
  lines.push(`${r.file}: ${r.rows} rows, ${r.images.checked} images checked in ${r.seconds.toFixed(1)} s`);
  const w = Math.max(11, ...[...r.byAnswerType.keys()].map((k) => k.length));
  lines.push(`  ${'answer type'.padEnd(w)}  ${'rows'.padStart(8)}  ${'bad'.padStart(6)}`);
  for (const [k, v] of r.byAnswerType)
    lines.push(`  ${k.padEnd(w)}  ${String(v.rows).padStart(8)}  ${String(v.bad).padStart(6)}`);
  const c = Object.entries(r.counts)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}${n > 1 ? 's' : ''}`);
  lines.push(
    r.badRows === 0
      ? 'verify: ok, no problems found'
      : `verify: ${r.badRows} bad row${r.badRows > 1 ? 's' : ''} (${c.join(', ')})`,
  );
  if (r.dropped) lines.push(`verify: wrote ${r.dropped.rows} good rows to ${r.dropped.output}`);
  return lines.join('\n') + '\n';
}
