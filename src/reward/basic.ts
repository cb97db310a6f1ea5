/**
 * The built-in rewards. Each is a factory returning a plain {@link RewardFn} whose result carries
 * named parts, so a widget can show why a completion scored what it did.
 */
import type { VqaSample } from '../data/types.js';
import { pythonDialect, PYTHON_DIALECTS, type PythonDialect } from '../eval/python.js';
import {
  normalizeAnswer,
  prepareAnswers,
  prepareReferences,
  scoreReferences,
  type PreparedReferences,
} from '../eval/vqa-metric.js';
import { describeValue, expectNumber, expectOneOf } from '../util/validate.js';
import { defineReward } from './core.js';
import { extractAnswer, type AnswerExtractor } from './extract.js';
import type { BreakdownReward, RewardBreakdown } from './types.js';

function expectExtractor(name: string, v: unknown): AnswerExtractor {
  if (v === undefined) return extractAnswer;
  if (typeof v !== 'function') throw new TypeError(`Expected function for ${name} but received ${describeValue(v)}`);
  return v as AnswerExtractor;
}

/** A problem that makes a reward inapplicable to a sample: thrown, so the runner records it. */
export class RewardNotApplicableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RewardNotApplicableError';
  }
}

export interface VqaAccuracyOptions {
  /** Which interpreter's behaviour of the official code to reproduce (default 'python2'; docs/vqa-metric.md). */
  dialect?: PythonDialect;
  /** How to find the answer in a completion (default {@link extractAnswer}). */
  extract?: AnswerExtractor;
  /**
   * How samples with fewer than 10 answers are scored. 'match' (default): 1 when the normalised
   * prediction equals any normalised reference, else 0 (docs/vqa-metric.md, "Fewer than 10
   * answers"); the part `exactMatch: 1` marks them. 'official': the official formula whatever the
   * count (a single answer can then never score above 0, so such samples throw).
   */
  fewAnswers?: 'match' | 'official';
}

/**
 * The VQA accuracy of the completion's answer against the sample's reference answers
 * (`scoreAnswer` of src/eval): with 10 or more answers (VQAv2) the official per-question accuracy,
 * mean over leave-one-out subsets of min(#matches / 3, 1) with the official normalisation; with
 * fewer, normalised exact match against any reference. Parts: `matches` (answers equal to the
 * processed prediction), `normalized` (1 when normalisation applied), `answers` (how many), and
 * `exactMatch: 1` when the exact-match rule scored it.
 *
 * @example
 * vqaAccuracy()(sample, 'Two') // { score: 1, parts: { matches: 9, normalized: 1, answers: 10 } }
 * vqaAccuracy()(oneAnswer('red'), 'The red.') // { score: 1, parts: { matches: 1, normalized: 1, answers: 1, exactMatch: 1 } }
 */
export function vqaAccuracy(options: VqaAccuracyOptions = {}): BreakdownReward {
  const dialect = options.dialect === undefined ? 'python2' : expectOneOf('dialect', options.dialect, PYTHON_DIALECTS);
  const extract = expectExtractor('extract', options.extract);
  const fewAnswers =
    options.fewAnswers === undefined
      ? 'match'
      : expectOneOf('fewAnswers', options.fewAnswers, ['match', 'official'] as const);
  if ((options as { singleAnswer?: unknown }).singleAnswer !== undefined) {
    throw new TypeError(
      "vqaAccuracy's singleAnswer option is gone: samples with fewer than 10 answers are scored by exact match by default (fewAnswers: 'match'); pass fewAnswers: 'official' for the official formula",
    );
  }
  // GRPO scores G completions against the same answers: prepare them once per answers array.
  const prepared = new WeakMap<readonly string[], PreparedReferences>();
  return defineReward('vqaAccuracy', (sample: VqaSample, completion: string): RewardBreakdown => {
    const answers = sample.answers;
    if (!Array.isArray(answers) || answers.length === 0)
      throw new RewardNotApplicableError(`sample ${sample.id} has no answers`);
    if (fewAnswers === 'official' && answers.length === 1) {
      throw new RewardNotApplicableError(
        `vqaAccuracy({ fewAnswers: 'official' }) needs the annotators' answers (VQAv2 has 10) but sample ${sample.id} has 1, which the official formula can never match; use the default fewAnswers: 'match'`,
      );
    }
    const prediction = extract(completion);
    let p = prepared.get(answers);
    if (!p) {
      p =
        fewAnswers === 'official'
          ? { rule: 'official', prepared: prepareAnswers(answers, { dialect }) }
          : prepareReferences(answers, { dialect });
      prepared.set(answers, p);
    }
    const r = scoreReferences(prediction, p);
    const parts: Record<string, number> = {
      matches: r.matches,
      normalized: r.normalized ? 1 : 0,
      answers: answers.length,
    };
    if (r.rule === 'exact-match') parts.exactMatch = 1;
    return { score: r.accuracy, parts };
  });
}

export interface ExactMatchOptions {
  /**
   * How both sides are normalised before comparing: 'basic' (default: lower-case, trim, collapse
   * whitespace, drop a trailing period), 'vqa' (the official VQA normalisation) or 'none'.
   */
  normalize?: 'basic' | 'vqa' | 'none';
  /** Compare with `sample.answer` (default) or with any of `sample.answers`. */
  against?: 'answer' | 'any';
  extract?: AnswerExtractor;
}

function basicNormalize(s: string): string {
  return s.toLowerCase().trim().replace(/\s+/g, ' ').replace(/\.$/, '').trim();
}

/** 1 when the answer equals the reference after normalisation, else 0. Part: `match`. */
export function exactMatch(options: ExactMatchOptions = {}): BreakdownReward {
  const mode =
    options.normalize === undefined
      ? 'basic'
      : expectOneOf('normalize', options.normalize, ['basic', 'vqa', 'none'] as const);
  const against =
    options.against === undefined ? 'answer' : expectOneOf('against', options.against, ['answer', 'any'] as const);
  const extract = expectExtractor('extract', options.extract);
  const norm =
    mode === 'basic' ? basicNormalize : mode === 'vqa' ? (s: string) => normalizeAnswer(s) : (s: string) => s;
  return defineReward('exactMatch', (sample: VqaSample, completion: string): RewardBreakdown => {
    const p = norm(extract(completion));
    const refs = against === 'any' ? sample.answers : [sample.answer];
    const match = refs.some((r) => norm(r) === p) ? 1 : 0;
    return { score: match, parts: { match } };
  });
}

export interface SimilarityOptions {
  extract?: AnswerExtractor;
}

/**
 * The Agent Lightning VQA example's answer similarity (its seed reward), against `sample.answer`,
 * after lower() and strip() (Python 3 semantics, as the example runs):
 * 1.0 for an exact match; 0.8 when the reference is a substring of the prediction; else the
 * fraction of the reference's words found in the prediction, |pred ∩ expected| / |expected| (word
 * sets, split on whitespace). Parts: `exact`, `contains`, `overlap`.
 *
 * @example
 * similarity()(sample('red'), 'Red') // 1
 * similarity()(sample('red'), 'a red car') // 0.8
 * similarity()(sample('red car'), 'car') // 0.5
 */
export function similarity(options: SimilarityOptions = {}): BreakdownReward {
  const extract = expectExtractor('extract', options.extract);
  const py = pythonDialect('python3');
  return defineReward('similarity', (sample: VqaSample, completion: string): RewardBreakdown => {
    const pred = py.strip(py.lower(extract(completion)));
    const expected = py.strip(py.lower(sample.answer));
    if (pred === expected) return { score: 1, parts: { exact: 1, contains: 1, overlap: 1 } };
    if (pred.includes(expected)) return { score: 0.8, parts: { exact: 0, contains: 1, overlap: 1 } };
    const predWords = new Set(py.split(pred));
    const expWords = new Set(py.split(expected));
    if (expWords.size === 0) return { score: 0, parts: { exact: 0, contains: 0, overlap: 0 } };
    let common = 0;
    for (const w of expWords) if (predWords.has(w)) common++;
    const overlap = Math.min(common / expWords.size, 1);
    return { score: overlap, parts: { exact: 0, contains: 0, overlap } };
  });
}

const UNITS: Record<string, number> = {
  zero: 0,
  none: 0,
  one: 1,
  two: 2,
  three: 3,
  four: 4,
  five: 5,
  six: 6,
  seven: 7,
  eight: 8,
  nine: 9,
  ten: 10,
  eleven: 11,
  twelve: 12,
  thirteen: 13,
  fourteen: 14,
  fifteen: 15,
  sixteen: 16,
  seventeen: 17,
  eighteen: 18,
  nineteen: 19,
  twenty: 20,
  thirty: 30,
  forty: 40,
  fifty: 50,
  sixty: 60,
  seventy: 70,
  eighty: 80,
  ninety: 90,
  dozen: 12,
};
const SCALES: Record<string, number> = { hundred: 100, thousand: 1000, million: 1e6, billion: 1e9 };
const NUMERAL = /^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[-+]?\.\d+$/;

/**
 * The first number a text states, in digits ("2", "1,000", "2.5") or words ("two", "twenty-one",
 * "one hundred and five", "a dozen"); undefined when there is none.
 *
 * @example
 * parseNumber('There are two dogs') // 2
 * parseNumber('about 1,000 people') // 1000
 */
export function parseNumber(text: string): number | undefined {
  const tokens = text
    .toLowerCase()
    .replace(/(\p{L})-(?=\p{L})/gu, '$1 ') // twenty-one → twenty one
    .replace(/[^\p{L}\p{N}.,+\-\s]/gu, ' ')
    .split(/\s+/)
    .filter(Boolean);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!.replace(/[.,]+$/, '');
    if (NUMERAL.test(t)) return Number(t.replaceAll(',', ''));
    if (t in UNITS || (t === 'a' && tokens[i + 1] === 'dozen')) {
      let total = 0,
        current = 0,
        j = i;
      for (; j < tokens.length; j++) {
        const w = tokens[j]!.replace(/[.,]+$/, '');
        if (w === 'a' && j === i) continue;
        if (w in UNITS) current += UNITS[w]!;
        else if (w in SCALES) {
          current = Math.max(current, 1) * SCALES[w]!;
          if (SCALES[w]! >= 1000) {
            total += current;
            current = 0;
          }
        } else if (w === 'and' && j > i) continue;
        else break;
      }
      return total + current;
    }
  }
  return undefined;
}

export interface NumericOptions {
  /** Absolute difference still counted as equal (default 0). */
  tolerance?: number;
  extract?: AnswerExtractor;
  /**
   * When the reference answer states no number: 'error' (default) throws so the runner reports
   * it (combine with `gate` to apply `numeric` only to number questions); a number scores that.
   */
  notApplicable?: 'error' | number;
}

/**
 * 1 when the first number the answer states equals the reference's (digits or words: "two" = "2"),
 * else 0. Parts: `match`, and `predicted`/`expected` when found.
 */
export function numeric(options: NumericOptions = {}): BreakdownReward {
  const tolerance = options.tolerance === undefined ? 0 : expectNumber('tolerance', options.tolerance, 0);
  const extract = expectExtractor('extract', options.extract);
  const na = options.notApplicable ?? 'error';
  if (na !== 'error' && !(typeof na === 'number' && Number.isFinite(na)))
    throw new TypeError(`Expected "error" or a finite number for notApplicable but received ${describeValue(na)}`);
  return defineReward('numeric', (sample: VqaSample, completion: string): RewardBreakdown => {
    const expected = parseNumber(sample.answer);
    if (expected === undefined) {
      if (na === 'error')
        throw new RewardNotApplicableError(
          `numeric: the reference answer of sample ${sample.id} (${JSON.stringify(sample.answer)}) states no number`,
        );
      return { score: na, parts: { applicable: 0 }, note: 'reference answer states no number' };
    }
    const predicted = parseNumber(extract(completion));
    if (predicted === undefined) return { score: 0, parts: { match: 0, expected }, note: 'answer states no number' };
    const match = Math.abs(predicted - expected) <= tolerance ? 1 : 0;
    return { score: match, parts: { match, predicted, expected } };
  });
}

export interface BrevityOptions {
  /** Words allowed without penalty (default 10). */
  maxWords?: number;
  /** Penalty per word beyond maxWords (default 0.05). */
  perWord?: number;
  /** Largest penalty (default 1). */
  maxPenalty?: number;
  /** Count the words of the extracted answer (default) or of the whole completion. */
  of?: 'answer' | 'completion';
  extract?: AnswerExtractor;
}

/**
 * A penalty for long answers: 0 up to `maxWords`, then −perWord per extra word, at most
 * −maxPenalty. Parts: `words`, `excessWords`.
 */
export function brevity(options: BrevityOptions = {}): BreakdownReward {
  const maxWords = options.maxWords === undefined ? 10 : expectNumber('maxWords', options.maxWords, 0);
  const perWord = options.perWord === undefined ? 0.05 : expectNumber('perWord', options.perWord, 0);
  const maxPenalty = options.maxPenalty === undefined ? 1 : expectNumber('maxPenalty', options.maxPenalty, 0);
  const of = options.of === undefined ? 'answer' : expectOneOf('of', options.of, ['answer', 'completion'] as const);
  const extract = expectExtractor('extract', options.extract);
  return defineReward('brevity', (_sample: VqaSample, completion: string): RewardBreakdown => {
    const text = of === 'answer' ? extract(completion) : completion;
    const words = text.split(/\s+/).filter(Boolean).length;
    const excessWords = Math.max(0, words - maxWords);
    const score = excessWords === 0 ? 0 : -Math.min(maxPenalty, perWord * excessWords);
    return { score, parts: { words, excessWords } };
  });
}

/** Ready-made formats: an `<answer>` tag, or `<think>…</think>` followed by `<answer>…</answer>`. */
export const FORMATS = {
  'answer-tag': /<answer>[\s\S]*?<\/answer>/,
  'think-answer': /^\s*<think>[\s\S]*?<\/think>\s*<answer>[\s\S]*?<\/answer>\s*$/,
} as const;

export interface FormatOptions {
  /** The required format: a regular expression, a predicate, or a preset name (default 'answer-tag'). */
  pattern?: RegExp | ((completion: string) => boolean) | keyof typeof FORMATS;
  /** Subtracted when the format is not met (default 1). */
  penalty?: number;
  /** Added when it is (default 0). */
  bonus?: number;
}

/** A penalty (or bonus) for the completion's format. Part: `ok` (1 when the format is met). */
export function format(options: FormatOptions = {}): BreakdownReward {
  const pattern = options.pattern ?? 'answer-tag';
  let test: (c: string) => boolean;
  if (typeof pattern === 'string') {
    const re = FORMATS[expectOneOf('pattern', pattern, Object.keys(FORMATS) as (keyof typeof FORMATS)[])];
    test = (c) => re.test(c);
  } else if (pattern instanceof RegExp) {
    const re = new RegExp(pattern.source, pattern.flags.replace('g', '').replace('y', ''));
    test = (c) => re.test(c);
  } else if (typeof pattern === 'function') test = pattern;
  else
    throw new TypeError(
      `Expected a RegExp, a function or a preset name for pattern but received ${describeValue(pattern)}`,
    );
  const penalty = options.penalty === undefined ? 1 : expectNumber('penalty', options.penalty, 0);
  const bonus = options.bonus === undefined ? 0 : expectNumber('bonus', options.bonus);
  return defineReward('format', (_sample: VqaSample, completion: string): RewardBreakdown => {
    const ok = test(completion) ? 1 : 0;
    return { score: ok ? bonus : -penalty, parts: { ok } };
  });
}
