/** The built-in rewards: scores and named parts. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import { brevity, exactMatch, format, numeric, parseNumber, similarity, vqaAccuracy } from '../../src/reward/basic.js';
import { extractAnswer } from '../../src/reward/extract.js';
import { scoreVqa } from '../../src/eval/vqa-metric.js';

const sample = (answer: string, answers: string[] = [answer], extra: Partial<VqaSample> = {}): VqaSample => ({
  id: 'q1',
  imagePath: '/img.jpg',
  question: 'What is it?',
  answer,
  answers,
  ...extra,
});
const ten = ['2', '2', 'two', '2', '3', '2', '2', '2', '2', '2'];

test('extractAnswer takes the last <answer> tag, else the whole completion; <think> blocks are not the answer', () => {
  assert.equal(extractAnswer('<think>a</think><answer> 2 </answer>'), '2');
  assert.equal(extractAnswer('<answer>1</answer> then <ANSWER>3</ANSWER>'), '3');
  assert.equal(extractAnswer('two dogs'), 'two dogs');
  // reasoning is not the answer: only what follows the last </think> is read (as the accuracy reads
  // it: answerAfterThinking); a completion cut off inside <think> has none
  assert.equal(extractAnswer('<think>\nmaybe three\n</think>\n\ntwo dogs'), 'two dogs');
  assert.equal(extractAnswer('<think>1</think>a <think>2</think> b'), 'b');
  // Qwen3's thinking templates open <think> in the prompt: the completion has only the closing tag
  assert.equal(extractAnswer('maybe three\n</think>\n\ntwo dogs'), 'two dogs');
  assert.equal(extractAnswer('maybe three</think><answer>2</answer>'), '2');
  assert.equal(extractAnswer('<think><answer>3</answer></think><answer>2</answer>'), '2');
  assert.equal(extractAnswer('<think>I count <answer>3</answer>'), '');
  assert.equal(extractAnswer('<think>still counting'), '');
});

test('vqaAccuracy is the official per-question accuracy, with parts', () => {
  const r = vqaAccuracy();
  assert.deepEqual(r(sample('2', ten), 'Two'), { score: 1, parts: { matches: 9, normalized: 1, answers: 10 } });
  assert.deepEqual(r(sample('2', ten), '<answer>3</answer>'), {
    score: scoreVqa('3', ten).accuracy,
    parts: { matches: 1, normalized: 1, answers: 10 },
  });
  assert.equal(r(sample('2', ten), '<answer>3</answer>').score, 0.3);
  // All answers identical: no normalisation, case matters (the official quirk).
  assert.deepEqual(r(sample('yes', Array(10).fill('yes')), 'Yes'), {
    score: 0,
    parts: { matches: 0, normalized: 0, answers: 10 },
  });
  // Prepared answers are cached per answers array, and results stay right across samples.
  const s2 = sample('red', ['red', 'red', 'blue', 'red', 'red', 'red', 'red', 'red', 'red', 'red']);
  assert.equal(r(s2, 'red').score, scoreVqa('red', s2.answers).accuracy);
  assert.equal(r(s2, 'blue').score, scoreVqa('blue', s2.answers).accuracy);
});

test('vqaAccuracy scores samples with fewer than 10 answers by normalised exact match against any', () => {
  const r = vqaAccuracy();
  // One reference (the seed's 4-column Parquet): 1 for an exact match after the official normalisation, else 0.
  assert.deepEqual(r(sample('Red.'), 'the red'), {
    score: 1,
    parts: { matches: 1, normalized: 1, answers: 1, exactMatch: 1 },
  });
  assert.deepEqual(r(sample('two'), '<answer>2</answer>'), {
    score: 1,
    parts: { matches: 1, normalized: 1, answers: 1, exactMatch: 1 },
  });
  assert.deepEqual(r(sample('red'), 'blue'), {
    score: 0,
    parts: { matches: 0, normalized: 1, answers: 1, exactMatch: 1 },
  });
  assert.equal(r(sample('red'), 'dark red').score, 0);
  // A few references: any one matching is enough (the official formula would give 2/3 or 1/3 here).
  const three = sample('red', ['red', 'red', 'crimson']);
  assert.equal(r(three, 'Crimson').score, 1);
  assert.equal(r(three, 'red').score, 1);
  assert.equal(r(three, 'blue').score, 0);
  // The official formula on request: a single answer can never match, so it is refused.
  const official = vqaAccuracy({ fewAnswers: 'official' });
  assert.equal(official(three, 'red').score, scoreVqa('red', three.answers).accuracy);
  assert.throws(
    () => official(sample('red'), 'red'),
    /needs the annotators' answers \(VQAv2 has 10\) but sample q1 has 1/,
  );
  assert.throws(() => vqaAccuracy({ singleAnswer: 'match' } as never), /singleAnswer option is gone/);
  assert.throws(() => vqaAccuracy({ fewAnswers: 'maybe' as never }), {
    message: 'Expected one of "match", "official" for fewAnswers but received "maybe" of type string',
  });
  assert.throws(() => vqaAccuracy({ dialect: 'python4' as never }), {
    message: 'Expected one of "python2", "python3", "python3.12" for dialect but received "python4" of type string',
  });
});

test('exactMatch: basic, vqa and no normalisation, against the answer or any annotator answer', () => {
  assert.deepEqual(exactMatch()(sample('Red'), ' red. '), { score: 1, parts: { match: 1 } });
  assert.equal(exactMatch({ normalize: 'none' })(sample('Red'), 'red').score, 0);
  assert.equal(exactMatch({ normalize: 'vqa' })(sample('two'), 'The 2!').score, 1);
  assert.equal(exactMatch()(sample('2', ten), '3').score, 0);
  assert.equal(exactMatch({ against: 'any' })(sample('2', ten), '3').score, 1);
});

test("similarity is the seed example's: exact 1.0, contains 0.8, else word overlap", () => {
  const r = similarity();
  assert.deepEqual(r(sample('red'), ' RED '), { score: 1, parts: { exact: 1, contains: 1, overlap: 1 } });
  assert.deepEqual(r(sample('red'), 'a red car'), { score: 0.8, parts: { exact: 0, contains: 1, overlap: 1 } });
  assert.deepEqual(r(sample('red car'), 'car red'), { score: 1, parts: { exact: 0, contains: 0, overlap: 1 } });
  assert.deepEqual(r(sample('red sports car'), 'a car'), {
    score: 1 / 3,
    parts: { exact: 0, contains: 0, overlap: 1 / 3 },
  });
  assert.equal(r(sample('red'), 'blue').score, 0);
  // Substring semantics, as Python's `in`: "cat" is in "concatenate".
  assert.equal(r(sample('cat'), 'concatenate').score, 0.8);
  // Empty reference: contained in everything (Python: '' in s is True).
  assert.equal(r(sample(''), 'anything').score, 0.8);
});

test('parseNumber reads digits and number words', () => {
  const cases: [string, number | undefined][] = [
    ['2', 2],
    ['two', 2],
    ['Two dogs', 2],
    ['There are 12 people', 12],
    ['twenty-one', 21],
    ['twenty one', 21],
    ['one hundred and five', 105],
    ['two thousand three hundred', 2300],
    ['a dozen eggs', 12],
    ['1,000', 1000],
    ['2.5 kg', 2.5],
    ['none', 0],
    ['zero', 0],
    ['-3', -3],
    ['no number here', undefined],
    ['(7)', 7],
    ['7.', 7],
  ];
  for (const [t, n] of cases) assert.equal(parseNumber(t), n, t);
});

test('numeric understands "two" and "2"; refuses references without a number unless configured', () => {
  const r = numeric();
  assert.deepEqual(r(sample('2'), 'two'), { score: 1, parts: { match: 1, predicted: 2, expected: 2 } });
  assert.deepEqual(r(sample('two'), '<answer>There are 2.</answer>'), {
    score: 1,
    parts: { match: 1, predicted: 2, expected: 2 },
  });
  assert.deepEqual(r(sample('3'), 'two'), { score: 0, parts: { match: 0, predicted: 2, expected: 3 } });
  assert.deepEqual(r(sample('3'), 'many'), {
    score: 0,
    parts: { match: 0, expected: 3 },
    note: 'answer states no number',
  });
  assert.equal(numeric({ tolerance: 0.5 })(sample('2.4'), '2').score, 1);
  assert.throws(() => r(sample('red'), '2'), /numeric: the reference answer of sample q1 \("red"\) states no number/);
  assert.deepEqual(numeric({ notApplicable: 0.5 })(sample('red'), '2'), {
    score: 0.5,
    parts: { applicable: 0 },
    note: 'reference answer states no number',
  });
});

test('brevity penalises words beyond the limit, capped', () => {
  assert.deepEqual(brevity({ maxWords: 3 })(sample('x'), 'one two three'), {
    score: 0,
    parts: { words: 3, excessWords: 0 },
  });
  assert.deepEqual(brevity({ maxWords: 3, perWord: 0.25 })(sample('x'), 'a b c d e'), {
    score: -0.5,
    parts: { words: 5, excessWords: 2 },
  });
  assert.equal(brevity({ maxWords: 0, perWord: 1, maxPenalty: 2 })(sample('x'), 'a b c d e').score, -2);
  // Counts the answer inside tags by default, the whole completion on request.
  assert.equal(brevity({ maxWords: 1 })(sample('x'), '<think>long long reasoning</think><answer>2</answer>').score, 0);
  assert.ok(
    brevity({ maxWords: 1, of: 'completion' })(sample('x'), '<think>long long reasoning</think><answer>2</answer>')
      .score < 0,
  );
  assert.throws(() => brevity({ maxWords: -1 }), {
    message: 'Expected number >= 0 for maxWords but received -1 of type number',
  });
});

test('format: presets, regular expressions and predicates; penalty and bonus', () => {
  assert.deepEqual(format()(sample('x'), '<answer>2</answer>'), { score: 0, parts: { ok: 1 } });
  assert.deepEqual(format()(sample('x'), '2'), { score: -1, parts: { ok: 0 } });
  const ta = format({ pattern: 'think-answer', bonus: 0.2, penalty: 0.5 });
  assert.equal(ta(sample('x'), '<think>a</think>\n<answer>2</answer>').score, 0.2);
  assert.equal(ta(sample('x'), '<answer>2</answer>').score, -0.5);
  // A global regex must not carry lastIndex between calls.
  const g = format({ pattern: /\d/g });
  assert.equal(g(sample('x'), '1').score, 0);
  assert.equal(g(sample('x'), '1').score, 0);
  assert.equal(format({ pattern: (c) => c.length < 3 })(sample('x'), 'ab').score, 0);
  assert.throws(() => format({ pattern: 'xml' as never }), /Expected one of "answer-tag", "think-answer" for pattern/);
});
