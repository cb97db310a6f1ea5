/**
 * Rewards are plain functions. A reward returns a number, or a score with named parts so that
 * widgets can show why a completion got its score. Async rewards (LLM judges) return promises.
 *
 * @example
 * const short: RewardFn = (sample, completion) => (completion.length < 20 ? 1 : 0);
 * const scored: RewardFn = (sample, completion) => ({ score: 0.5, parts: { overlap: 0.5 } });
 */
import type { VqaSample } from '../data/types.js';

export interface RewardBreakdown {
  score: number;
  /** Named components, e.g. { accuracy: 1, brevity: -0.1 }. Finite numbers only. */
  parts?: Record<string, number>;
  /** A short human explanation the parts cannot carry (a judge's reason, why a gate closed). */
  note?: string;
  /**
   * Set when the reward recovered from a failure with a fallback it was configured with (e.g. an
   * LLM judge whose endpoint failed): the failure, recorded. The score is the fallback's. The
   * reward runner counts these like failures, so a fallback is never silent.
   */
  error?: string;
}

export type RewardValue = number | RewardBreakdown;

export interface RewardContext {
  /** Which completion of the group (0..G-1) and the group's other completions. */
  index?: number;
  group?: readonly string[];
  /** Training step, when called by the trainer. */
  step?: number;
  signal?: AbortSignal;
}

export type RewardFn = ((
  sample: VqaSample,
  completion: string,
  context: RewardContext,
) => RewardValue | Promise<RewardValue>) & {
  /** Display name; defaults to the function's name. */
  rewardName?: string;
};

/** A reward known to return a breakdown synchronously (the built-ins); assignable to {@link RewardFn}. */
export type BreakdownReward = ((sample: VqaSample, completion: string, context?: RewardContext) => RewardBreakdown) & {
  rewardName?: string;
};

/** A reward known to return a promise of a breakdown (the LLM judge); assignable to {@link RewardFn}. */
export type AsyncBreakdownReward = ((
  sample: VqaSample,
  completion: string,
  context?: RewardContext,
) => Promise<RewardBreakdown>) & { rewardName?: string };

/** One reward's result for one completion, as the trainer records it and the display shows it. */
export interface RewardScore {
  /** The reward's name, e.g. "vqaAccuracy". */
  name: string;
  /** null when the reward failed for this completion (see `error`). */
  score: number | null;
  /** Named components of the score, e.g. { accuracy: 1, brevity: -0.1 }. */
  parts?: Record<string, number>;
  /** The reward's weight in the total, when the trainer combines several (shown as ×w). */
  weight?: number;
  error?: string;
}
