/**
 * Rewards are plain functions. A reward returns a number, or a score with named parts so that
 * widgets can show why a completion got its score. Async rewards (LLM judges) return promises.
 */
import type { VqaSample } from '../data/types.js';

export interface RewardBreakdown {
  score: number;
  /** Named components, e.g. { accuracy: 1, brevity: -0.1 }. */
  parts?: Record<string, number>;
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

export type RewardFn = ((sample: VqaSample, completion: string, context: RewardContext) => RewardValue | Promise<RewardValue>) & {
  /** Display name; defaults to the function's name. */
  rewardName?: string;
};
