import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aggregationWeights, grpoLoss, sftLoss, type LossOptions } from '../../src/grpo/loss.js';
import { LOSS_AGGREGATIONS, KL_ESTIMATORS } from '../../src/grpo/config.js';
import { Rng } from '../../src/util/rng.js';

const base: LossOptions = {
  epsilonLow: 0.2,
  epsilonHigh: 0.2,
  dualClip: 0,
  beta: 0,
  klEstimator: 'k3',
  aggregation: 'token-mean',
  maxCompletionLength: 4,
};
const near = (a: number, b: number, tol = 1e-6) => assert.ok(Math.abs(a - b) < tol, `${a} vs ${b}`);

test('PPO clip, A > 0: a ratio below 1 − ε is not clipped (only ratios above 1 + ε are)', () => {
  // ratios e^0.1 = 1.1051709 and e^−0.5 = 0.6065307; both unclipped for A = 1.
  const r = grpoLoss({ logprobs: [[-0.9, -2.5]], oldLogprobs: [[-1, -2]], advantages: [1] }, base);
  near(r.loss, (-1.1051709 - 0.6065307) / 2);
  near(r.gradLogprobs[0]![0]!, -1.1051709 / 2);
  near(r.gradLogprobs[0]![1]!, -0.6065307 / 2);
  assert.equal(r.metrics.clipFractionLow, 0);
  assert.equal(r.metrics.clipFractionHigh, 0);
});

test('PPO clip, A < 0: a ratio below 1 − ε is clipped (loss 0.8, no gradient)', () => {
  const r = grpoLoss({ logprobs: [[-0.9, -2.5]], oldLogprobs: [[-1, -2]], advantages: [-1] }, base);
  near(r.loss, (1.1051709 + 0.8) / 2);
  near(r.gradLogprobs[0]![0]!, 1.1051709 / 2);
  assert.equal(r.gradLogprobs[0]![1], 0);
  assert.equal(r.metrics.clipFractionLow, 0.5);
});

test('clip-higher: ε_high widens the upper bound only', () => {
  // ratio e^0.25 = 1.2840254 with A = 1: clipped at 1.2 (ε_high 0.2) but not at 1.28 → 1.28.
  const r1 = grpoLoss({ logprobs: [[-0.75]], oldLogprobs: [[-1]], advantages: [1] }, base);
  near(r1.loss, -1.2);
  assert.equal(r1.gradLogprobs[0]![0], 0);
  assert.equal(r1.metrics.clipFractionHigh, 1);
  const r2 = grpoLoss({ logprobs: [[-0.75]], oldLogprobs: [[-1]], advantages: [1] }, { ...base, epsilonHigh: 0.3 });
  near(r2.loss, -1.2840254);
  near(r2.gradLogprobs[0]![0]!, -1.2840254);
  assert.equal(r2.metrics.clipFractionHigh, 0);
});

test('dual clip caps the loss of negative advantages at −c·A', () => {
  // ratio e^1.5 = 4.4816891, A = −1: PPO loss 4.48 > c = 3 → 3, no gradient.
  const r = grpoLoss({ logprobs: [[-0.5, -1]], oldLogprobs: [[-2, -1]], advantages: [-1] }, { ...base, dualClip: 3 });
  near(r.loss, (3 + 1) / 2);
  assert.equal(r.gradLogprobs[0]![0], 0);
  near(r.gradLogprobs[0]![1]!, 0.5);
  assert.equal(r.metrics.clipFractionDual, 0.5);
  const off = grpoLoss({ logprobs: [[-0.5]], oldLogprobs: [[-2]], advantages: [-1] }, base);
  near(off.loss, 4.4816891);
});

test('without old log-probs the ratio is 1 and dL/dlp = −A·w', () => {
  const r = grpoLoss({ logprobs: [[-3, -1]], advantages: [0.5] }, base);
  near(r.loss, -0.5);
  assert.deepEqual(Array.from(r.gradLogprobs[0]!), [-0.25, -0.25]);
  assert.equal(r.metrics.ratioMean, 1);
});

test('aggregations on lengths [1, 3] with token losses −1 | 2, 2, 2', () => {
  const batch = { logprobs: [[-1], [-1, -1, -1]], advantages: [1, -2] };
  const expected: Record<string, number> = {
    'token-mean': (-1 + 6) / 4,
    'seq-mean-token-sum': (-1 + 6) / 2,
    'seq-mean-token-mean': (-1 + 2) / 2,
    'seq-mean-token-sum-norm': (-1 / 4 + 6 / 4) / 2,
  };
  for (const aggregation of LOSS_AGGREGATIONS)
    near(grpoLoss(batch, { ...base, aggregation }).loss, expected[aggregation]!);
  assert.deepEqual(aggregationWeights([1, 3], 'seq-mean-token-mean', 4), [0.5, 1 / 6]);
  assert.throws(() => aggregationWeights([5], 'seq-mean-token-sum-norm', 4), /more than maxCompletionLength 4/);
});

test('KL in the loss: β · k3 per token, and its metric', () => {
  // lp −1, ref −1.5: k3 = 0.1065307, dk/dlp = 0.3934693; A = 0 isolates the KL term.
  const r = grpoLoss({ logprobs: [[-1]], refLogprobs: [[-1.5]], advantages: [0] }, { ...base, beta: 0.1 });
  near(r.loss, 0.01065307);
  near(r.gradLogprobs[0]![0]!, 0.03934693);
  near(r.metrics.kl, 0.1065307);
  near(r.metrics.klLoss, 0.01065307);
  assert.throws(
    () => grpoLoss({ logprobs: [[-1]], advantages: [0] }, { ...base, beta: 0.1 }),
    /beta > 0 needs refLogprobs/,
  );
});

test('dL/dlp matches central finite differences of the loss value for every variant', () => {
  const rng = new Rng(7);
  const lengths = [3, 1, 5, 2];
  const mk = (scale: number, offset: number) =>
    lengths.map((n) => Array.from({ length: n }, () => offset + scale * (rng.uniform() - 0.5)));
  const logprobs = mk(1.2, -1.5),
    old = logprobs.map((row) => row.map((v) => v + 0.3 * (rng.uniform() - 0.5)));
  const ref = mk(1.0, -1.5),
    entropy = mk(0.5, 1);
  const advantages = [1.3, -0.7, 0.4, -1.9];
  for (const aggregation of LOSS_AGGREGATIONS) {
    for (const klEstimator of KL_ESTIMATORS) {
      for (const dualClip of [0, 1.05]) {
        const options: LossOptions = {
          epsilonLow: 0.1,
          epsilonHigh: 0.12,
          dualClip,
          beta: 0.05,
          klEstimator,
          aggregation,
          maxCompletionLength: 6,
        };
        const at = (lp: number[][]) =>
          grpoLoss({ logprobs: lp, oldLogprobs: old, refLogprobs: ref, advantages, entropy }, options).loss;
        const { gradLogprobs } = grpoLoss(
          { logprobs, oldLogprobs: old, refLogprobs: ref, advantages, entropy },
          options,
        );
        const h = 1e-6;
        logprobs.forEach((row, i) =>
          row.forEach((_, t) => {
            const plus = logprobs.map((r) => [...r]),
              minus = logprobs.map((r) => [...r]);
            plus[i]![t]! += h;
            minus[i]![t]! -= h;
            const fd = (at(plus) - at(minus)) / (2 * h);
            const g = gradLogprobs[i]![t]!;
            assert.ok(
              Math.abs(fd - g) < 1e-5 + 1e-4 * Math.abs(fd),
              `${aggregation}/${klEstimator}/c=${dualClip} token ${i},${t}: analytic ${g} vs numeric ${fd}`,
            );
          }),
        );
      }
    }
  }
});

test('SFT cross-entropy: −mean lp, dL/dlp = −1/N', () => {
  const r = sftLoss([[-1, -2], [-3]]);
  near(r.loss, 2);
  assert.deepEqual(
    r.gradLogprobs.map((g) => Array.from(g)),
    [[-1 / 3, -1 / 3].map(Math.fround), [Math.fround(-1 / 3)]],
  );
  assert.equal(r.tokens, 3);
});

test('mismatched shapes are named', () => {
  assert.throws(() => grpoLoss({ logprobs: [[-1, -2]], oldLogprobs: [[-1]], advantages: [1] }, base), {
    message: 'completion 0: 2 log-probs but 1 oldLogprobs',
  });
  assert.throws(() => grpoLoss({ logprobs: [[-1]], advantages: [1, 2] }, base), {
    message: '1 completions but 2 advantages',
  });
});

test('sequences left out for a zero advantage still count in the denominators', () => {
  // Forwarded: one token with A = 1 (loss −1). Left out: sequences of 3 and 2 tokens (loss 0).
  const run = (aggregation: LossOptions['aggregation']) =>
    grpoLoss(
      { logprobs: [[-1]], advantages: [1], skippedLengths: [3, 2] },
      { ...base, aggregation, maxCompletionLength: 4 },
    );
  near(run('token-mean').loss, -1 / 6);
  near(run('seq-mean-token-sum').loss, -1 / 3);
  near(run('seq-mean-token-mean').loss, -1 / 3);
  near(run('seq-mean-token-sum-norm').loss, -1 / 12);
  near(run('token-mean').gradLogprobs[0]![0]!, -1 / 6);
  // Same as forwarding them with A = 0.
  near(grpoLoss({ logprobs: [[-1], [-2, -2, -2], [-3, -3]], advantages: [1, 0, 0] }, base).loss, -1 / 6);
});

test('a non-finite log-prob makes the loss non-finite even without old log-probs', () => {
  assert.ok(Number.isNaN(grpoLoss({ logprobs: [[NaN]], advantages: [1] }, base).loss));
});
