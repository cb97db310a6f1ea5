/** Naming, calling and checking rewards: the small pieces every other reward module uses. */
import type { VqaSample } from '../data/types.js';
import { describeValue } from '../util/validate.js';
import type { RewardBreakdown, RewardContext, RewardFn, RewardValue } from './types.js';

/** Give a reward function a display name (returns the same function). */
export function defineReward<
  F extends (sample: VqaSample, completion: string, context: RewardContext) => RewardValue | Promise<RewardValue>,
>(name: string, fn: F): F & { rewardName: string } {
  if (typeof name !== 'string' || name.length === 0)
    throw new TypeError(`Expected non-empty string for name but received ${describeValue(name)}`);
  if (typeof fn !== 'function') throw new TypeError(`Expected function for reward but received ${describeValue(fn)}`);
  const named = fn as F & { rewardName: string };
  named.rewardName = name;
  return named;
}

/** The display name of a reward: its `rewardName`, else the function's name, else "reward". */
export function rewardName(fn: RewardFn): string {
  return fn.rewardName ?? (fn.name || 'reward');
}

/** What was wrong with a reward's return value. */
export type RewardProblem = 'threw' | 'nan' | 'infinite' | 'not-a-number' | 'bad-parts';

/** A reward returned something that is not a finite score (or threw). Carries the reward's name. */
export class RewardValueError extends Error {
  constructor(
    readonly reward: string,
    readonly problem: RewardProblem,
    message: string,
  ) {
    super(message);
    this.name = 'RewardValueError';
  }
}

/**
 * Check a reward's return value and normalise it to a breakdown. Throws {@link RewardValueError}
 * for NaN, ±Infinity, non-numbers (including null and strings) and non-finite parts.
 */
export function checkRewardValue(value: unknown, reward: string): RewardBreakdown {
  if (typeof value === 'number') {
    if (Number.isNaN(value)) throw new RewardValueError(reward, 'nan', 'returned NaN');
    if (!Number.isFinite(value)) throw new RewardValueError(reward, 'infinite', `returned ${value}`);
    return { score: value };
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && 'score' in value) {
    const b = value as RewardBreakdown;
    if (typeof b.score !== 'number')
      throw new RewardValueError(reward, 'not-a-number', `returned a score of ${describeValue(b.score)}, not a number`);
    if (Number.isNaN(b.score)) throw new RewardValueError(reward, 'nan', 'returned a score of NaN');
    if (!Number.isFinite(b.score)) throw new RewardValueError(reward, 'infinite', `returned a score of ${b.score}`);
    if (b.parts !== undefined) {
      if (typeof b.parts !== 'object' || b.parts === null || Array.isArray(b.parts)) {
        throw new RewardValueError(
          reward,
          'bad-parts',
          `returned parts that are ${describeValue(b.parts)}, not an object of numbers`,
        );
      }
      for (const [k, v] of Object.entries(b.parts)) {
        if (typeof v !== 'number' || !Number.isFinite(v))
          throw new RewardValueError(
            reward,
            'bad-parts',
            `returned part "${k}" = ${describeValue(v)}, not a finite number`,
          );
      }
    }
    return b;
  }
  throw new RewardValueError(
    reward,
    'not-a-number',
    `returned ${describeValue(value)}, not a number or {score, parts}`,
  );
}

export function isPromiseLike<T>(v: unknown): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/** Call a reward; synchronous rewards stay synchronous (no promise), so batches of cheap rewards are fast. */
export function callReward(
  fn: RewardFn,
  sample: VqaSample,
  completion: string,
  context: RewardContext,
): RewardValue | Promise<RewardValue> {
  return fn(sample, completion, context);
}

/** Apply `f` to several values, awaiting only if some are promises. */
export function whenAll<T, R>(values: (T | PromiseLike<T>)[], f: (resolved: T[]) => R): R | Promise<Awaited<R>> {
  if (values.some(isPromiseLike)) return Promise.all(values).then((v) => f(v as T[])) as Promise<Awaited<R>>;
  return f(values as T[]);
}

/** Then `f` on a value that may be a promise. */
export function whenDone<T, R>(value: T | PromiseLike<T>, f: (resolved: T) => R): R | Promise<Awaited<R>> {
  if (isPromiseLike(value)) return Promise.resolve(value).then(f) as Promise<Awaited<R>>;
  return f(value as T);
}
