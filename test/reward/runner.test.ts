/** The reward runner: concurrency, totals, and every kind of bad reward — never a crash, never a silent 0. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import { exactMatch, vqaAccuracy } from '../../src/reward/basic.js';
import { defineReward } from '../../src/reward/core.js';
import { scoreGroups } from '../../src/reward/runner.js';
import type { RewardFn } from '../../src/reward/types.js';

const sample = (id: string, answer = '2'): VqaSample => ({
  id,
  imagePath: '/i.jpg',
  question: 'How many?',
  answer,
  answers: [answer, answer, answer, 'two'],
});

test('scores every completion with every reward; totals are weighted sums, per group, in order', async () => {
  const batch = await scoreGroups(
    [
      { sample: sample('a'), completions: ['2', 'three', { text: 'two', finishReason: 'stop' }] },
      { sample: sample('b', 'red'), completions: ['red'] },
    ],
    [vqaAccuracy(), { reward: exactMatch(), weight: 0.5 }],
  );
  assert.deepEqual(batch.rewards, ['vqaAccuracy', 'exactMatch']);
  // b: answers red×3 + two (fewer than 10: exact match against any), prediction red: 1, plus 0.5 × exact match.
  assert.deepEqual(
    batch.groups.map((g) => g.totals),
    [[1.5, 0, 1], [1.5]],
  );
  assert.deepEqual(batch.groups[0]!.completions[0]!.rewards, [
    { name: 'vqaAccuracy', score: 1, parts: { matches: 4, normalized: 1, answers: 4, exactMatch: 1 } },
    { name: 'exactMatch', score: 1, parts: { match: 1 } },
  ]);
  assert.deepEqual([batch.failures, batch.messages, batch.excluded], [[], [], 0]);
  assert.deepEqual(batch.failureCounts, { vqaAccuracy: 0, exactMatch: 0 });
});

test('rewards get the context: index, group, step', async () => {
  const seen: unknown[] = [];
  const spy = defineReward('spy', (_s, c, ctx) => {
    seen.push([c, ctx.index, ctx.group, ctx.step]);
    return 0;
  });
  await scoreGroups([{ sample: sample('a'), completions: ['x', 'y'] }], [spy], { step: 7 });
  assert.deepEqual(seen, [
    ['x', 0, ['x', 'y'], 7],
    ['y', 1, ['x', 'y'], 7],
  ]);
});

const throws = defineReward('throws', (_s: VqaSample, c: string) => {
  if (c === 'bad') throw new Error('cannot parse');
  return 1;
});
const nan = defineReward('nan', (_s, c) => (c === 'bad' ? NaN : 1));
const inf = defineReward('inf', (_s, c) => (c === 'bad' ? -Infinity : 1));
const str = defineReward('str', (_s, c) => (c === 'bad' ? ('1' as unknown as number) : 1));
const nul = defineReward('nul', (_s, c) => (c === 'bad' ? (null as unknown as number) : 1));
const badPart = defineReward('badPart', (_s, c) => ({ score: 1, parts: { x: c === 'bad' ? NaN : 0 } }));
const rejects = defineReward('rejects', async (_s, c) => {
  if (c === 'bad') throw new TypeError('async trouble');
  return 1;
});
const nothing = defineReward('nothing', (_s, c) => (c === 'bad' ? (undefined as unknown as number) : 1));

test('every kind of bad reward marks the completion, is counted and named — the batch survives', async () => {
  const kinds: [RewardFn, string, string][] = [
    [throws, 'threw', 'threw Error: cannot parse'],
    [nan, 'nan', 'returned NaN'],
    [inf, 'infinite', 'returned -Infinity'],
    [str, 'not-a-number', 'returned "1" of type string, not a number or {score, parts}'],
    [nul, 'not-a-number', 'returned null, not a number or {score, parts}'],
    [badPart, 'bad-parts', 'returned part "x" = NaN of type number, not a finite number'],
    [rejects, 'threw', 'threw TypeError: async trouble'],
    [nothing, 'not-a-number', 'returned undefined, not a number or {score, parts}'],
  ];
  for (const [reward, kind, detail] of kinds) {
    const batch = await scoreGroups(
      [{ sample: sample('s42'), completions: ['good', 'bad', 'good'] }],
      [reward, exactMatch()],
    );
    const name = reward.rewardName!;
    assert.deepEqual(batch.groups[0]!.totals, [1, null, 1], name);
    assert.equal(batch.groups[0]!.completions[1]!.excluded, true);
    assert.deepEqual(batch.groups[0]!.completions[1]!.rewards[0], { name, score: null, error: detail });
    assert.equal(batch.excluded, 1);
    assert.deepEqual(batch.failureCounts, { [name]: 1, exactMatch: 0 });
    assert.equal(batch.failures.length, 1);
    assert.deepEqual(
      { ...batch.failures[0], message: undefined },
      { sampleId: 's42', group: 0, completion: 1, reward: name, kind, action: 'excluded', message: undefined },
    );
    assert.equal(
      batch.messages[0],
      `reward "${name}" on sample s42 (group 0, completion 1): ${detail}; completion excluded`,
    );
  }
});

test('a configured fallback scores the failed reward instead of excluding — recorded all the same', async () => {
  const messages: string[] = [];
  const batch = await scoreGroups(
    [{ sample: sample('s1'), completions: ['good', 'bad'] }],
    { n: { reward: nan, weight: 2 }, t: throws, e: exactMatch() },
    { onError: { fallback: -1 }, onMessage: (m) => messages.push(m) },
  );
  assert.deepEqual(batch.groups[0]!.totals, [2 + 1 + 0, -2 - 1 + 0]);
  assert.equal(batch.excluded, 0);
  assert.deepEqual(batch.failureCounts, { n: 1, t: 1, e: 0 });
  assert.deepEqual(batch.groups[0]!.completions[1]!.rewards[0], { name: 'n', score: -1, error: 'returned NaN' });
  assert.deepEqual(messages.sort(), [
    'reward "n" on sample s1 (group 0, completion 1): returned NaN; used fallback -1',
    'reward "t" on sample s1 (group 0, completion 1): threw Error: cannot parse; used fallback -1',
  ]);
  // Per-reward policy overrides the batch's.
  const mixed = await scoreGroups([{ sample: sample('s1'), completions: ['bad'] }], {
    n: { reward: nan, onError: { fallback: 0 } },
    t: throws,
  });
  assert.deepEqual(mixed.groups[0]!.totals, [null]);
  assert.deepEqual(
    mixed.failures.map((f) => f.action),
    ['fallback', 'excluded'],
  );
});

test('a reward that recovered with its own fallback (breakdown.error) is counted and reported', async () => {
  const recovering = defineReward('judge', () => ({
    score: 0,
    parts: { fallback: 1 },
    error: 'endpoint down; used fallback score 0',
  }));
  const batch = await scoreGroups([{ sample: sample('s5'), completions: ['x'] }], [recovering]);
  assert.deepEqual(batch.groups[0]!.totals, [0]);
  assert.deepEqual(batch.failureCounts, { judge: 1 });
  assert.equal(batch.failures[0]!.action, 'recovered');
  assert.equal(
    batch.messages[0],
    'reward "judge" on sample s5 (group 0, completion 0): endpoint down; used fallback score 0',
  );
  assert.equal(batch.groups[0]!.completions[0]!.rewards[0]!.error, 'endpoint down; used fallback score 0');
});

test('completions whose generation failed are excluded and reported, not scored', async () => {
  let calls = 0;
  const count = defineReward('count', () => {
    calls++;
    return 1;
  });
  const batch = await scoreGroups(
    [{ sample: sample('s3'), completions: [{ text: '', finishReason: 'error', error: 'HTTP 503' }, '2'] }],
    [count],
  );
  assert.equal(calls, 1);
  assert.deepEqual(batch.groups[0]!.totals, [null, 1]);
  assert.equal(
    batch.messages[0],
    'sample s3 (group 0, completion 0): generation failed (HTTP 503); completion excluded',
  );
});

test('async rewards run concurrently up to the limit', async () => {
  let inFlight = 0,
    peak = 0;
  const slow = defineReward('slow', async () => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((r) => setTimeout(r, 20));
    inFlight--;
    return 1;
  });
  const groups = Array.from({ length: 4 }, (_, i) => ({ sample: sample(`s${i}`), completions: ['a', 'b', 'c', 'd'] }));
  const batch = await scoreGroups(groups, [slow], { concurrency: 8 });
  assert.equal(peak, 8);
  assert.deepEqual(
    batch.groups.map((g) => g.totals),
    Array(4).fill([1, 1, 1, 1]),
  );
});

test("abort stops the batch with the signal's reason", async () => {
  const ac = new AbortController();
  let calls = 0;
  // The second reward call stops the batch (an event of the run, not a clock).
  const slow = defineReward('slow', async () => {
    if (++calls === 2) ac.abort(new Error('stop now'));
    await new Promise((r) => setTimeout(r, 20));
    return 1;
  });
  const p = scoreGroups(
    Array.from({ length: 10 }, (_, i) => ({ sample: sample(`s${i}`), completions: ['a', 'b'] })),
    [slow],
    { concurrency: 1, signal: ac.signal },
  );
  await assert.rejects(p, /stop now/);
  assert.ok(calls < 20, `stopped before every reward ran (${calls} calls)`);
});

test('invalid arguments are rejected with exact messages', async () => {
  await assert.rejects(scoreGroups('x' as never, [exactMatch()]), {
    message: 'Expected an array of {sample, completions} for groups but received "x" of type string',
  });
  await assert.rejects(scoreGroups([{ sample: sample('a'), completions: 'x' as never }], [exactMatch()]), {
    message: 'Expected an array for groups[0].completions (sample a) but received "x" of type string',
  });
  await assert.rejects(scoreGroups([], []), { message: 'Expected at least one reward for rewards but received none' });
  await assert.rejects(scoreGroups([], [exactMatch(), exactMatch()]), /"exactMatch" appears twice/);
  await assert.rejects(scoreGroups([], [exactMatch()], { onError: 'skip' as never }), {
    message: 'Expected "exclude" or { fallback: number } for onError but received "skip" of type string',
  });
  await assert.rejects(scoreGroups([], { a: { reward: exactMatch(), weight: Infinity } }), {
    message: 'Expected finite number for rewards.a.weight but received Infinity of type number',
  });
});
