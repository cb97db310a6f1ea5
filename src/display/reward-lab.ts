/**
 * The reward lab: score candidate completions of some samples with several rewards and look at
 * where the rewards disagree, how they correlate, and how many GRPO groups they leave without
 * signal. Completions can be typed in or come from any {@link Policy}.
 *
 * The result is a {@link RewardTable}: the display contract's `RewardTablePayload` (rendered by the
 * display layer under MIME `application/vnd.vqalab.rewards.v1+json`) plus methods for a notebook.
 *
 * @example
 * const table = await rewardLab(
 *   [{ sample, completions: ['two', '2', 'There are two dogs.', 'three'] }],
 *   { vqa: vqaAccuracy(), similarity: similarity(), numeric: numeric() },
 * );
 * table.disagreements()          // rows where the rewards disagree most
 * table.correlation('vqa', 'similarity')
 * table.stats.zeroVarianceGroupFraction.vqa
 */
import type { VqaSample } from '../data/types.js';
import type { RewardTablePayload, RewardTableRow } from './types.js';
import type { Policy, SamplingOptions } from '../rollout/types.js';
import { describeValue, expectInteger } from '../util/validate.js';
import {
  scoreGroups,
  type GroupInput,
  type RewardFailure,
  type RewardSet,
  type ScoredBatch,
  type ScoreOptions,
} from '../reward/runner.js';

/** Scores equal within this are ties (a group whose scores all tie teaches GRPO nothing). */
export const TIE_EPSILON = 1e-12;

function meanStd(xs: number[]): { mean: number; std: number } {
  if (xs.length === 0) return { mean: NaN, std: NaN };
  let s = 0;
  for (const x of xs) s += x;
  const mean = s / xs.length;
  let v = 0;
  for (const x of xs) v += (x - mean) ** 2;
  return { mean, std: Math.sqrt(v / xs.length) };
}

/** Pearson correlation of paired values (pairs with a null skipped); null when undefined. */
export function pearson(a: readonly (number | null)[], b: readonly (number | null)[]): number | null {
  const xs: number[] = [],
    ys: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = a[i],
      y = b[i];
    if (x !== null && x !== undefined && y !== null && y !== undefined) {
      xs.push(x);
      ys.push(y);
    }
  }
  if (xs.length < 2) return null;
  const mx = meanStd(xs).mean,
    my = meanStd(ys).mean;
  let sxy = 0,
    sxx = 0,
    syy = 0;
  for (let i = 0; i < xs.length; i++) {
    const dx = xs[i]! - mx,
      dy = ys[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx <= 0 || syy <= 0) return null;
  return Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
}

/**
 * A scored table of (sample, completion) rows × rewards. Its fields are exactly the display
 * contract's {@link RewardTablePayload}; `toJSON()` returns that plain payload.
 */
export class RewardTable implements RewardTablePayload {
  readonly rewards: string[];
  readonly rows: RewardTableRow[];
  readonly stats: RewardTablePayload['stats'];
  /** Reward failures while scoring (each also marks its row's score null, or its fallback). */
  readonly failures: RewardFailure[];
  readonly messages: string[];
  /** The runner's full result (totals, exclusions), for anything the table does not show. */
  readonly batch: ScoredBatch;

  constructor(batch: ScoredBatch) {
    this.batch = batch;
    this.rewards = [...batch.rewards];
    this.failures = batch.failures;
    this.messages = batch.messages;
    const rows: RewardTableRow[] = [];
    batch.groups.forEach((g, gi) => {
      g.completions.forEach((c) => {
        const scores: Record<string, number | null> = {};
        const parts: Record<string, Record<string, number>> = {};
        const errors: Record<string, string> = {};
        for (const r of c.rewards) {
          scores[r.name] = r.score;
          if (r.parts) parts[r.name] = r.parts;
          if (r.error) errors[r.name] = r.error;
        }
        const row: RewardTableRow = {
          sampleId: g.sample.id,
          question: g.sample.question,
          completion: c.text,
          groupId: `${gi}:${g.sample.id}`,
          scores,
          disagreement: 0,
        };
        if (Object.keys(parts).length) row.parts = parts;
        if (Object.keys(errors).length) row.errors = errors;
        rows.push(row);
      });
    });
    // Disagreement: spread of the row's scores after min-max normalising each reward over the table.
    const ranges = new Map(
      this.rewards.map((name) => {
        let lo = Infinity,
          hi = -Infinity;
        for (const r of rows) {
          const x = r.scores[name];
          if (x === null || x === undefined) continue;
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
        return [name, lo <= hi ? ([lo, hi] as const) : undefined] as const;
      }),
    );
    for (const row of rows) {
      const normalised: number[] = [];
      for (const name of this.rewards) {
        const x = row.scores[name],
          range = ranges.get(name);
        if (x === null || x === undefined || !range || range[1] - range[0] <= TIE_EPSILON) continue;
        normalised.push((x - range[0]) / (range[1] - range[0]));
      }
      row.disagreement = normalised.length < 2 ? 0 : Math.max(...normalised) - Math.min(...normalised);
    }
    this.rows = rows;
    const mean: Record<string, number> = {},
      std: Record<string, number> = {},
      zero: Record<string, number> = {};
    // The display contract wants finite numbers: a statistic that is undefined (a reward with no
    // scores, no group with two scores) is left out, and the renderer shows a dash.
    for (const name of this.rewards) {
      const ms = meanStd(this.values(name));
      if (Number.isFinite(ms.mean)) {
        mean[name] = ms.mean;
        std[name] = ms.std;
      }
      const z = this.zeroVarianceFraction(name);
      if (Number.isFinite(z)) zero[name] = z;
    }
    const correlation = this.rewards.map((a) =>
      this.rewards.map((b) =>
        a === b ? (this.values(a).length >= 2 && std[a]! > 0 ? 1 : null) : this.correlation(a, b),
      ),
    );
    this.stats = { mean, std, correlation, zeroVarianceGroupFraction: zero };
  }

  private check(name: string): void {
    if (!this.rewards.includes(name))
      throw new TypeError(
        `Expected one of ${this.rewards.map((r) => JSON.stringify(r)).join(', ')} for reward but received ${describeValue(name)}`,
      );
  }

  /** The reward's score on every row, in row order (null where it failed). */
  column(name: string): (number | null)[] {
    this.check(name);
    return this.rows.map((r) => r.scores[name] ?? null);
  }

  /** The reward's non-null scores. */
  values(name: string): number[] {
    return this.column(name).filter((x): x is number => x !== null);
  }

  /** Mean of the reward's scores (NaN when it has none; then absent from `stats.mean`). */
  mean(name: string): number {
    return meanStd(this.values(name)).mean;
  }

  /** Population standard deviation of the reward's scores. */
  std(name: string): number {
    return meanStd(this.values(name)).std;
  }

  /** Pearson correlation between two rewards over the rows where both scored; null when undefined. */
  correlation(a: string, b: string): number | null {
    return pearson(this.column(a), this.column(b));
  }

  /** Groups (by groupId) in which the reward's scores all tie, among groups with at least 2 scores. */
  zeroVarianceGroups(name: string): string[] {
    this.check(name);
    const byGroup = new Map<string, number[]>();
    for (const r of this.rows) {
      const x = r.scores[name];
      if (x === null || x === undefined) continue;
      const id = r.groupId ?? r.sampleId;
      let list = byGroup.get(id);
      if (!list) byGroup.set(id, (list = []));
      list.push(x);
    }
    const out: string[] = [];
    for (const [id, xs] of byGroup)
      if (xs.length >= 2 && Math.max(...xs) - Math.min(...xs) <= TIE_EPSILON) out.push(id);
    return out;
  }

  /** Fraction of groups (with at least 2 scores) whose scores all tie; NaN when there are no such groups (then absent from `stats`). */
  zeroVarianceFraction(name: string): number {
    this.check(name);
    const counts = new Map<string, number>();
    for (const r of this.rows)
      if (r.scores[name] !== null && r.scores[name] !== undefined)
        counts.set(r.groupId ?? r.sampleId, (counts.get(r.groupId ?? r.sampleId) ?? 0) + 1);
    const eligible = [...counts.values()].filter((n) => n >= 2).length;
    return eligible === 0 ? NaN : this.zeroVarianceGroups(name).length / eligible;
  }

  /** Rows whose disagreement is at least `min` (default 0.5), most disagreeing first. */
  disagreements(min = 0.5): RewardTableRow[] {
    return this.rows.filter((r) => r.disagreement >= min).sort((a, b) => b.disagreement - a.disagreement);
  }

  /** The plain display payload (what the vendor MIME type carries). */
  toJSON(): RewardTablePayload {
    return { rewards: [...this.rewards], rows: this.rows.map((r) => ({ ...r })), stats: this.stats };
  }

  /** A plain-text table, for logs and `text/plain` fallbacks. */
  toText(maxRows = 50): string {
    const f = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(3));
    const clip = (s: string, n: number) => (s.length > n ? s.slice(0, n - 1) + '…' : s).replace(/\s+/g, ' ');
    const head = ['sample', 'completion', ...this.rewards, 'disagree'];
    const body = this.rows
      .slice(0, maxRows)
      .map((r) => [
        clip(r.sampleId, 12),
        clip(r.completion, 32),
        ...this.rewards.map((n) => f(r.scores[n])),
        f(r.disagreement),
      ]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
    const line = (cells: string[]) =>
      cells
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd();
    const lines = [line(head), ...body.map(line)];
    if (this.rows.length > maxRows) lines.push(`… ${this.rows.length - maxRows} more rows`);
    lines.push(
      '',
      line(['', 'mean', ...this.rewards.map((n) => f(this.stats.mean[n])), '']),
      line(['', 'std', ...this.rewards.map((n) => f(this.stats.std[n])), '']),
      line(['', 'zero-variance groups', ...this.rewards.map((n) => f(this.stats.zeroVarianceGroupFraction[n])), '']),
    );
    if (this.messages.length)
      lines.push('', `${this.messages.length} reward failure(s):`, ...this.messages.slice(0, 10).map((m) => `  ${m}`));
    return lines.join('\n');
  }
}

/** Score typed-in (or generated) completions with several rewards and return the table. */
export async function rewardLab(
  groups: readonly GroupInput[],
  rewards: RewardSet,
  options: ScoreOptions = {},
): Promise<RewardTable> {
  return new RewardTable(await scoreGroups(groups, rewards, options));
}

/**
 * Generate completions for the samples with any policy (local engine or OpenAI-compatible server),
 * ready for {@link rewardLab}, keeping the samples' order; `concurrency` samples at a time
 * (default 4). A sample whose generation throws gets one failed completion, which the lab reports
 * instead of dropping the sample silently.
 */
export async function completionsFrom(
  policy: Policy,
  samples: readonly VqaSample[],
  sampling: SamplingOptions,
  { concurrency = 4 } = {},
): Promise<GroupInput[]> {
  if (!policy || typeof policy.generate !== 'function')
    throw new TypeError(`Expected a Policy for policy but received ${describeValue(policy)}`);
  expectInteger('concurrency', concurrency, 1);
  const out: GroupInput[] = new Array(samples.length);
  let next = 0;
  const worker = async () => {
    while (next < samples.length) {
      const i = next++;
      const sample = samples[i]!;
      try {
        out[i] = { sample, completions: await policy.generate(sample, sampling) };
      } catch (err) {
        out[i] = {
          sample,
          completions: [{ text: '', finishReason: 'error', error: err instanceof Error ? err.message : String(err) }],
        };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, samples.length) }, worker));
  return out;
}
