import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeAdvantages, isZeroVariance, klPenalizedRewards, klTerm, sampleStd } from '../../src/grpo/advantages.js';

function close(actual: number[][], expected: number[][], tol = 1e-6) {
  assert.equal(actual.length, expected.length);
  actual.forEach((row, g) =>
    row.forEach((v, i) =>
      assert.ok(Math.abs(v - expected[g]![i]!) < tol, `group ${g} item ${i}: ${v} vs ${expected[g]![i]}`),
    ),
  );
}

test('grpo: (r − mean) / (unbiased std + ε) per group', () => {
  // [0,0,1,1]: mean 0.5, std sqrt(1/3) = 0.5773503 → ±0.5/0.5773503 = ±0.8660254.
  close(computeAdvantages([[0, 0, 1, 1]], { estimator: 'grpo', scale: 'group', epsilon: 0 }), [
    [-0.8660254, -0.8660254, 0.8660254, 0.8660254],
  ]);
  // With TRL's ε = 1e-4: 0.5 / 0.5774503 = 0.8658755.
  close(computeAdvantages([[0, 0, 1, 1]], { estimator: 'grpo', scale: 'group', epsilon: 1e-4 }), [
    [-0.8658755, -0.8658755, 0.8658755, 0.8658755],
  ]);
  // A tied group: all zeros (0 / (0 + ε)).
  close(computeAdvantages([[1, 1, 1]], { estimator: 'grpo', scale: 'group', epsilon: 1e-4 }), [[0, 0, 0]]);
});

test('batch scaling divides by the std of all rewards of the step', () => {
  // All rewards [1,0,3,3]: mean 1.75, squared deviations 0.5625+3.0625+1.5625+1.5625 = 6.75, /3 = 2.25, std 1.5.
  close(
    computeAdvantages(
      [
        [1, 0],
        [3, 3],
      ],
      { estimator: 'grpo', scale: 'batch', epsilon: 0 },
    ),
    [
      [0.5 / 1.5, -0.5 / 1.5],
      [0, 0],
    ],
  );
});

test('dr_grpo: r − mean, no std', () => {
  close(
    computeAdvantages(
      [
        [2, 0, 1],
        [5, 5, 8],
      ],
      { estimator: 'dr_grpo', scale: 'none', epsilon: 1e-4 },
    ),
    [
      [1, -1, 0],
      [-1, -1, 2],
    ],
  );
});

test('rloo: r − mean of the others', () => {
  // [1,0,0,0]: 1 − 0 = 1; 0 − 1/3 = −1/3.
  close(computeAdvantages([[1, 0, 0, 0]], { estimator: 'rloo', scale: 'none', epsilon: 0 }), [
    [1, -1 / 3, -1 / 3, -1 / 3],
  ]);
  // Scaled by the group std: std([1,0,0,0]) = sqrt(0.75/3) = 0.5.
  close(computeAdvantages([[1, 0, 0, 0]], { estimator: 'rloo', scale: 'group', epsilon: 0 }), [
    [2, -2 / 3, -2 / 3, -2 / 3],
  ]);
});

test('groups of different sizes, a lone completion gets 0, non-finite rewards are refused', () => {
  close(computeAdvantages([[1], [0, 2]], { estimator: 'grpo', scale: 'none', epsilon: 0 }), [[0], [-1, 1]]);
  assert.throws(() => computeAdvantages([[1, NaN]], { estimator: 'grpo', scale: 'group', epsilon: 0 }), {
    message: 'reward of completion 1 in group 0 is NaN; drop failed completions before computing advantages',
  });
});

test('sampleStd and isZeroVariance', () => {
  assert.equal(sampleStd([2, 4, 4, 4, 5, 5, 7, 9]), Math.sqrt(32 / 7));
  assert.equal(sampleStd([3]), 0);
  assert.equal(isZeroVariance([0.5, 0.5, 0.5]), true);
  assert.equal(isZeroVariance([0.5, 0.5, 1]), false);
});

test('KL estimators: values and derivatives by lp', () => {
  // lp = −1, ref = −1.5 → d = −0.5.
  const k1 = klTerm('k1', -1, -1.5),
    k2 = klTerm('k2', -1, -1.5),
    k3 = klTerm('k3', -1, -1.5);
  assert.ok(Math.abs(k1.value - 0.5) < 1e-12 && k1.dLp === 1);
  assert.ok(Math.abs(k2.value - 0.125) < 1e-12 && Math.abs(k2.dLp - 0.5) < 1e-12);
  assert.ok(Math.abs(k3.value - 0.1065307) < 1e-7, String(k3.value)); // e^−0.5 + 0.5 − 1
  assert.ok(Math.abs(k3.dLp - 0.3934693) < 1e-7, String(k3.dLp)); // 1 − e^−0.5
  assert.equal(klTerm('k3', -2, -2).value, 0);
});

test('KL in the reward subtracts β · Σ_t KL_t', () => {
  const r = klPenalizedRewards([1, 0], [[-1, -1], [-2]], [[-1.5, -1], [-2]], 0.1, 'k1');
  assert.deepEqual(r.klSums, [0.5, 0]);
  assert.ok(Math.abs(r.rewards[0]! - 0.95) < 1e-12);
  assert.equal(r.rewards[1], 0);
});
