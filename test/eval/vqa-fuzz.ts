/**
 * Random and adversarial VQA evaluation inputs (annotations, questions, results), seeded, for
 * checking our evaluator against the official one. Imported by tests and by
 * test/eval/official-crosscheck.test.ts; no side effects on import.
 */
import type { VqaAnnotationsFile, VqaQuestionsFile, VqaResult } from '../../src/eval/vqa-eval.js';
import { PUNCTUATION } from '../../src/eval/vqa-metric.js';
import { mulberry32 } from '../../src/util/rng.js';

/** Seeded test data: the project's mulberry32 (src/util/rng.ts). */
export const rng = mulberry32;

const WORDS = [
  'red',
  'Red',
  'RED',
  'blue',
  'yes',
  'Yes',
  'no',
  'No',
  'two',
  'Two',
  '2',
  'none',
  'None',
  'zero',
  '0',
  'ten',
  '10',
  'eleven',
  'one',
  'a',
  'an',
  'the',
  'The',
  'A',
  'dont',
  "don't",
  'Im',
  'im',
  "let's",
  "somebody'd",
  'somebodyd',
  'yall',
  "y'all",
  'twas',
  'oclock',
  'cat',
  'cats',
  'dog',
  'frisbee',
  'tennis',
  'man',
  'woman',
  'left',
  'right',
  '1,000',
  '1000',
  '2.5',
  '2,5',
  '3.',
  '.5',
  'a.5',
  'U.S.A.',
  'usa',
  'mr.',
  'e.g.',
  '10:30',
  '$5',
  '50%',
  '#1',
  'İstanbul',
  'istanbul',
  'ΟΔΟΣ',
  'οδος',
  'ΣΑΣ',
  'Σ',
  'Ärger',
  'ärger',
  'ǅ',
  '١٢',
  '١,٢',
  '２',
  '٣.',
  'ẞ',
  'Ა',
  'ა',
  'Ꭰ',
  '𐐀',
  '𐐨',
  'Ⓐ',
  'ⓐ',
  'ﬀ',
  'K',
  'Å',
  'Ω',
];
// The official list (vqa-metric.test.ts checks its rules against the official outputs), then '.'
// (stripped by a rule of its own) and characters the official code leaves alone.
const PUNCT = [...PUNCTUATION, '.', ':', "'", '*', '&', '|', '~'];
const SPACES = [
  ' ',
  ' ',
  ' ',
  '  ',
  '\t',
  '\n',
  '\u00a0',
  '\x1c',
  '\x1f',
  '\u2003',
  '\u3000',
  '\x85',
  '\ufeff',
  '\u180e',
  '\u200b',
  '\r',
  '\x0b',
  '\x0c',
];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

/** One adversarial answer string. */
export function randomAnswer(r: () => number): string {
  const kind = r();
  if (kind < 0.05) return '.'.repeat(1 + Math.floor(r() * 45)) + pick(r, WORDS) + '.'.repeat(Math.floor(r() * 40));
  if (kind < 0.08)
    return Array.from({ length: 1 + Math.floor(r() * 40) }, () => pick(r, ['a.', 'b.', '1.', '.2', '.'])).join('');
  if (kind < 0.1) return '';
  const n = 1 + Math.floor(r() * 4);
  let s = r() < 0.15 ? pick(r, SPACES) : '';
  for (let i = 0; i < n; i++) {
    if (i > 0) s += r() < 0.8 ? ' ' : pick(r, SPACES);
    if (r() < 0.2) s += pick(r, PUNCT);
    s += pick(r, WORDS);
    if (r() < 0.3) s += pick(r, PUNCT);
    if (r() < 0.1) s += pick(r, PUNCT) + (r() < 0.5 ? ' ' : '') + pick(r, WORDS);
  }
  if (r() < 0.15) s += pick(r, SPACES);
  return s;
}

/** A variant of `base` that normalises to the same text more often than not. */
function variant(r: () => number, base: string): string {
  const k = r();
  if (k < 0.3) return base;
  if (k < 0.45) return base.toUpperCase();
  if (k < 0.55) return base + '.';
  if (k < 0.65) return `the ${base}`;
  if (k < 0.72) return ` ${base}\t`;
  if (k < 0.8) return `${base}!`;
  if (k < 0.85) return `"${base}"`;
  return randomAnswer(r);
}

export interface VqaCase {
  annotations: VqaAnnotationsFile;
  questions: VqaQuestionsFile;
  results: VqaResult[];
}

export interface FuzzOptions {
  /** Number of questions (default: random 1..200). */
  questions?: number;
  /** Make every prediction exactly right or wrong (accuracies 0 or 100), to hit exact halves when rounding. */
  binary?: boolean;
}

/** One random evaluation case. */
export function randomVqaCase(seed: number, options: FuzzOptions = {}): VqaCase {
  const r = rng(seed);
  const nq = options.questions ?? 1 + Math.floor(r() * 200);
  const stringIds = r() < 0.1;
  const noIds = r() < 0.15; // answer records without answer_id: the dict-equality quirk
  const binary = options.binary ?? r() < 0.25;
  const qTypes = ['what color is the', 'how many', 'is the', 'what', 'what is the', 'are there', 'none of the above'];
  const aTypes = ['yes/no', 'number', 'other'];
  const anns: VqaAnnotationsFile['annotations'] = [];
  const results: VqaResult[] = [];
  const questions: VqaQuestionsFile['questions'] = [];
  for (let i = 0; i < nq; i++) {
    const id = stringIds ? `q${i}` : 1000 + i;
    const base = randomAnswer(r);
    const allSame = r() < 0.3;
    const nAnswers = r() < 0.9 ? 10 : 1 + Math.floor(r() * 12);
    const answers = Array.from({ length: nAnswers }, (_, j) => {
      const answer = allSame ? base : variant(r, base);
      const rec: Record<string, unknown> = { answer };
      const idMode = r();
      if (!noIds) rec.answer_id = idMode < 0.97 ? j + 1 : 1; // a few duplicate answer_ids
      if (r() < 0.5) rec.answer_confidence = pick(r, ['yes', 'maybe', 'no']);
      if (noIds && r() < 0.1) rec.answer_id = pick(r, [1, 1.0, true]);
      return rec as { answer: string };
    });
    anns.push({
      question_id: id,
      image_id: 42 + i,
      question_type: pick(r, qTypes),
      answer_type: pick(r, aTypes),
      multiple_choice_answer: base,
      answers,
    });
    questions.push({ question_id: id, image_id: 42 + i, question: `question ${i}?` });
    let prediction: string;
    if (binary) prediction = r() < 0.5 ? answers[0]!.answer : 'zzz-wrong';
    else {
      const k = r();
      prediction = k < 0.5 ? variant(r, base) : k < 0.8 ? pick(r, answers).answer : randomAnswer(r);
    }
    results.push({ question_id: id, answer: prediction });
  }
  // Repeated question ids (official: each repeat is scored again on the mutated answers).
  if (r() < 0.1 && anns.length > 1) anns.push(JSON.parse(JSON.stringify(anns[Math.floor(r() * anns.length)])));
  // Repeated predictions (official: the last wins).
  if (r() < 0.1 && results.length > 1)
    results.push({ ...results[Math.floor(r() * results.length)]!, answer: randomAnswer(r) });
  // Shuffle results: their order must not matter.
  for (let i = results.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [results[i], results[j]] = [results[j]!, results[i]!];
  }
  return {
    annotations: { info: {}, license: {}, data_subtype: 'val2014', annotations: anns },
    questions: {
      info: {},
      task_type: 'Open-Ended',
      data_type: 'mscoco',
      data_subtype: 'val2014',
      license: {},
      questions,
    },
    results,
  };
}
