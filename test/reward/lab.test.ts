/** The reward lab: the table payload, disagreements and statistics. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import type { RewardTablePayload } from '../../src/display/types.js';
import type { Completion, Policy, SamplingOptions } from '../../src/rollout/types.js';
import { exactMatch, numeric, similarity, vqaAccuracy } from '../../src/reward/basic.js';
import { defineReward } from '../../src/reward/core.js';
import { completionsFrom, pearson, rewardLab } from '../../src/display/reward-lab.js';

const dogs: VqaSample = {
  id: 'q1',
  imagePath: '/1.jpg',
  question: 'How many dogs?',
  answer: '2',
  answers: ['2', '2', '2', 'two', '2', '2', '3', '2', '2', '2'],
};
const color: VqaSample = {
  id: 'q2',
  imagePath: '/2.jpg',
  question: 'What color is the car?',
  answer: 'red',
  answers: Array(10).fill('red'),
};

test('the table has the display payload shape, one row per completion, grouped by sample', async () => {
  const table = await rewardLab(
    [
      { sample: dogs, completions: ['2', 'two', 'There are two dogs.', '3'] },
      { sample: color, completions: ['red', 'Red', 'dark red'] },
    ],
    { vqa: vqaAccuracy(), exact: exactMatch(), sim: similarity() },
  );
  assert.deepEqual(table.rewards, ['vqa', 'exact', 'sim']);
  assert.equal(table.rows.length, 7);
  assert.deepEqual(
    table.rows.map((r) => r.groupId),
    ['0:q1', '0:q1', '0:q1', '0:q1', '1:q2', '1:q2', '1:q2'],
  );
  assert.deepEqual(table.rows[5]!.scores, { vqa: 0, exact: 1, sim: 1 }); // 'Red' against ten 'red': the official metric does not normalise
  assert.deepEqual(table.rows[0]!.parts!.vqa, { matches: 9, normalized: 1, answers: 10 }); // 'two' normalises to '2'
  const json = JSON.parse(JSON.stringify(table)) as RewardTablePayload;
  assert.deepEqual(Object.keys(json).sort(), ['rewards', 'rows', 'stats']);
  assert.deepEqual(Object.keys(json.stats).sort(), ['correlation', 'mean', 'std', 'zeroVarianceGroupFraction']);
  assert.deepEqual(Object.keys(json.rows[0]!).sort(), [
    'completion',
    'disagreement',
    'groupId',
    'parts',
    'question',
    'sampleId',
    'scores',
  ]);
  assert.match(table.toText(), /^sample\s+completion\s+vqa\s+exact\s+sim\s+disagree$/m);
  // The display contract's check: every statistic a finite number, correlations finite or null.
  for (const rec of [json.stats.mean, json.stats.std, json.stats.zeroVarianceGroupFraction])
    for (const v of Object.values(rec)) assert.ok(Number.isFinite(v));
  for (const row of json.stats.correlation) for (const v of row) assert.ok(v === null || Number.isFinite(v));
  for (const row of json.rows) assert.ok(Number.isFinite(row.disagreement));
});

test('statistics: mean, population std, Pearson correlation, zero-variance groups', async () => {
  const a = defineReward('a', (_s: VqaSample, c: string) => Number(c));
  const b = defineReward('b', (_s: VqaSample, c: string) => 2 * Number(c) + 1);
  const flip = defineReward('flip', (_s: VqaSample, c: string) => -Number(c));
  const flat = defineReward('flat', () => 0.5);
  const table = await rewardLab(
    [
      { sample: dogs, completions: ['0', '1', '2'] },
      { sample: color, completions: ['3', '3'] },
    ],
    [a, b, flip, flat],
  );
  assert.equal(table.stats.mean.a, 9 / 5);
  assert.equal(table.mean('a'), 9 / 5);
  assert.ok(
    Math.abs(
      table.stats.std.a! - Math.sqrt(((0 - 1.8) ** 2 + (1 - 1.8) ** 2 + (2 - 1.8) ** 2 + 2 * (3 - 1.8) ** 2) / 5),
    ) < 1e-12,
  );
  assert.equal(table.correlation('a', 'b'), 1);
  assert.equal(table.correlation('a', 'flip'), -1);
  assert.equal(table.correlation('a', 'flat'), null, 'undefined for a constant reward');
  assert.deepEqual(table.stats.correlation[0], [1, 1, -1, null]);
  assert.deepEqual(table.stats.correlation[3], [null, null, null, null]);
  // Group 1 ties on every reward; group 0 ties only on 'flat'.
  assert.deepEqual(table.stats.zeroVarianceGroupFraction, { a: 0.5, b: 0.5, flip: 0.5, flat: 1 });
  assert.deepEqual(table.zeroVarianceGroups('a'), ['1:q2']);
  assert.throws(() => table.mean('nope'), /Expected one of "a", "b", "flip", "flat" for reward but received "nope"/);
});

test('disagreement: spread of min-max normalised scores; rows sorted by it', async () => {
  const up = defineReward('up', (_s: VqaSample, c: string) => Number(c));
  const down = defineReward('down', (_s: VqaSample, c: string) => 10 - 10 * Number(c));
  const table = await rewardLab([{ sample: dogs, completions: ['0', '0.5', '1'] }], [up, down]);
  assert.deepEqual(
    table.rows.map((r) => r.disagreement),
    [1, 0, 1],
  );
  assert.deepEqual(
    table.disagreements(0.5).map((r) => r.completion),
    ['0', '1'],
  );
  assert.deepEqual(table.disagreements(0).length, 3);
});

test('failed rewards show as null scores with the reason, and are left out of the statistics', async () => {
  const table = await rewardLab(
    [
      { sample: color, completions: ['red', 'seven'] },
      { sample: dogs, completions: ['two', 'three'] },
    ],
    { num: numeric(), exact: exactMatch() },
  );
  assert.deepEqual(table.column('num'), [null, null, 1, 0]);
  assert.match(table.rows[0]!.errors!.num!, /the reference answer of sample q2 \("red"\) states no number/);
  assert.equal(table.mean('num'), 0.5);
  assert.equal(table.failures.length, 2);
  assert.equal(table.stats.zeroVarianceGroupFraction.num, 0);
  assert.match(table.toText(), /2 reward failure\(s\):/);
  // Undefined statistics (no scores; no group with two scores) are left out of the payload, which
  // holds finite numbers only (the display contract's check); the methods say NaN.
  const none = await rewardLab(
    [
      { sample: color, completions: ['x'] },
      { sample: dogs, completions: ['2'] },
    ],
    { num: numeric() },
  );
  assert.ok(Number.isNaN(none.mean('num')) === false && none.mean('num') === 1);
  assert.ok(Number.isNaN(none.zeroVarianceFraction('num')));
  assert.deepEqual(none.stats.zeroVarianceGroupFraction, {});
  const empty = await rewardLab([{ sample: color, completions: ['x'] }], { num: numeric() });
  assert.ok(Number.isNaN(empty.mean('num')));
  assert.deepEqual(JSON.parse(JSON.stringify(empty)).stats, {
    mean: {},
    std: {},
    correlation: [[null]],
    zeroVarianceGroupFraction: {},
  });
});

test('completions from any Policy, with a failing generation reported rather than dropped', async () => {
  class CountingPolicy implements Policy {
    readonly name = 'test:counting';
    async generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]> {
      if (sample.id === 'q2') throw new Error('server unavailable');
      return Array.from({ length: options.n }, (_, i) => ({ text: String(i + 1), finishReason: 'stop' as const }));
    }
  }
  const groups = await completionsFrom(new CountingPolicy(), [dogs, color], { n: 3, temperature: 1, maxTokens: 8 });
  const table = await rewardLab(groups, [exactMatch()]);
  assert.deepEqual(
    table.rows.map((r) => [r.sampleId, r.completion, r.scores.exactMatch]),
    [
      ['q1', '1', 0],
      ['q1', '2', 1],
      ['q1', '3', 0],
      ['q2', '', null],
    ],
  );
  assert.match(table.messages.at(-1)!, /sample q2 \(group 1, completion 0\): generation failed \(server unavailable\)/);
});

test('pearson skips pairs with a null and needs two points', () => {
  assert.equal(pearson([1, 2, null, 3], [2, 4, 100, 6]), 1);
  assert.equal(pearson([1], [1]), null);
});
