/**
 * VQAv2 official JSON (questions + annotations) and a COCO image folder → Parquet of the VQA
 * schema, streaming: questions are indexed (id → text, image), then annotations are read one by
 * one and written out in row groups. Peak memory is the question index plus one row group, not
 * the 330 MB annotation document.
 *
 * Rows follow the annotations' order (the questions' order when there are no annotations:
 * test2015, test-dev2015). `answer` is the most common of the 10 answers after lower-casing and
 * trimming, ties going to the answer seen first (as the seed's data_utils.py). Rows whose image
 * file is missing are skipped and reported (as the seed does), unless `keepMissingImages`.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { Progress } from '../util/progress.js';
import { scanJsonArray } from './json-stream.js';
import { writeParquetAtomic, type ParquetWriteResult } from './parquet.js';
import { VqaTableBuilder } from './schema.js';

export interface ConvertOptions {
  /** v2_OpenEnded_mscoco_<split>_questions.json */
  questions: string;
  /** v2_mscoco_<split>_annotations.json; absent for test2015 / test-dev2015. */
  annotations?: string;
  /** The COCO image folder of the split (train2014, val2014, test2015). */
  imageDir: string;
  /** The Parquet file to write (atomically). */
  output: string;
  /** Stop after this many rows (debugging), as the seed's --limit. */
  limit?: number;
  /** File name prefix; default from the questions' data_subtype: "COCO_<subtype>_" (test-dev → test2015). */
  imagePrefix?: string;
  /** Keep rows whose image file is missing (default false: skip and report them). */
  keepMissingImages?: boolean;
  rowGroupSize?: number;
  signal?: AbortSignal;
  /** Silence progress lines. */
  quiet?: boolean;
  /** Where progress goes (default stderr). */
  progressStream?: NodeJS.WriteStream;
}

export interface ConvertReport extends ParquetWriteResult {
  output: string;
  questions: number;
  annotations: number;
  /** Rows skipped because the image file is missing, with up to 5 examples. */
  missingImages: number;
  missingExamples: string[];
  /** Questions that have no annotation (skipped), with up to 5 example ids. */
  unannotated: number;
  unannotatedExamples: number[];
  subtype: string | undefined;
  seconds: number;
}

/**
 * Most common answer after lower-casing and trimming; among equally common answers, the one that
 * first appears in the list (Python's Counter.most_common order, as the seed uses).
 */
export function mostCommonAnswer(answers: readonly string[]): string {
  const counts = new Map<string, number>(); // insertion order = first appearance
  for (const a of answers) {
    const k = a.toLowerCase().trim();
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  let best = '',
    bestCount = 0;
  for (const [k, c] of counts)
    if (c > bestCount) {
      best = k;
      bestCount = c;
    }
  return best;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

/** The COCO file name prefix for a VQAv2 data_subtype. */
export function cocoPrefix(subtype: string): string {
  return `COCO_${subtype === 'test-dev2015' ? 'test2015' : subtype}_`;
}

export async function convertVqav2(o: ConvertOptions): Promise<ConvertReport> {
  const t0 = performance.now();
  const imageDir = path.resolve(o.imageDir);
  let dirOk = false;
  try {
    dirOk = statSync(imageDir).isDirectory();
  } catch {
    /* reported below */
  }
  if (!dirOk)
    throw new Error(
      `--image-dir ${o.imageDir}: no such folder (expected the COCO image folder of the split, e.g. .../val2014)`,
    );

  // 1. Index the questions: id → (text, image id), in file order.
  const qIds: number[] = [],
    qImage: number[] = [],
    qText: string[] = [];
  const index = new Map<number, number>();
  const qProgress = new Progress({ label: 'questions', unit: 'B', quiet: o.quiet, stream: o.progressStream });
  let lastBytes = 0;
  const qScan = await scanJsonArray(o.questions, {
    arrayKey: 'questions',
    signal: o.signal,
    onProgress: (b) => {
      qProgress.tick(b - lastBytes);
      lastBytes = b;
    },
    onItem: (item, i) => {
      const q = item as Record<string, unknown>;
      const id = q?.question_id;
      const where = `${o.questions}: questions[${i}]${Number.isInteger(id) ? ` (question_id ${id})` : ''}`;
      if (q === null || typeof q !== 'object' || Array.isArray(q))
        throw new Error(`${where}: expected an object {question_id, image_id, question}, got ${describe(q)}`);
      if (!Number.isInteger(id))
        throw new Error(`${where}: field "question_id": expected an integer, got ${describe(id)}`);
      if (!Number.isInteger(q.image_id))
        throw new Error(`${where}: field "image_id": expected an integer, got ${describe(q.image_id)}`);
      if (typeof q.question !== 'string')
        throw new Error(`${where}: field "question": expected a string, got ${describe(q.question)}`);
      if (index.has(id as number))
        throw new Error(`${where}: question_id ${id} appears twice (first at questions[${index.get(id as number)}])`);
      index.set(id as number, qIds.length);
      qIds.push(id as number);
      qImage.push(q.image_id as number);
      qText.push(q.question);
    },
  });
  qProgress.done();
  const subtype = typeof qScan.topLevel.data_subtype === 'string' ? qScan.topLevel.data_subtype : undefined;
  const prefix = o.imagePrefix ?? (subtype ? cocoPrefix(subtype) : cocoPrefix(path.basename(imageDir)));

  // The folder is listed once: a Set lookup per row instead of a stat per row.
  let present: Set<string> | undefined;
  if (!o.keepMissingImages) present = new Set(readdirSync(imageDir));
  const imageName = (imageId: number) => `${prefix}${String(imageId).padStart(12, '0')}.jpg`;
  const dirPrefix = imageDir.endsWith(path.sep) ? imageDir : imageDir + path.sep;

  const builder = new VqaTableBuilder({ vqaColumns: true });
  const groupSize = o.rowGroupSize ?? 65_536;
  const limit = o.limit ?? Infinity;
  let missingImages = 0,
    annotations = 0,
    unannotated = 0;
  const missingExamples: string[] = [];
  const unannotatedExamples: number[] = [];
  const seen = o.annotations ? new Uint8Array(qIds.length) : undefined;
  const rowProgress = new Progress({
    label: 'rows',
    unit: 'rows',
    total: o.annotations ? undefined : Math.min(qIds.length, limit),
    quiet: o.quiet,
    stream: o.progressStream,
  });

  const keepImage = (imageId: number, id: number): string | undefined => {
    const name = imageName(imageId);
    if (present && !present.has(name)) {
      missingImages++;
      if (missingExamples.length < 5) missingExamples.push(`question_id ${id}: ${dirPrefix}${name}`);
      return undefined;
    }
    return dirPrefix + name;
  };

  const result = await writeParquetAtomic(
    o.output,
    async (write) => {
      const flush = async (force = false) => {
        if (builder.length >= groupSize || (force && builder.length > 0)) await write(builder.build());
      };
      let rows = 0;
      if (o.annotations) {
        const stop = new Error('limit reached');
        try {
          await scanJsonArray(o.annotations, {
            arrayKey: 'annotations',
            signal: o.signal,
            onItem: (item, i) => {
              if (rows >= limit) throw stop;
              const a = item as Record<string, unknown>;
              const id = a?.question_id;
              const where = `${o.annotations}: annotations[${i}]${Number.isInteger(id) ? ` (question_id ${id})` : ''}`;
              if (a === null || typeof a !== 'object' || Array.isArray(a))
                throw new Error(`${where}: expected an object {question_id, answers, ...}, got ${describe(a)}`);
              if (!Number.isInteger(id))
                throw new Error(`${where}: field "question_id": expected an integer, got ${describe(id)}`);
              const qi = index.get(id as number);
              if (qi === undefined)
                throw new Error(
                  `${where}: no question with this question_id in ${o.questions} (questions and annotations of different splits?)`,
                );
              if (seen![qi]) throw new Error(`${where}: a second annotation for question_id ${id}`);
              seen![qi] = 1;
              if (!Array.isArray(a.answers) || a.answers.length === 0)
                throw new Error(
                  `${where}: field "answers": expected a non-empty list of {answer, ...}, got ${describe(a.answers)}`,
                );
              const answers: string[] = [];
              a.answers.forEach((x: unknown, k: number) => {
                const t = (x as { answer?: unknown })?.answer;
                if (typeof t !== 'string')
                  throw new Error(`${where}: field "answers[${k}].answer": expected a string, got ${describe(t)}`);
                answers.push(t);
              });
              for (const f of ['multiple_choice_answer', 'answer_type', 'question_type'] as const) {
                if (a[f] !== undefined && typeof a[f] !== 'string')
                  throw new Error(`${where}: field "${f}": expected a string, got ${describe(a[f])}`);
              }
              if (a.image_id !== undefined && a.image_id !== qImage[qi]) {
                throw new Error(
                  `${where}: field "image_id": ${describe(a.image_id)} differs from the question's image_id ${qImage[qi]}`,
                );
              }
              annotations++;
              const p = keepImage(qImage[qi]!, id as number);
              if (p === undefined) return;
              builder.add({
                id: String(id),
                imagePath: p,
                question: qText[qi]!,
                answer: mostCommonAnswer(answers),
                answers,
                multipleChoiceAnswer: a.multiple_choice_answer as string | undefined,
                answerType: a.answer_type as string | undefined,
                questionType: a.question_type as string | undefined,
                imageId: qImage[qi],
              });
              rows++;
              rowProgress.tick();
              if (builder.length >= groupSize) return write(builder.build());
            },
          });
        } catch (err) {
          if (err !== stop) throw err;
        }
        await flush(true);
        if (rows < limit) {
          for (let qi = 0; qi < qIds.length; qi++) {
            if (!seen![qi]) {
              unannotated++;
              if (unannotatedExamples.length < 5) unannotatedExamples.push(qIds[qi]!);
            }
          }
        }
      } else {
        for (let qi = 0; qi < qIds.length && rows < limit; qi++) {
          if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
          const p = keepImage(qImage[qi]!, qIds[qi]!);
          if (p === undefined) continue;
          builder.add({
            id: String(qIds[qi]),
            imagePath: p,
            question: qText[qi]!,
            answer: null,
            answers: [],
            imageId: qImage[qi],
          });
          rows++;
          rowProgress.tick();
          await flush();
        }
        await flush(true);
      }
      if (rows === 0) await write(builder.build()); // an empty file still has the schema
    },
    {
      rowGroupSize: groupSize,
      metadata: { 'vqalab.source': 'vqav2', ...(subtype ? { 'vqalab.vqav2.subtype': subtype } : {}) },
    },
  );
  rowProgress.done();
  return {
    ...result,
    output: o.output,
    questions: qIds.length,
    annotations,
    missingImages,
    missingExamples,
    unannotated,
    unannotatedExamples,
    subtype,
    seconds: (performance.now() - t0) / 1000,
  };
}
