/**
 * Group-relative advantages. Rewards come as groups (one per prompt, the G completions of it);
 * one advantage per completion, shared by all its tokens (outcome supervision).
 */
import type { AdvantageEstimator, KlEstimator, RewardScaling } from './config.js';

export interface AdvantageOptions {
  estimator: AdvantageEstimator;
  scale: RewardScaling;
  /** ε added to the std before dividing. */
  epsilon: number;
}

function mean(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** Unbiased sample std (n − 1), as torch.std; 0 for fewer than two values. */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) * (x - m);
  return Math.sqrt(s / (xs.length - 1));
}

/**
 * Advantages per group. Groups may differ in size (completions whose reward failed are dropped
 * before this); a group of one completion gets advantage 0 (it has nothing to compare with).
 *
 * - grpo:    A_i = r_i − mean(r)
 * - dr_grpo: A_i = r_i − mean(r)                    (same baseline; the config forces scale 'none')
 * - rloo:    A_i = r_i − mean_{j≠i} r_j = n/(n−1) · (r_i − mean(r))
 *
 * then divided by std + ε: the group's std ('group'), the std of all rewards of the batch
 * ('batch'), or not at all ('none').
 */
export function computeAdvantages(groups: readonly (readonly number[])[], options: AdvantageOptions): number[][] {
  for (const [g, rewards] of groups.entries()) {
    for (const [i, r] of rewards.entries()) {
      if (!Number.isFinite(r))
        throw new Error(
          `reward of completion ${i} in group ${g} is ${r}; drop failed completions before computing advantages`,
        );
    }
  }
  const batchStd = options.scale === 'batch' ? sampleStd(groups.flat()) : 0;
  return groups.map((rewards) => {
    const n = rewards.length;
    if (n < 2) return rewards.map(() => 0);
    const m = mean(rewards);
    const centred = rewards.map((r) => (options.estimator === 'rloo' ? (n / (n - 1)) * (r - m) : r - m));
    const std = options.scale === 'group' ? sampleStd(rewards) : options.scale === 'batch' ? batchStd : 0;
    if (options.scale === 'none') return centred;
    return centred.map((a) => a / (std + options.epsilon));
  });
}

/** True when all rewards of a group are equal (every advantage is 0: the group teaches nothing). */
export function isZeroVariance(rewards: readonly number[]): boolean {
  return rewards.every((r) => r === rewards[0]);
}

/**
 * Per-token KL estimate between the policy (log-prob `lp`) and the reference (`ref`), with
 * d = ref − lp: k1 = −d, k2 = d²/2, k3 = eᵈ − d − 1. Returns the value and its derivative by lp.
 */
export function klTerm(estimator: KlEstimator, lp: number, ref: number): { value: number; dLp: number } {
  const d = ref - lp;
  switch (estimator) {
    case 'k1':
      return { value: -d, dLp: 1 };
    case 'k2':
      return { value: 0.5 * d * d, dLp: -d };
    case 'k3': {
      const e = Math.exp(d);
      return { value: e - d - 1, dLp: 1 - e };
    }
    default:
      throw new Error(`Unknown KL estimator: ${String(estimator)}`);
  }
}

/**
 * KL in the reward: each completion's reward minus β · Σ_t KL_t between the rollout policy and
 * the reference (verl's use_kl_in_reward, summed over tokens as its GRPO outcome reward is).
 */
export function klPenalizedRewards(
  rewards: readonly number[],
  rolloutLogprobs: readonly ArrayLike<number>[],
  refLogprobs: readonly ArrayLike<number>[],
  beta: number,
  estimator: KlEstimator,
): { rewards: number[]; klSums: number[] } {
  const klSums = rewards.map((_, i) => {
    const lp = rolloutLogprobs[i]!,
      ref = refLogprobs[i]!;
    if (lp.length !== ref.length)
      throw new Error(`completion ${i}: ${lp.length} log-probs but ${ref.length} reference log-probs`);
    let s = 0;
    for (let t = 0; t < lp.length; t++) s += klTerm(estimator, lp[t]!, ref[t]!).value;
    return s;
  });
  return { rewards: rewards.map((r, i) => r - beta * klSums[i]!), klSums };
}
