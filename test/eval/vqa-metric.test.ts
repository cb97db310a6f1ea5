/**
 * Every normalisation rule and quirk of the official VQA metric, against values the official code
 * produced under CPython 2.7, 3.11 and 3.12 (test/eval/fixtures/vqa-metric-cases.json, made by
 * scripts/gen/vqa_metric_cases.py).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PYTHON_DIALECTS, pyRound, pySum, pythonDialect, type PythonDialect } from '../../src/eval/python.js';
import {
  cleanWhitespace,
  CONTRACTIONS,
  normalizeAnswer,
  processDigitArticle,
  processPunctuation,
  scoreVqa,
} from '../../src/eval/vqa-metric.js';
import { evaluateVqa, pythonEqualityKey, type VqaAnswerRecord } from '../../src/eval/vqa-eval.js';

interface Cases {
  texts: {
    rule: string;
    text: string;
    expected: Record<PythonDialect, { punct: string; digitArticle: string; both: string }>;
  }[];
  questions: {
    rule: string;
    answers: VqaAnswerRecord[];
    prediction: string;
    expected: Record<PythonDialect, { accuracy: number; evalQA: number; processedAnswers: string[] }>;
  }[];
  rounding: { value: string; round2: Record<PythonDialect, string> }[];
  sums: { values: string[]; sum: Record<PythonDialect, string> }[];
}
const cases = JSON.parse(
  readFileSync(new URL('../../../test/eval/fixtures/vqa-metric-cases.json', import.meta.url), 'utf8'),
) as Cases;

for (const dialect of PYTHON_DIALECTS) {
  test(`processPunctuation, processDigitArticle and both match the official code (${dialect}), ${cases.texts.length} rules`, () => {
    for (const c of cases.texts) {
      const e = c.expected[dialect];
      assert.equal(
        processPunctuation(c.text, dialect),
        e.punct,
        `processPunctuation: ${c.rule}: ${JSON.stringify(c.text)}`,
      );
      assert.equal(
        processDigitArticle(c.text, dialect),
        e.digitArticle,
        `processDigitArticle: ${c.rule}: ${JSON.stringify(c.text)}`,
      );
      assert.equal(normalizeAnswer(c.text, dialect), e.both, `both: ${c.rule}: ${JSON.stringify(c.text)}`);
    }
  });

  test(`per-question accuracy matches the official code bit for bit (${dialect}), ${cases.questions.length} cases`, () => {
    for (const c of cases.questions) {
      const e = c.expected[dialect];
      const result = evaluateVqa(
        { annotations: [{ question_id: 1, question_type: 't', answer_type: 'a', answers: c.answers }] },
        [{ question_id: 1, answer: c.prediction }],
        { dialect },
      );
      assert.equal(result.accuracies[0], e.accuracy, `accuracy: ${c.rule}`);
      assert.equal(result.perQuestion.get(1), e.evalQA, `evalQA: ${c.rule}`);
      const keys = c.answers.map(({ answer: _a, ...rest }) => pythonEqualityKey(rest));
      const scored = scoreVqa(
        c.prediction,
        c.answers.map((a) => a.answer),
        { dialect, entryKeys: keys },
      );
      assert.equal(scored.accuracy, e.accuracy, `scoreVqa: ${c.rule}`);
      assert.deepEqual(scored.answers, e.processedAnswers, `processed answers: ${c.rule}`);
    }
  });

  test(`round(x, 2) matches CPython (${dialect}) on ${cases.rounding.length} values incl. exact halves`, () => {
    const d = pythonDialect(dialect);
    for (const r of cases.rounding) {
      assert.equal(d.round(Number(r.value), 2), Number(r.round2[dialect]), `round(${r.value}, 2)`);
    }
  });

  test(`sum() of floats matches CPython (${dialect})`, () => {
    const d = pythonDialect(dialect);
    for (const s of cases.sums) {
      assert.equal(
        pySum(s.values.map(Number), d.compensatedSum),
        Number(s.sum[dialect]),
        `sum(${s.values.join(', ')})`,
      );
    }
  });
}

test('the dialects differ where documented', () => {
  // Exact halves: away from zero in Python 2, to even in Python 3.
  assert.equal(pyRound(3.125, 2, false), 3.13);
  assert.equal(pyRound(3.125, 2, true), 3.12);
  assert.equal(pyRound(2.675, 2, false), 2.67, '2.675 is below the half in binary');
  // \d: ASCII in Python 2, Unicode in Python 3.
  assert.equal(processPunctuation('x.\u0663', 'python2'), 'x\u0663');
  assert.equal(processPunctuation('x.\u0663', 'python3'), 'x.\u0663');
  // lower(): İ → i in 2.7, i + combining dot in 3; final sigma only in 3.
  assert.equal(processDigitArticle('\u0130', 'python2'), 'i');
  assert.equal(processDigitArticle('\u0130', 'python3'), 'i\u0307');
  assert.equal(processDigitArticle('\u039f\u03a3', 'python2'), '\u03bf\u03c3');
  assert.equal(processDigitArticle('\u039f\u03a3', 'python3'), '\u03bf\u03c2');
  // U+180E was whitespace in Unicode 5.2 only.
  assert.deepEqual(pythonDialect('python2').split('a\u180eb'), ['a', 'b']);
  assert.deepEqual(pythonDialect('python3').split('a\u180eb'), ['a\u180eb']);
  // Compensated sum from 3.12.
  assert.equal(pySum(Array(10).fill(0.1), false), 0.9999999999999999);
  assert.equal(pySum(Array(10).fill(0.1), true), 1);
});

test('whitespace handling: \\n and \\t become spaces, Python whitespace is stripped, BOM is not whitespace', () => {
  assert.equal(cleanWhitespace('\n yes\t'), 'yes');
  assert.equal(cleanWhitespace('a\nb'), 'a b');
  assert.equal(cleanWhitespace('\x1cyes\x1f'), 'yes');
  assert.equal(cleanWhitespace('\ufeffyes'), '\ufeffyes');
  assert.equal(cleanWhitespace('\u00a0yes\u3000'), 'yes');
});

test('the 32-period limit and the broken lookbehind', () => {
  assert.equal(processPunctuation('.'.repeat(40) + 'x'), '.'.repeat(8) + 'x');
  assert.equal(processPunctuation('a.5'), 'a.5');
  assert.equal(processPunctuation('5.'), '5');
  assert.equal(processPunctuation('2.5'), '2.5');
});

test('the contractions table keeps its oddities', () => {
  assert.equal(CONTRACTIONS.size, 120);
  assert.equal(CONTRACTIONS.get("somebody'd"), 'somebodyd');
  assert.equal(processDigitArticle('Im'), 'im');
  // Lookups are of own keys only: prototype names are ordinary words.
  assert.equal(processDigitArticle('constructor toString __proto__'), 'constructor tostring __proto__');
});

test('scoreVqa reports what was compared', () => {
  const r = scoreVqa('Two!', ['2', '2', 'two', '2', '3', '2', '2', '2', '2', '2']);
  assert.equal(r.accuracy, 1);
  assert.equal(r.matches, 9);
  assert.equal(r.normalized, true);
  assert.equal(r.prediction, '2');
  const same = scoreVqa('Yes', Array(10).fill('yes'));
  assert.deepEqual([same.accuracy, same.normalized, same.prediction], [0, false, 'Yes']);
  assert.throws(() => scoreVqa('x', []), /at least one answer/);
});
