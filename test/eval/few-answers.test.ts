/**
 * Scoring that fits the data (docs/vqa-metric.md, "Fewer than 10 answers"): samples with 10 or
 * more reference answers keep the official formula, bit for bit; samples with fewer are scored by
 * the official normalisation + exact match against any reference. Checked on scoreAnswer and on
 * `evaluatePolicies` (what `vqalab eval-policy` prints).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { VqaSample } from '../../src/data/types.js';
import { PYTHON_DIALECTS, type PythonDialect } from '../../src/eval/python.js';
import { OFFICIAL_ANSWER_COUNT, normalizeForMatch, scoreAnswer, scoreVqa } from '../../src/eval/vqa-metric.js';
import { evaluatePolicies } from '../../src/rollout/compare.js';
import type { Completion, Policy, SamplingOptions } from '../../src/rollout/types.js';

interface Cases {
  questions: {
    rule: string;
    answers: { answer: string; answer_id?: number }[];
    prediction: string;
    expected: Record<PythonDialect, { accuracy: number }>;
  }[];
}
const cases = JSON.parse(
  readFileSync(new URL('../../../test/eval/fixtures/vqa-metric-cases.json', import.meta.url), 'utf8'),
) as Cases;

test('10 or more answers: scoreAnswer is the official formula on every fixture case, in every dialect', () => {
  // Records with distinct answer_ids (as in VQAv2): the cases about equal records need entryKeys.
  const full = cases.questions.filter(
    (q) =>
      q.answers.length >= OFFICIAL_ANSWER_COUNT &&
      new Set(q.answers.map((a) => a.answer_id)).size === q.answers.length &&
      q.answers.every((a) => a.answer_id !== undefined),
  );
  assert.ok(full.length >= 10, `the fixtures hold ${full.length} cases with 10+ answers`);
  for (const dialect of PYTHON_DIALECTS) {
    for (const q of full) {
      const answers = q.answers.map((a) => a.answer);
      const r = scoreAnswer(q.prediction, answers, { dialect });
      assert.equal(r.rule, 'official', q.rule);
      assert.equal(r.accuracy, q.expected[dialect].accuracy, `${dialect}: ${q.rule}`);
      assert.deepEqual(r, { ...scoreVqa(q.prediction, answers, { dialect }), rule: 'official' }, q.rule);
    }
  }
});

test('fewer than 10 answers: 1 for a normalised exact match against any reference, else 0', () => {
  assert.equal(OFFICIAL_ANSWER_COUNT, 10);
  // Single answer: the official formula gives 0 whatever the prediction; exact match gives 1 when right.
  assert.equal(scoreVqa('red', ['red']).accuracy, 0);
  assert.deepEqual(scoreAnswer('red', ['red']), {
    accuracy: 1,
    matches: 1,
    normalized: true,
    prediction: 'red',
    answers: ['red'],
    rule: 'exact-match',
  });
  assert.equal(scoreAnswer('The Red.', ['red']).accuracy, 1);
  assert.equal(scoreAnswer(' two\n', ['2']).accuracy, 1);
  assert.equal(scoreAnswer('dont', ["don't"]).accuracy, 1);
  assert.equal(scoreAnswer('red', ['blue']).accuracy, 0);
  assert.equal(scoreAnswer('red car', ['red']).accuracy, 0);
  assert.equal(scoreAnswer('', ['red']).accuracy, 0);
  // Several (fewer than 10): any one is enough; 9 identical answers still use the match rule.
  assert.equal(scoreAnswer('crimson', ['red', 'red', 'crimson']).accuracy, 1);
  assert.equal(scoreVqa('red', ['red', 'red', 'red']).accuracy, 2 / 3);
  assert.equal(scoreAnswer('red', ['red', 'red', 'red']).accuracy, 1);
  assert.equal(scoreAnswer('Yes', Array(9).fill('yes')).accuracy, 1);
  // Ten identical answers: the official formula, with its quirk (no normalisation when all agree).
  assert.equal(scoreAnswer('Yes', Array(10).fill('yes')).accuracy, 0);
  assert.equal(normalizeForMatch('\tThe  Two dogs!'), '2 dogs');
  assert.throws(() => scoreAnswer('red', []), /at least one reference answer/);
});

/** A policy that answers each question with a fixed text (a lookup table: what a model said). */
class TablePolicy implements Policy {
  readonly name = 'table';
  constructor(private readonly answers: Record<string, string>) {}
  async generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]> {
    return Array.from({ length: options.n }, () => ({
      text: this.answers[sample.id] ?? '',
      finishReason: 'stop' as const,
    }));
  }
}

test('evaluatePolicies (vqalab eval-policy) scores single-answer rows by exact match and keeps the official formula for VQAv2 rows', async () => {
  const ten = ['2', '2', 'two', '2', '3', '2', '2', '2', '2', '2'];
  const s = (id: string, answer: string, answers: string[], answerType: string): VqaSample => ({
    id,
    imagePath: '/x.png',
    question: 'q?',
    answer,
    answers,
    answerType,
  });
  const samples = [
    s('a', 'red', ['red'], 'other'), // exact match → 1
    s('b', 'circle', ['circle'], 'other'), // wrong → 0
    s('c', '2', ten, 'number'), // official: "3" → 0.3
    s('d', 'yes', ['yes', 'yes'], 'yes/no'), // exact match → 1
  ];
  const policy = new TablePolicy({ a: 'The red.', b: 'square', c: '3', d: 'Yes' });
  const c = await evaluatePolicies([policy], samples, { nRunners: 1 });
  const rows = Object.fromEntries(c.policies[0]!.rows.map((r) => [r.id, r.accuracy]));
  assert.deepEqual(rows, { a: 1, b: 0, c: scoreVqa('3', ten).accuracy, d: 1 });
  assert.equal(rows.c, 0.3);
  assert.equal(c.policies[0]!.overall, Math.round((10000 * (1 + 0 + 0.3 + 1)) / 4) / 100);
  assert.deepEqual(c.policies[0]!.perAnswerType, { number: 30, other: 50, 'yes/no': 100 });
  assert.ok(
    c.notes.some((n) => n.startsWith('3 of 4 samples have fewer than 10 reference answers')),
    c.notes.join('\n'),
  );
  // All rows with 10 answers: the official evaluator's numbers, untouched.
  const only = await evaluatePolicies([policy], [samples[2]!], { nRunners: 1 });
  assert.equal(only.policies[0]!.overall, 30);
  assert.ok(!only.notes.some((n) => n.includes('fewer than 10')));
});
