/**
 * The reward runner: scores a batch of GRPO groups — one sample and its G completions each — with
 * several rewards, concurrently, and never lets one bad reward call crash the batch or hide as 0.
 *
 * A reward call that throws, or returns NaN, ±Infinity, a non-number or non-finite parts, marks
 * that completion: the failure is counted per reward, described in a message naming the sample id,
 * the completion and the reward, and the completion is either excluded (its total is null) or
 * scored with a configured fallback for that reward. Rewards that recovered on their own with a
 * fallback (an LLM judge whose endpoint failed) are counted and reported the same way.
 *
 * Used by the trainer (advantages from `totals`) and the reward lab (tables from `rewards`).
 */
import type { VqaSample } from '../data/types.js';
import { describeValue, expectInteger, expectNumber } from '../util/validate.js';
import { checkRewardValue, isPromiseLike, rewardName, RewardValueError, type RewardProblem } from './core.js';
import type { RewardBreakdown, RewardContext, RewardFn, RewardScore } from './types.js';

/** What the runner reads of a policy's completion (src/rollout's `Completion` has these fields and more). */
export interface CompletionText {
  text: string;
  finishReason?: string;
  /** Set when the completion failed to generate; it is then excluded and reported. */
  error?: string;
}

/** What to do with a completion when a reward fails on it. */
export type OnRewardError = 'exclude' | { fallback: number };

/** A reward in a set: the function plus its name, weight in the total, and failure policy. */
export interface RewardEntry {
  reward: RewardFn;
  /** Column name (default: the reward's name). */
  name?: string;
  /** Weight in the completion's total (default 1). */
  weight?: number;
  /** Overrides the batch's `onError` for this reward. */
  onError?: OnRewardError;
}

/**
 * Rewards to apply: a list (names from the functions) or an object keyed by column name.
 *
 * @example
 * [vqaAccuracy(), { reward: brevity(), weight: 0.5 }]
 * { accuracy: vqaAccuracy(), judge: { reward: llmJudge(opts), onError: { fallback: 0 } } }
 */
export type RewardSet =
  | readonly (RewardFn | RewardEntry)[]
  | Readonly<Record<string, RewardFn | Omit<RewardEntry, 'name'>>>;

/** One GRPO group: a sample and the completions generated for it. */
export interface GroupInput {
  sample: VqaSample;
  /** Completion texts, or the policy's completions (a completion with `error` is excluded and reported). */
  completions: readonly (string | CompletionText)[];
}

export interface ScoreOptions {
  /** Default policy for failed reward calls: 'exclude' (default) or `{ fallback: score }`. */
  onError?: OnRewardError;
  /** Reward calls in flight at once across the batch (default 32); async rewards may limit themselves further. */
  concurrency?: number;
  /** Training step, passed to rewards in their context. */
  step?: number;
  /** Stops scoring: pending calls are not started and the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called with each failure message as it happens (e.g. a logger); messages are also returned. */
  onMessage?: (message: string) => void;
}

/** One completion's scores. */
export interface ScoredCompletion {
  text: string;
  /** Σ weight × score over the rewards; null when the completion is excluded. */
  total: number | null;
  excluded: boolean;
  /** One entry per reward, in the set's order (display contract shape: score null when it failed). */
  rewards: RewardScore[];
}

export interface ScoredGroup {
  sample: VqaSample;
  completions: ScoredCompletion[];
  /** The completions' totals in order (null = excluded), ready for group-relative advantages. */
  totals: (number | null)[];
}

export type FailureKind = RewardProblem | 'recovered' | 'generation';

/** A failure recorded against one completion. */
export interface RewardFailure {
  sampleId: string;
  group: number;
  completion: number;
  /** The reward's column name ('(generation)' for a completion the policy failed to produce). */
  reward: string;
  kind: FailureKind;
  /** What happened to the completion: excluded, scored with the batch's fallback, or scored by the reward's own fallback. */
  action: 'excluded' | 'fallback' | 'recovered';
  message: string;
}

export interface ScoredBatch {
  groups: ScoredGroup[];
  /** The reward names, in order (the columns). */
  rewards: string[];
  failures: RewardFailure[];
  /** Failures per reward name (including recovered ones). */
  failureCounts: Record<string, number>;
  /** Completions excluded from the batch. */
  excluded: number;
  /** One line per failure, each naming the sample id, the completion and the reward. */
  messages: string[];
}

interface Entry {
  name: string;
  reward: RewardFn;
  weight: number;
  onError: OnRewardError;
}

function checkOnError(name: string, v: unknown): OnRewardError {
  if (v === 'exclude') return v;
  if (typeof v === 'object' && v !== null && 'fallback' in v) {
    expectNumber(`${name}.fallback`, (v as { fallback: unknown }).fallback);
    return v as { fallback: number };
  }
  throw new TypeError(`Expected "exclude" or { fallback: number } for ${name} but received ${describeValue(v)}`);
}

/** Resolve a reward set into named, weighted entries (names must be distinct). */
export function resolveRewardSet(
  rewards: RewardSet,
  defaultOnError: OnRewardError = 'exclude',
): { name: string; reward: RewardFn; weight: number; onError: OnRewardError }[] {
  const out: Entry[] = [];
  const add = (name: string | undefined, e: unknown, where: string) => {
    const entry = typeof e === 'function' ? { reward: e as RewardFn } : (e as Partial<RewardEntry>);
    if (!entry || typeof entry.reward !== 'function')
      throw new TypeError(
        `Expected a reward function or {reward, weight, onError} for ${where} but received ${describeValue(e)}`,
      );
    out.push({
      name: name ?? entry.name ?? rewardName(entry.reward),
      reward: entry.reward,
      weight: entry.weight === undefined ? 1 : expectNumber(`${where}.weight`, entry.weight),
      onError: entry.onError === undefined ? defaultOnError : checkOnError(`${where}.onError`, entry.onError),
    });
  };
  if (Array.isArray(rewards)) rewards.forEach((r, i) => add(undefined, r, `rewards[${i}]`));
  else if (rewards && typeof rewards === 'object')
    for (const [k, r] of Object.entries(rewards)) add(k, r, `rewards.${k}`);
  else throw new TypeError(`Expected an array or object of rewards for rewards but received ${describeValue(rewards)}`);
  if (out.length === 0) throw new TypeError('Expected at least one reward for rewards but received none');
  const seen = new Set<string>();
  for (const e of out) {
    if (seen.has(e.name))
      throw new TypeError(
        `Expected distinct reward names but "${e.name}" appears twice; key them in an object ({ name: reward }) or give { reward, name }`,
      );
    seen.add(e.name);
  }
  return out;
}

/** Run tasks with at most `limit` in flight; a synchronous task finishes before the next starts. */
async function pool(
  count: number,
  limit: number,
  task: (i: number) => void | Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      if (signal?.aborted) throw signal.reason;
      const i = next++;
      const r = task(i);
      if (isPromiseLike(r)) await r;
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

/**
 * Score groups of completions with several rewards.
 *
 * Never throws because of a reward: failures are recorded in the result (see {@link RewardFailure}).
 * It throws only for invalid arguments, or when `signal` aborts.
 *
 * @example
 * const batch = await scoreGroups(
 *   [{ sample, completions: ['two', 'three', '<answer>2</answer>'] }],
 *   { accuracy: vqaAccuracy(), brevity: { reward: brevity(), weight: 0.5 } },
 * );
 * batch.groups[0].totals   // [1, 0, 1]
 * batch.messages           // [] when every reward behaved
 */
export async function scoreGroups(
  groups: readonly GroupInput[],
  rewards: RewardSet,
  options: ScoreOptions = {},
): Promise<ScoredBatch> {
  if (!Array.isArray(groups))
    throw new TypeError(`Expected an array of {sample, completions} for groups but received ${describeValue(groups)}`);
  const defaultOnError = options.onError === undefined ? 'exclude' : checkOnError('onError', options.onError);
  const entries = resolveRewardSet(rewards, defaultOnError);
  const concurrency = options.concurrency === undefined ? 32 : expectInteger('concurrency', options.concurrency, 1);
  const failures: RewardFailure[] = [];
  const messages: string[] = [];
  const failureCounts: Record<string, number> = Object.fromEntries(entries.map((e) => [e.name, 0]));

  // Validate the input shapes up front, naming the group.
  const texts: string[][] = groups.map((g, gi) => {
    if (!g || typeof g !== 'object' || !g.sample || typeof g.sample !== 'object')
      throw new TypeError(`Expected {sample, completions} for groups[${gi}] but received ${describeValue(g)}`);
    if (!Array.isArray(g.completions))
      throw new TypeError(
        `Expected an array for groups[${gi}].completions (sample ${g.sample.id}) but received ${describeValue(g.completions)}`,
      );
    return (g.completions as readonly (string | CompletionText)[]).map((c, ci) => {
      if (typeof c === 'string') return c;
      if (c && typeof c === 'object' && typeof c.text === 'string') return c.text;
      throw new TypeError(
        `Expected a string or {text} for groups[${gi}].completions[${ci}] (sample ${g.sample.id}) but received ${describeValue(c)}`,
      );
    });
  });

  const out: ScoredGroup[] = groups.map((g, gi) => ({
    sample: g.sample,
    completions: texts[gi]!.map((text) => ({
      text,
      total: null,
      excluded: false,
      rewards: entries.map((e) => ({ name: e.name, score: null })),
    })),
    totals: [],
  }));

  const record = (f: RewardFailure) => {
    failures.push(f);
    messages.push(f.message);
    options.onMessage?.(f.message);
  };

  // Completions the policy failed to produce are excluded before any reward runs.
  const skip = new Set<string>();
  groups.forEach((g, gi) =>
    g.completions.forEach((c: string | CompletionText, ci: number) => {
      if (typeof c === 'object' && c.error) {
        skip.add(`${gi}:${ci}`);
        out[gi]!.completions[ci]!.excluded = true;
        record({
          sampleId: g.sample.id,
          group: gi,
          completion: ci,
          reward: '(generation)',
          kind: 'generation',
          action: 'excluded',
          message: `sample ${g.sample.id} (group ${gi}, completion ${ci}): generation failed (${c.error}); completion excluded`,
        });
      }
    }),
  );

  const tasks: [number, number, number][] = [];
  out.forEach((g, gi) =>
    g.completions.forEach((_, ci) => {
      if (!skip.has(`${gi}:${ci}`)) entries.forEach((_e, ri) => tasks.push([gi, ci, ri]));
    }),
  );

  const fail = (gi: number, ci: number, ri: number, kind: FailureKind, detail: string) => {
    const e = entries[ri]!;
    const g = out[gi]!;
    const c = g.completions[ci]!;
    failureCounts[e.name]!++;
    const where = `reward "${e.name}" on sample ${g.sample.id} (group ${gi}, completion ${ci})`;
    if (e.onError === 'exclude') {
      c.excluded = true;
      c.rewards[ri] = { name: e.name, score: null, error: detail };
      record({
        sampleId: g.sample.id,
        group: gi,
        completion: ci,
        reward: e.name,
        kind,
        action: 'excluded',
        message: `${where}: ${detail}; completion excluded`,
      });
    } else {
      c.rewards[ri] = { name: e.name, score: e.onError.fallback, error: detail };
      record({
        sampleId: g.sample.id,
        group: gi,
        completion: ci,
        reward: e.name,
        kind,
        action: 'fallback',
        message: `${where}: ${detail}; used fallback ${e.onError.fallback}`,
      });
    }
  };

  const accept = (gi: number, ci: number, ri: number, value: unknown) => {
    const e = entries[ri]!;
    let b: RewardBreakdown;
    try {
      b = checkRewardValue(value, e.name);
    } catch (err) {
      const v = err as RewardValueError;
      return fail(gi, ci, ri, v.problem, v.message);
    }
    const score: RewardScore = { name: e.name, score: b.score };
    if (b.parts && Object.keys(b.parts).length) score.parts = { ...b.parts };
    if (b.error) {
      score.error = b.error;
      failureCounts[e.name]!++;
      const g = out[gi]!;
      record({
        sampleId: g.sample.id,
        group: gi,
        completion: ci,
        reward: e.name,
        kind: 'recovered',
        action: 'recovered',
        message: `reward "${e.name}" on sample ${g.sample.id} (group ${gi}, completion ${ci}): ${b.error}`,
      });
    }
    out[gi]!.completions[ci]!.rewards[ri] = score;
  };

  const thrown = (gi: number, ci: number, ri: number, err: unknown) => {
    if (options.signal?.aborted) throw options.signal.reason;
    if (err instanceof RewardValueError)
      return fail(gi, ci, ri, err.problem, `${err.reward === entries[ri]!.name ? '' : `${err.reward} `}${err.message}`);
    fail(gi, ci, ri, 'threw', `threw ${err instanceof Error ? `${err.name}: ${err.message}` : describeValue(err)}`);
  };

  await pool(
    tasks.length,
    concurrency,
    (t) => {
      const [gi, ci, ri] = tasks[t]!;
      const e = entries[ri]!;
      const context: RewardContext = { index: ci, group: texts[gi]!, step: options.step, signal: options.signal };
      let v: unknown;
      try {
        v = e.reward(out[gi]!.sample, texts[gi]![ci]!, context);
      } catch (err) {
        return thrown(gi, ci, ri, err);
      }
      if (isPromiseLike(v))
        return Promise.resolve(v).then(
          (x) => accept(gi, ci, ri, x),
          (err) => thrown(gi, ci, ri, err),
        );
      accept(gi, ci, ri, v);
    },
    options.signal,
  );

  let excluded = 0;
  for (const g of out) {
    for (const c of g.completions) {
      if (c.excluded) {
        excluded++;
        c.total = null;
        continue;
      }
      let total = 0;
      c.rewards.forEach((r, ri) => {
        total += entries[ri]!.weight * (r.score as number);
      });
      c.total = total;
    }
    g.totals = g.completions.map((c) => c.total);
  }
  return { groups: out, rewards: entries.map((e) => e.name), failures, failureCounts, excluded, messages };
}
