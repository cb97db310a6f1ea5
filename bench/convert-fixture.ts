/**
 * Writes VQAv2-shaped JSON files (questions + annotations, the official layout and key order) of
 * any size, for the conversion benchmark and tests. Content is seeded and realistic in size:
 * ~100 bytes per question and ~750 per annotation (10 answers each), so the full train size
 * (443,757 questions) gives ~45 MB + ~330 MB like the real files. Written in pieces, never held whole.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { mulberry32 } from '../src/util/rng.js';

export interface FakeVqaOptions {
  questions: number;
  /** "train2014", "val2014", "test2015" or "test-dev2015". */
  subtype?: string;
  seed?: number;
  /** Distinct images; default questions / 5.4 (VQAv2's ratio). */
  images?: number;
}

const SUBJECTS = [
  'man',
  'woman',
  'dog',
  'cat',
  'bus',
  'train',
  'pizza',
  'table',
  'sign',
  'kite',
  'horse',
  'umbrella',
  'café',
];
const TEMPLATES: [string, string, string[]][] = [
  ['what color is the', 'other', ['white', 'black', 'red', 'blue', 'green', 'yellow', 'brown']],
  ['is the', 'yes/no', ['yes', 'no']],
  ['how many', 'number', ['1', '2', '3', '4', 'two', '0']],
  ['what is the', 'other', ['frisbee', 'skateboard', 'phone', 'food', 'nothing', 'sitting']],
  ['are there', 'yes/no', ['yes', 'no']],
  ['what is the man holding', 'other', ['bat', 'umbrella', 'phone', 'kite', 'racket']],
];
const CONFIDENCE = ['yes', 'yes', 'yes', 'maybe', 'no'];

export function writeFakeVqa(
  questionsPath: string,
  annotationsPath: string | undefined,
  opts: FakeVqaOptions,
): { images: number[] } {
  const n = opts.questions;
  const subtype = opts.subtype ?? 'train2014';
  const rand = mulberry32(opts.seed ?? 1);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
  const nImages = opts.images ?? Math.max(1, Math.round(n / 5.4));
  const imageIds: number[] = [];
  let id = 9;
  for (let i = 0; i < nImages; i++) {
    id += 1 + Math.floor(rand() * 10);
    imageIds.push(id);
  }

  const qf = openSync(questionsPath, 'w');
  const af = annotationsPath ? openSync(annotationsPath, 'w') : -1;
  try {
    writeSync(
      qf,
      `{"info": {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org", "version": "2.0", "year": 2017, "contributor": "VQA Team", "date_created": "2017-04-26 17:07:13"}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"}, "data_subtype": "${subtype}", "questions": [`,
    );
    if (af >= 0)
      writeSync(
        af,
        `{"info": {"description": "This is v2.0 of the VQA dataset.", "version": "2.0", "year": 2017}, "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"}, "data_subtype": "${subtype}", "annotations": [`,
      );
    let qbuf: string[] = [],
      abuf: string[] = [];
    const flush = () => {
      if (qbuf.length) writeSync(qf, qbuf.join(''));
      if (abuf.length && af >= 0) writeSync(af, abuf.join(''));
      qbuf = [];
      abuf = [];
    };
    let q = 0;
    const perImage = new Uint16Array(nImages); // VQAv2 ids: image_id * 1000 + k-th question of the image
    for (let img = 0; q < n; img = (img + 1) % nImages) {
      const per = Math.min(n - q, 3 + Math.floor(rand() * 5));
      for (let k = 0; k < per; k++, q++) {
        const imageId = imageIds[img]!;
        const qid = imageId * 1000 + perImage[img]!++;
        const [qtype, atype, pool] = pick(TEMPLATES);
        const subject = pick(SUBJECTS);
        const text =
          rand() < 0.02
            ? `${qtype[0]!.toUpperCase()}${qtype.slice(1)} "${subject}" in the picture?`
            : `${qtype[0]!.toUpperCase()}${qtype.slice(1)} ${subject}?`;
        qbuf.push(
          `${q ? ', ' : ''}{"image_id": ${imageId}, "question": ${JSON.stringify(text)}, "question_id": ${qid}}`,
        );
        if (af >= 0) {
          const main = pick(pool);
          const answers: string[] = [];
          for (let a = 0; a < 10; a++) {
            const ans = rand() < 0.75 ? main : pick(pool);
            answers.push(
              `{"answer": ${JSON.stringify(ans)}, "answer_confidence": "${pick(CONFIDENCE)}", "answer_id": ${a + 1}}`,
            );
          }
          abuf.push(
            `${q ? ', ' : ''}{"question_type": "${qtype}", "multiple_choice_answer": ${JSON.stringify(main)}, "answers": [${answers.join(', ')}], "image_id": ${imageId}, "answer_type": "${atype}", "question_id": ${qid}}`,
          );
        }
        if (qbuf.length >= 2000) flush();
      }
    }
    flush();
    writeSync(qf, ']}');
    if (af >= 0) writeSync(af, ']}');
  } finally {
    closeSync(qf);
    if (af >= 0) closeSync(af);
  }
  return { images: imageIds };
}

/** COCO file name of an image: COCO_val2014_000000262148.jpg. */
export function cocoFileName(subtype: string, imageId: number): string {
  const folder = subtype === 'test-dev2015' ? 'test2015' : subtype;
  return `COCO_${folder}_${String(imageId).padStart(12, '0')}.jpg`;
}
