/**
 * Scoring completions with reward functions for the trainer: all calls run concurrently; a
 * reward that throws, or returns NaN/Infinity or a non-number, marks that completion as failed
 * (with the sample id and the reward's name) and either excludes it from its group or gives it a
 * configured fallback score. A failure never fails the batch and is never a silent 0.
 */
import type { VqaSample } from '../data/types.js';
import type { RewardContext, RewardFn } from '../reward/types.js';

export interface WeightedReward {
  fn: RewardFn;
  /** Multiplies the score in the total (TRL reward_weights). Default 1. */
  weight?: number;
  /** Display name; default fn.rewardName or fn.name. */
  name?: string;
}

export type RewardInput = RewardFn | WeightedReward;

export interface RewardFailurePolicy {
  /** 'exclude': drop the completion from its group (default); 'fallback': score it `fallback`. */
  onFailure: 'exclude' | 'fallback';
  fallback?: number;
}

export interface ScoredCompletion {
  /** Weighted total; NaN when excluded after a failure. */
  score: number;
  /** Each reward's score under its name, plus the named parts rewards report (prefixed "name.part"). */
  parts: Record<string, number>;
  /** Messages of the rewards that failed on this completion. */
  errors: string[];
}

export interface ScoreItem {
  sample: VqaSample;
  completion: string;
  context: RewardContext;
}

export function rewardName(r: RewardInput, i: number): string {
  const fn = typeof r === 'function' ? r : r.fn;
  return (typeof r === 'function' ? undefined : r.name) ?? fn.rewardName ?? (fn.name || `reward${i}`);
}

function normalise(value: unknown): { score: number; parts?: Record<string, number> } {
  if (typeof value === 'number') return { score: value };
  if (value && typeof value === 'object' && typeof (value as { score?: unknown }).score === 'number') {
    const v = value as { score: number; parts?: Record<string, number> };
    return { score: v.score, parts: v.parts };
  }
  return { score: NaN };
}

export async function scoreCompletions(items: readonly ScoreItem[], rewards: readonly RewardInput[], policy: RewardFailurePolicy): Promise<ScoredCompletion[]> {
  if (rewards.length === 0) throw new Error('no reward functions: give the trainer at least one (e.g. vqaAccuracy)');
  const names = rewards.map(rewardName);
  return Promise.all(items.map(async (item) => {
    // Results land in reward order (not completion order), so totals are summed deterministically.
    const results = await Promise.all(rewards.map(async (r, k): Promise<{ score: number; parts?: Record<string, number> } | string> => {
      const fn = typeof r === 'function' ? r : r.fn;
      let value: unknown;
      try {
        value = await fn(item.sample, item.completion, item.context);
      } catch (err) {
        return `reward "${names[k]}" threw on sample ${item.sample.id}: ${(err as Error)?.message ?? String(err)}`;
      }
      const n = normalise(value);
      if (!Number.isFinite(n.score)) {
        const shown = typeof value === 'number' ? String(value) : (JSON.stringify(value) ?? String(value));
        return `reward "${names[k]}" returned ${shown} on sample ${item.sample.id} (expected a finite number or {score, parts})`;
      }
      return n;
    }));
    const parts: Record<string, number> = {};
    const errors: string[] = [];
    let total = 0;
    results.forEach((res, k) => {
      if (typeof res === 'string') { errors.push(res); return; }
      const weight = typeof rewards[k] === 'function' ? 1 : ((rewards[k] as WeightedReward).weight ?? 1);
      parts[names[k]!] = res.score;
      if (res.parts) for (const [p, v] of Object.entries(res.parts)) if (typeof v === 'number') parts[`${names[k]}.${p}`] = v;
      total += weight * res.score;
    });
    if (errors.length > 0) {
      return { score: policy.onFailure === 'fallback' ? (policy.fallback ?? 0) : NaN, parts, errors };
    }
    return { score: total, parts, errors };
  }));
}
