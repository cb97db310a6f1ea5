/** Composition: weighted, gate, max, custom functions; failures name the component. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import { brevity, exactMatch, format, numeric, vqaAccuracy } from '../../src/reward/basic.js';
import { gate, max, passes, weighted } from '../../src/reward/compose.js';
import { defineReward, RewardValueError } from '../../src/reward/core.js';
import type { RewardFn } from '../../src/reward/types.js';

const s: VqaSample = {
  id: 'q9',
  imagePath: '/i.jpg',
  question: 'How many?',
  answer: '2',
  answers: ['2', '2', 'two', '2', '3', '2', '2', '2', '2', '2'],
  answerType: 'number',
};
const other: VqaSample = { ...s, id: 'q10', answer: 'red', answers: Array(10).fill('red'), answerType: 'other' };

test('weighted sums weighted scores and keeps every part under its name', () => {
  const r = weighted({ acc: vqaAccuracy(), short: [brevity({ maxWords: 0, perWord: 0.5 }), 2] });
  const out = r(s, 'Two', {});
  assert.deepEqual(out, {
    score: 1 * 1 + 2 * -0.5,
    parts: {
      acc: 1,
      'acc.matches': 9,
      'acc.normalized': 1,
      'acc.answers': 10,
      short: -0.5,
      'short.words': 1,
      'short.excessWords': 1,
    },
  });
  // A list takes names from the functions; plain custom functions work as components.
  const custom: RewardFn = function lengthBonus(_s, c) {
    return c.length < 5 ? 0.1 : 0;
  };
  const out2 = weighted([exactMatch(), { reward: custom, weight: 10 }])(s, '2', {});
  assert.deepEqual(out2, { score: 2, parts: { exactMatch: 1, 'exactMatch.match': 1, lengthBonus: 0.1 } });
});

test('weighted with an async component returns a promise', async () => {
  const slow = defineReward('slow', async () => ({ score: 0.5, parts: { waited: 1 } }));
  const v = weighted({ a: exactMatch(), b: slow })(s, '2', {});
  assert.ok(v instanceof Promise);
  assert.deepEqual(await v, { score: 1.5, parts: { a: 1, 'a.match': 1, b: 0.5, 'b.waited': 1 } });
});

test('gate chooses and says so; the otherwise branch may be a constant or a reward', async () => {
  const g = gate((x) => x.answerType === 'number', numeric(), vqaAccuracy());
  assert.deepEqual(g(s, 'two', {}), {
    score: 1,
    parts: { gate: 1, numeric: 1, 'numeric.match': 1, 'numeric.predicted': 2, 'numeric.expected': 2 },
  });
  assert.deepEqual(g(other, 'red', {}), {
    score: 1,
    parts: {
      gate: 0,
      vqaAccuracy: 1,
      'vqaAccuracy.matches': 10,
      'vqaAccuracy.normalized': 0,
      'vqaAccuracy.answers': 10,
    },
    note: 'gate closed',
  });
  const f = gate(passes(format()), vqaAccuracy());
  assert.deepEqual(f(s, '2', {}), { score: 0, parts: { gate: 0 }, note: 'gate closed: scored 0' });
  assert.equal((f(s, '<answer>2</answer>', {}) as { score: number }).score, 1);
  const asyncGate = gate(async () => true, exactMatch(), -1);
  assert.deepEqual(await asyncGate(s, '2', {}), { score: 1, parts: { gate: 1, exactMatch: 1, 'exactMatch.match': 1 } });
});

test('max takes the best component and reports which', () => {
  const m = max({ exact: exactMatch(), vqa: vqaAccuracy() });
  assert.deepEqual(m(s, '3', {}), {
    score: 0.3,
    parts: {
      exact: 0,
      'exact.match': 0,
      vqa: 0.3,
      'vqa.matches': 1,
      'vqa.normalized': 1,
      'vqa.answers': 10,
      argmax: 1,
    },
  });
});

test('a failing component makes the composition throw a RewardValueError naming its path', async () => {
  const nan = defineReward('broken', () => NaN);
  const boom = defineReward('boom', () => {
    throw new Error('kaput');
  });
  const bad = defineReward('bad', async () => 'high' as unknown as number);
  assert.throws(
    () => weighted({ ok: exactMatch(), x: nan })(s, '2', {}),
    (e: unknown) => e instanceof RewardValueError && e.reward === 'weighted.x' && e.problem === 'nan',
  );
  assert.throws(
    () => weighted([boom])(s, '2', {}),
    (e: unknown) => e instanceof RewardValueError && e.reward === 'weighted.boom' && e.message === 'threw: kaput',
  );
  await assert.rejects(
    Promise.resolve(weighted([bad])(s, '2', {})),
    (e: unknown) => e instanceof RewardValueError && e.reward === 'weighted.bad' && e.problem === 'not-a-number',
  );
  // Nested compositions keep the full path.
  const nested = weighted({ inner: weighted({ deep: nan }, 'innerSum') });
  assert.throws(
    () => nested(s, '2', {}),
    (e: unknown) => e instanceof RewardValueError && e.reward === 'weighted.inner.deep',
  );
  assert.throws(
    () =>
      gate(() => {
        throw new Error('no');
      }, exactMatch())(s, '2', {}),
    (e: unknown) => e instanceof RewardValueError && e.reward === 'gate.condition',
  );
  assert.throws(() => gate((() => 1) as never, exactMatch())(s, '2', {}), /returned 1 of type number, not a boolean/);
});

test('composition arguments are validated', () => {
  assert.throws(() => weighted([]), { message: 'Expected at least one reward for weighted but received none' });
  assert.throws(() => weighted([exactMatch(), exactMatch()]), /"exactMatch" appears twice/);
  assert.throws(() => weighted({ a: [exactMatch(), NaN] }), {
    message: 'Expected finite number for weighted.a.weight but received NaN of type number',
  });
  assert.throws(() => weighted({ a: 3 as never }), {
    message: 'Expected a reward function for weighted.a but received 3 of type number',
  });
});
