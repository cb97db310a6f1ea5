/**
 * Composing rewards: a weighted sum, a gate, a maximum — and any plain function, since a
 * composition is itself a {@link RewardFn}. Compositions keep every component's score and parts
 * (as `name` and `name.part`), so the table shows why. A component that throws or returns a
 * non-finite value makes the composition throw a {@link RewardValueError} naming that component;
 * the runner then records it against the sample.
 */
import type { VqaSample } from '../data/types.js';
import { describeValue, expectNumber } from '../util/validate.js';
import {
  checkRewardValue,
  defineReward,
  isPromiseLike,
  rewardName,
  RewardValueError,
  whenAll,
  whenDone,
} from './core.js';
import type { RewardBreakdown, RewardContext, RewardFn, RewardValue } from './types.js';

/** A component of a composition: a reward, or a reward with a weight and/or a name. */
export type Component = RewardFn | { reward: RewardFn; weight?: number; name?: string };
/** Components listed, or keyed by the name they appear under. */
export type Components =
  | readonly Component[]
  | Record<string, RewardFn | [RewardFn, number] | { reward: RewardFn; weight?: number }>;

interface Resolved {
  name: string;
  reward: RewardFn;
  weight: number;
}

function resolve(components: Components, what: string): Resolved[] {
  const out: Resolved[] = [];
  const add = (name: string | undefined, c: unknown, weight: unknown, where: string) => {
    if (typeof c !== 'function')
      throw new TypeError(`Expected a reward function for ${where} but received ${describeValue(c)}`);
    const w = weight === undefined ? 1 : expectNumber(`${where}.weight`, weight);
    out.push({ name: name ?? rewardName(c as RewardFn), reward: c as RewardFn, weight: w });
  };
  if (Array.isArray(components)) {
    components.forEach((c: Component, i) => {
      if (typeof c === 'function') add(undefined, c, undefined, `${what}[${i}]`);
      else if (c && typeof c === 'object') add(c.name, c.reward, c.weight, `${what}[${i}]`);
      else
        throw new TypeError(
          `Expected a reward function or {reward, weight} for ${what}[${i}] but received ${describeValue(c)}`,
        );
    });
  } else if (components && typeof components === 'object') {
    for (const [name, c] of Object.entries(components)) {
      if (Array.isArray(c)) add(name, c[0], c[1], `${what}.${name}`);
      else if (typeof c === 'function') add(name, c, undefined, `${what}.${name}`);
      else if (c && typeof c === 'object') add(name, c.reward, c.weight, `${what}.${name}`);
      else throw new TypeError(`Expected a reward function for ${what}.${name} but received ${describeValue(c)}`);
    }
  } else {
    throw new TypeError(`Expected an array or object of rewards for ${what} but received ${describeValue(components)}`);
  }
  if (out.length === 0) throw new TypeError(`Expected at least one reward for ${what} but received none`);
  const seen = new Set<string>();
  for (const r of out) {
    if (seen.has(r.name))
      throw new TypeError(
        `Expected distinct names for the rewards of ${what} but "${r.name}" appears twice; name them ({name: reward} or {reward, name})`,
      );
    seen.add(r.name);
  }
  return out;
}

/** Call a component, checking its value; a failure is rethrown naming the component's path. */
function run(
  c: Resolved,
  owner: string,
  sample: VqaSample,
  completion: string,
  ctx: RewardContext,
): RewardBreakdown | Promise<RewardBreakdown> {
  const own = rewardName(c.reward);
  const fail = (err: unknown): never => {
    if (err instanceof RewardValueError) {
      // Keep the path inside nested compositions: weighted.accuracy.format, not just weighted.accuracy.
      const inner = err.reward === own || err.reward.startsWith(`${own}.`) ? err.reward.slice(own.length) : '';
      throw new RewardValueError(`${owner}.${c.name}${inner}`, err.problem, err.message);
    }
    throw new RewardValueError(
      `${owner}.${c.name}`,
      'threw',
      `threw: ${err instanceof Error ? err.message : String(err)}`,
    );
  };
  let v: RewardValue | Promise<RewardValue>;
  try {
    v = c.reward(sample, completion, ctx);
  } catch (err) {
    return fail(err);
  }
  if (isPromiseLike(v))
    return Promise.resolve(v)
      .then((x) => checkRewardValue(x, own))
      .catch(fail);
  try {
    return checkRewardValue(v, own);
  } catch (err) {
    return fail(err);
  }
}

function collect(into: Record<string, number>, name: string, b: RewardBreakdown) {
  into[name] = b.score;
  if (b.parts) for (const [k, v] of Object.entries(b.parts)) into[`${name}.${k}`] = v;
}

function notes(rs: Resolved[], bs: RewardBreakdown[], key: 'note' | 'error'): string | undefined {
  const list = bs.map((b, i) => (b[key] ? `${rs[i]!.name}: ${b[key]}` : undefined)).filter(Boolean);
  return list.length ? list.join('; ') : undefined;
}

function breakdown(
  score: number,
  parts: Record<string, number>,
  rs: Resolved[],
  bs: RewardBreakdown[],
): RewardBreakdown {
  const out: RewardBreakdown = { score, parts };
  const note = notes(rs, bs, 'note');
  const error = notes(rs, bs, 'error');
  if (note) out.note = note;
  if (error) out.error = error;
  return out;
}

/**
 * Σ weight × score over the components. Parts: each component's score under its name, and its
 * parts as `name.part`.
 *
 * @example
 * weighted({ accuracy: vqaAccuracy(), brevity: [brevity(), 0.5] })
 * weighted([vqaAccuracy(), { reward: format(), weight: 0.2 }])
 */
export function weighted(components: Components, name = 'weighted'): RewardFn {
  const rs = resolve(components, name);
  return defineReward(name, (sample, completion, ctx) =>
    whenAll(
      rs.map((c) => run(c, name, sample, completion, ctx)),
      (bs) => {
        let score = 0;
        const parts: Record<string, number> = {};
        bs.forEach((b, i) => {
          score += rs[i]!.weight * b.score;
          collect(parts, rs[i]!.name, b);
        });
        return breakdown(score, parts, rs, bs);
      },
    ),
  );
}

/**
 * The best of the components' (weighted) scores. Parts: every component's score, and `argmax`
 * (the index of the component chosen, first on ties).
 */
export function max(components: Components, name = 'max'): RewardFn {
  const rs = resolve(components, name);
  return defineReward(name, (sample, completion, ctx) =>
    whenAll(
      rs.map((c) => run(c, name, sample, completion, ctx)),
      (bs) => {
        let best = -Infinity,
          argmax = 0;
        const parts: Record<string, number> = {};
        bs.forEach((b, i) => {
          const s = rs[i]!.weight * b.score;
          if (s > best) {
            best = s;
            argmax = i;
          }
          collect(parts, rs[i]!.name, b);
        });
        parts.argmax = argmax;
        return breakdown(best, parts, rs, bs);
      },
    ),
  );
}

/** A condition of a gate: true lets the completion through. */
export type GateCondition = (
  sample: VqaSample,
  completion: string,
  context: RewardContext,
) => boolean | Promise<boolean>;

/**
 * `then` when the condition holds, else `otherwise` (a reward, or a constant; default 0). The
 * choice is recorded: part `gate` is 1 when open, 0 when closed, and a closed gate says so in
 * `note`, so its score is never an unexplained 0.
 *
 * @example
 * gate((s) => s.answerType === 'number', numeric(), vqaAccuracy())
 * gate(passes(format()), vqaAccuracy())   // accuracy only for well-formed completions
 */
export function gate(
  condition: GateCondition,
  then: RewardFn,
  otherwise: RewardFn | number = 0,
  name = 'gate',
): RewardFn {
  if (typeof condition !== 'function')
    throw new TypeError(`Expected function for condition but received ${describeValue(condition)}`);
  const thenR = resolve([then], name)[0]!;
  const elseR = typeof otherwise === 'number' ? expectNumber('otherwise', otherwise) : resolve([otherwise], name)[0]!;
  return defineReward(name, (sample, completion, ctx) => {
    let open: boolean | Promise<boolean>;
    try {
      open = condition(sample, completion, ctx);
    } catch (err) {
      throw new RewardValueError(
        `${name}.condition`,
        'threw',
        `threw: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    return whenDone(open, (isOpen) => {
      if (typeof isOpen !== 'boolean')
        throw new RewardValueError(
          `${name}.condition`,
          'not-a-number',
          `returned ${describeValue(isOpen)}, not a boolean`,
        );
      const chosen = isOpen ? thenR : elseR;
      if (typeof chosen === 'number')
        return { score: chosen, parts: { gate: 0 }, note: `${name} closed: scored ${chosen}` } as RewardBreakdown;
      return whenDone(run(chosen, name, sample, completion, ctx), (b) => {
        const parts: Record<string, number> = { gate: isOpen ? 1 : 0 };
        collect(parts, chosen.name, b);
        const out: RewardBreakdown = { score: b.score, parts };
        const note = [isOpen ? undefined : `${name} closed`, b.note].filter(Boolean).join('; ');
        if (note) out.note = note;
        if (b.error) out.error = b.error;
        return out;
      });
    });
  });
}

/** A gate condition from a reward: true when its score is at least `threshold` (default 0). */
export function passes(reward: RewardFn, threshold = 0): GateCondition {
  const name = rewardName(reward);
  return (sample, completion, ctx) =>
    whenDone(reward(sample, completion, ctx), (v) => checkRewardValue(v, name).score >= threshold) as
      | boolean
      | Promise<boolean>;
}
