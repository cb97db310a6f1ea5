import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GRPO_DEFAULTS, grpoConfig, needsOldLogprobs } from '../../src/grpo/config.js';
import { learningRateAt } from '../../src/grpo/schedule.js';
import { Rng } from '../../src/util/rng.js';

test('defaults are filled, miniBatchPrompts follows promptsPerStep, the result is frozen', () => {
  const c = grpoConfig({ promptsPerStep: 6 });
  assert.equal(c.miniBatchPrompts, 6);
  assert.equal(c.numGenerations, GRPO_DEFAULTS.numGenerations);
  assert.equal(Object.isFrozen(c), true);
  assert.equal(needsOldLogprobs(c), false);
  assert.equal(needsOldLogprobs(grpoConfig({ promptsPerStep: 6, miniBatchPrompts: 3 })), true);
  assert.equal(needsOldLogprobs(grpoConfig({ numIterations: 2 })), true);
});

test('field errors use the validation message shape', () => {
  assert.throws(() => grpoConfig({ numGenerations: 0 }), {
    message: 'Expected positive integer for numGenerations but received 0 of type number',
  });
  assert.throws(() => grpoConfig({ lossAggregation: 'mean' as never }), {
    message:
      'Expected one of "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm" for lossAggregation but received "mean" of type string',
  });
  assert.throws(() => grpoConfig({ epsilonLow: 1.5 }), {
    message: 'Expected number between 0 and 1 for epsilonLow but received 1.5 of type number',
  });
});

test('unknown fields are refused, with a suggestion for TRL-style spellings', () => {
  assert.throws(() => grpoConfig({ num_generations: 4 } as never), {
    message:
      'unknown GRPO config field "num_generations"; did you mean "numGenerations"? (docs/grpo.md lists the fields)',
  });
});

test('cross-field errors name the fix', () => {
  assert.throws(() => grpoConfig({ numGenerations: 1 }), {
    message:
      'numGenerations is 1, but group-relative advantages need at least 2 completions per prompt; set numGenerations to 2 or more (8 is usual)',
  });
  assert.throws(() => grpoConfig({ advantageEstimator: 'dr_grpo' }), {
    message:
      'advantageEstimator "dr_grpo" does not divide by a std, but scaleRewards is "group"; set scaleRewards: "none" (or use advantageEstimator "grpo" to keep the scaling)',
  });
  assert.throws(() => grpoConfig({ promptsPerStep: 6, miniBatchPrompts: 4 }), {
    message: 'miniBatchPrompts (4) must divide promptsPerStep (6); use one of 1, 2, 3, 6',
  });
  assert.throws(() => grpoConfig({ dualClip: 0.5 }), {
    message: 'dualClip must be greater than 1 (verl uses 3.0) or 0 to disable it, but it is 0.5',
  });
  assert.throws(() => grpoConfig({ klPlacement: 'reward' }), {
    message:
      'klPlacement "reward" with beta 0 adds no KL penalty; set beta > 0 (e.g. 0.04) or leave klPlacement "loss"',
  });
  assert.throws(() => grpoConfig({ temperature: 0 }), /temperature 0 makes all completions of a group identical/);
  assert.throws(
    () => grpoConfig({ lrSchedule: 'cosine', warmupSteps: 10, totalSteps: 10 }),
    /warmupSteps \(10\) must be less than totalSteps \(10\)/,
  );
  assert.throws(
    () => grpoConfig({ dynamicSampling: true, maxSamplingRounds: 1 }),
    /set maxSamplingRounds to 2 or more/,
  );
  assert.doesNotThrow(() =>
    grpoConfig({ advantageEstimator: 'dr_grpo', scaleRewards: 'none', lossAggregation: 'seq-mean-token-sum-norm' }),
  );
});

test('learning rate: linear warmup from 0, then constant or cosine to the floor', () => {
  const o = { learningRate: 1, warmupSteps: 2, totalSteps: 10, schedule: 'cosine' as const, minLrRatio: 0 };
  assert.deepEqual(
    [0, 1, 2].map((s) => learningRateAt(s, o)),
    [0, 0.5, 1],
  );
  assert.ok(Math.abs(learningRateAt(6, o) - 0.5) < 1e-12);
  assert.ok(Math.abs(learningRateAt(10, o)) < 1e-12);
  assert.ok(Math.abs(learningRateAt(20, o)) < 1e-12);
  assert.ok(Math.abs(learningRateAt(6, { ...o, minLrRatio: 0.1 }) - 0.55) < 1e-12);
  assert.equal(learningRateAt(7, { ...o, schedule: 'constant' }), 1);
  assert.equal(learningRateAt(0, { ...o, warmupSteps: 0, schedule: 'constant' }), 1);
});

test('Rng: deterministic per seed, state round-trips, distributions look right', () => {
  const a = new Rng(42),
    b = new Rng(42),
    c = new Rng(43);
  const xs = Array.from({ length: 5 }, () => a.nextU32());
  assert.deepEqual(
    Array.from({ length: 5 }, () => b.nextU32()),
    xs,
  );
  assert.notDeepEqual(
    Array.from({ length: 5 }, () => c.nextU32()),
    xs,
  );
  const saved = a.state();
  const next = [a.uniform(), a.normal(), a.int(10)];
  const r = new Rng(saved);
  assert.deepEqual([r.uniform(), r.normal(), r.int(10)], next);
  const n = 20000,
    g = new Rng(1);
  let s = 0,
    s2 = 0,
    umin = 1,
    umax = 0;
  for (let i = 0; i < n; i++) {
    const v = g.normal();
    s += v;
    s2 += v * v;
    const u = g.uniform();
    umin = Math.min(umin, u);
    umax = Math.max(umax, u);
  }
  assert.ok(Math.abs(s / n) < 0.03, `mean ${s / n}`);
  assert.ok(Math.abs(s2 / n - 1) < 0.05, `var ${s2 / n}`);
  assert.ok(umin >= 0 && umax < 1);
  assert.deepEqual(new Rng(3).shuffle([1, 2, 3, 4, 5]).sort(), [1, 2, 3, 4, 5]);
  assert.throws(() => new Rng(1.5), /Expected integer for seed/);
});
