/**
 * From the trainer's step output to the display contract: a metrics point per step, a group view
 * of a rollout group, and a live dashboard fed by `trainer.run({ onStep })`. The trainer stays
 * free of display code; a notebook (or the trainer's run) wires them:
 *
 *   const live = trainingDashboard({ total: 50, decodeToken: (id) => tokenizer.decode([id]) });
 *   await trainer.run({ steps: 50, onStep: live.onStep });
 *   live.finish();
 */
import type { VqaSample } from '../data/types.js';
import type { RolloutGroup, StepOutput } from '../grpo/trainer.js';
import type { StepMetrics } from '../grpo/metrics.js';
import { Dashboard, type DashboardOptions } from './dashboard.js';
import { samplePayload } from './show.js';
import type { GroupCompletion, GroupPayload, MetricsPoint, RewardScore, SamplePayload } from './types.js';

/** Display names of the trainer's per-step numbers (TRL-style, so runs from either read alike). */
const METRIC_NAMES: [keyof StepMetrics, string][] = [
  ['rewardMean', 'reward'], ['rewardStd', 'reward_std'], ['accuracy', 'accuracy'], ['kl', 'kl'], ['entropy', 'entropy'],
  ['clipFractionLow', 'clip_ratio/low_mean'], ['clipFractionHigh', 'clip_ratio/high_mean'], ['completionLength', 'completion_length'],
  ['truncatedFraction', 'truncated_fraction'], ['gradNorm', 'grad_norm'], ['loss', 'loss'], ['learningRate', 'lr'],
  ['zeroVarianceFraction', 'zero_variance_fraction'], ['tokensPerSecond', 'tokens_per_second'], ['stepSeconds', 'step_seconds'],
];

/** One step's metrics as a plot point; non-finite values (no KL without a reference, …) are left out. */
export function metricsPoint(m: StepMetrics): MetricsPoint {
  const point: MetricsPoint = { step: m.step };
  for (const [from, to] of METRIC_NAMES) {
    const v = m[from];
    if (typeof v === 'number' && Number.isFinite(v)) point[to] = v;
  }
  for (const [part, v] of Object.entries(m.rewardParts ?? {})) if (Number.isFinite(v)) point[`reward/${part}`] = v;
  return point;
}

export interface GroupViewOptions {
  step?: number;
  /** Token id → its text, for per-token log-probs on hover (e.g. `(id) => tokenizer.decode([id])`). */
  decodeToken?: (id: number) => string;
  /** Longest image side embedded (default 256). */
  maxSide?: number;
  /** A sample payload already made for this sample (images are the slow part). */
  sample?: SamplePayload;
}

/** A rollout group → the group view payload (reward NaN = excluded → null, errors kept). */
export async function groupPayload(g: RolloutGroup, opts: GroupViewOptions = {}): Promise<GroupPayload> {
  const sample = opts.sample ?? await samplePayload(g.sample, { maxSide: opts.maxSide ?? 256 });
  const completions = g.completions.map((c): GroupCompletion => {
    const rewards: RewardScore[] = Object.entries(c.rewardParts).map(([name, score]) => ({ name, score: Number.isFinite(score) ? score : null }));
    const out: GroupCompletion = {
      text: c.text,
      reward: Number.isFinite(c.reward) ? c.reward : null,
      rewards,
      advantage: Number.isFinite(c.advantage) ? c.advantage : 0,
      length: c.tokenIds.length,
      finishReason: c.finishReason,
    };
    if (c.errors.length) out.errors = [...c.errors];
    if (opts.decodeToken && c.logprobs && c.logprobs.length === c.tokenIds.length) {
      out.tokens = Array.from(c.tokenIds, (id) => opts.decodeToken!(id));
      out.tokenLogprobs = Array.from(c.logprobs, (x) => (Number.isFinite(x) ? x : -1e9));
    }
    return out;
  });
  const p: GroupPayload = { sample, completions };
  if (opts.step !== undefined) p.step = opts.step;
  return p;
}

/** The group worth showing: the largest reward spread (ties: the first), else the first group. */
export function mostInformative(groups: readonly RolloutGroup[]): RolloutGroup | undefined {
  let best: RolloutGroup | undefined, spread = -1;
  for (const g of groups) {
    const r = g.completions.map((c) => c.reward).filter(Number.isFinite);
    const s = r.length ? Math.max(...r) - Math.min(...r) : 0;
    if (s > spread) { spread = s; best = g; }
  }
  return best;
}

export interface TrainingDashboard {
  dashboard: Dashboard;
  /** Pass as `trainer.run({ onStep })`. */
  onStep(out: StepOutput): Promise<void>;
  finish(status?: 'done' | 'stopped' | 'error', message?: string): void;
}

/** A live dashboard fed by the trainer's step outputs: metrics, progress, the most informative group. */
export function trainingDashboard(options: DashboardOptions & Omit<GroupViewOptions, 'step' | 'sample'> = {}): TrainingDashboard {
  const { decodeToken, maxSide, ...dashOpts } = options;
  const dashboard = new Dashboard({ title: 'GRPO training', ...dashOpts });
  const samples = new Map<string, SamplePayload>();
  const sampleFor = async (s: VqaSample) => {
    let p = samples.get(s.id);
    if (!p) {
      // A missing or unreadable image must not stop the dashboard: the group shows without it.
      p = await samplePayload(s, { maxSide: maxSide ?? 256 }).catch((): SamplePayload => ({
        id: s.id, question: s.question, images: [], answers: s.answers?.length ? s.answers : [s.answer],
        ...(s.answerType !== undefined ? { answerType: s.answerType } : {}), ...(s.questionType !== undefined ? { questionType: s.questionType } : {}),
      }));
      if (samples.size > 64) samples.delete(samples.keys().next().value!);
      samples.set(s.id, p);
    }
    return p;
  };
  return {
    dashboard,
    async onStep(out: StepOutput) {
      const g = mostInformative(out.groups);
      if (g) dashboard.setGroup(await groupPayload(g, { step: out.step, decodeToken, sample: await sampleFor(g.sample) }));
      dashboard.log(metricsPoint(out.metrics));
    },
    finish(status = 'done', message?: string) {
      dashboard.finish(status, message);
    },
  };
}
