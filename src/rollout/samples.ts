/**
 * Samples for `vqalab eval-policy`: a Parquet dataset through the data layer (VqaDataset), or a
 * JSON / JSON Lines file of rows in the seed's schema
 * (`id, image_path, question, answer`) with VQAv2's optional `answers` (10 annotator answers,
 * strings or {answer} records), `answer_type`, `question_type`, or the runtime's own VqaSample
 * field names. Relative image paths are resolved against the file's folder. Errors name the file,
 * the row and the field.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { VqaDataset } from '../data/dataset.js';
import type { VqaSample } from '../data/types.js';

function field(row: Record<string, unknown>, ...names: string[]): unknown {
  for (const n of names) if (row[n] !== undefined && row[n] !== null) return row[n];
  return undefined;
}

/** One row → a sample; `where` is "FILE: row N" for messages. */
export function sampleFromRow(raw: unknown, where: string, baseDir: string): VqaSample {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new Error(`${where}: expected an object with id, image_path, question, answer`);
  const row = raw as Record<string, unknown>;
  const str = (v: unknown, name: string, required: boolean): string | undefined => {
    if (v === undefined) {
      if (required) throw new Error(`${where}: missing field "${name}"`);
      return undefined;
    }
    if (typeof v === 'number') return String(v);
    if (typeof v !== 'string')
      throw new Error(`${where}: field "${name}" must be a string; got ${Array.isArray(v) ? 'an array' : typeof v}`);
    return v;
  };
  const id = str(field(row, 'id', 'question_id'), 'id', true)!;
  const paths = field(row, 'image_paths', 'imagePaths');
  const first = str(field(row, 'image_path', 'imagePath', 'image'), 'image_path', paths === undefined);
  let imagePaths: string[] | undefined;
  if (paths !== undefined) {
    if (!Array.isArray(paths) || paths.length === 0 || !paths.every((p) => typeof p === 'string'))
      throw new Error(`${where}: field "image_paths" must be a non-empty array of strings`);
    imagePaths = paths.map((p: string) => path.resolve(baseDir, p));
  }
  const question = str(field(row, 'question'), 'question', true)!;
  const rawAnswers = field(row, 'answers');
  let answers: string[] | undefined;
  if (rawAnswers !== undefined) {
    if (!Array.isArray(rawAnswers)) throw new Error(`${where}: field "answers" must be an array`);
    answers = rawAnswers.map((a, i) => {
      const v = typeof a === 'object' && a !== null ? (a as { answer?: unknown }).answer : a;
      if (typeof v !== 'string') throw new Error(`${where}: answers[${i}] must be a string or {answer: string}`);
      return v;
    });
  }
  const answer =
    str(field(row, 'answer', 'multiple_choice_answer'), 'answer', answers === undefined || answers.length === 0) ??
    answers![0]!;
  const sample: VqaSample = {
    id,
    imagePath: imagePaths ? imagePaths[0]! : path.resolve(baseDir, first!),
    question,
    answer,
    answers: answers?.length ? answers : [answer],
  };
  if (imagePaths && imagePaths.length > 1) sample.imagePaths = imagePaths;
  const vp = field(row, 'video_paths', 'videoPaths') ?? field(row, 'video_path', 'videoPath');
  if (vp !== undefined) {
    const list = typeof vp === 'string' ? [vp] : vp;
    if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === 'string'))
      throw new Error(
        `${where}: field "video_path" must be a string (a folder of frames) or "video_paths" a non-empty array of them`,
      );
    sample.videoPaths = list.map((p: string) => path.resolve(baseDir, p));
  }
  const fps = field(row, 'video_fps', 'videoFps');
  if (fps !== undefined) {
    if (typeof fps !== 'number' || !(fps > 0) || !Number.isFinite(fps))
      throw new Error(`${where}: field "video_fps" must be a positive number; got ${JSON.stringify(fps)}`);
    sample.videoFps = fps;
  }
  const at = str(field(row, 'answer_type', 'answerType'), 'answer_type', false);
  if (at !== undefined) sample.answerType = at;
  const qt = str(field(row, 'question_type', 'questionType'), 'question_type', false);
  if (qt !== undefined) sample.questionType = qt;
  return sample;
}

/** Read samples from .parquet (src/data's schema), .json (an array, or {samples: [...]}) or .jsonl (one object per line). */
export async function readSamplesFile(file: string): Promise<VqaSample[]> {
  if (/\.parquet$/i.test(file)) return [...(await VqaDataset.fromParquet(file))];
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const base = path.dirname(path.resolve(file));
  let rows: { raw: unknown; where: string }[];
  const trimmed = text.trimStart();
  if (
    /\.jsonl$/i.test(file) ||
    (!trimmed.startsWith('[') && !trimmed.startsWith('{"samples"') && trimmed.includes('\n{'))
  ) {
    rows = [];
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      try {
        rows.push({ raw: JSON.parse(line), where: `${file}: line ${i + 1}` });
      } catch (err) {
        throw new Error(`${file}: line ${i + 1}: invalid JSON (${(err as Error).message})`);
      }
    });
  } else {
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
    }
    const list = Array.isArray(data) ? data : (data as { samples?: unknown })?.samples;
    if (!Array.isArray(list))
      throw new Error(`${file}: expected a JSON array of samples, an object {"samples": [...]}, or JSON Lines`);
    rows = list.map((raw, i) => ({ raw, where: `${file}: row ${i}` }));
  }
  if (rows.length === 0) throw new Error(`${file}: no samples`);
  const samples = rows.map((r) => sampleFromRow(r.raw, r.where, base));
  const seen = new Set<string>();
  for (const [i, s] of samples.entries()) {
    if (seen.has(s.id)) throw new Error(`${rows[i]!.where}: duplicate id ${JSON.stringify(s.id)}`);
    seen.add(s.id);
  }
  return samples;
}
