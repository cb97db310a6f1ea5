/**
 * From the trainer's step output to the display contract: a metrics point per step, a group view
 * of a rollout group, and a live dashboard fed by `trainer.run({ onStep })`. The trainer stays
 * free of display code; a notebook wires them:
 *
 *   const live = trainingDashboard({ total: 50, decodeToken: (id) => tokenizer.decode([id]) });
 *   await trainer.run({ steps: 50, onStep: live.onStep });
 *   live.finish();
 *
 * `run({ dashboard })` does the same through the trainer's events (src/grpo/events.ts): this
 * module registers the 'dashboard' subscriber when it loads (the package entry loads it).
 */
import type { VqaSample } from '../data/types.js';
import type { RolloutGroup } from '../grpo/rollout.js';
import { registerTrainerPlugin, type StepOutput, type TrainerCallback, type TrainerView } from '../grpo/events.js';
import type { StepMetrics } from '../grpo/metrics.js';
import { invalidParameterError } from '../util/validate.js';
import { Dashboard, type DashboardOptions } from './dashboard.js';
import { getDisplaySink, type DisplaySink } from './sink.js';
import { samplePayload } from './sample.js';
import type { GroupCompletion, GroupPayload, MetricsPoint, RewardScore, SamplePayload } from './types.js';

/** Display names of the trainer's per-step numbers (TRL-style, so runs from either read alike). */
const METRIC_NAMES: [keyof StepMetrics, string][] = [
  ['rewardMean', 'reward'],
  ['rewardStd', 'reward_std'],
  ['accuracy', 'accuracy'],
  ['kl', 'kl'],
  ['entropy', 'entropy'],
  ['clipFractionLow', 'clip_ratio/low_mean'],
  ['clipFractionHigh', 'clip_ratio/high_mean'],
  ['completionLength', 'completion_length'],
  ['truncatedFraction', 'truncated_fraction'],
  ['gradNorm', 'grad_norm'],
  ['loss', 'loss'],
  ['learningRate', 'lr'],
  ['zeroVarianceFraction', 'zero_variance_fraction'],
  ['tokensPerSecond', 'tokens_per_second'],
  ['stepSeconds', 'step_seconds'],
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
  const sample = opts.sample ?? (await samplePayload(g.sample, { maxSide: opts.maxSide ?? 256 }));
  const completions = g.completions.map((c): GroupCompletion => {
    const rewards: RewardScore[] = Object.entries(c.rewardParts).map(([name, score]) => ({
      name,
      score: Number.isFinite(score) ? score : null,
    }));
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
  let best: RolloutGroup | undefined,
    spread = -1;
  for (const g of groups) {
    const r = g.completions.map((c) => c.reward).filter(Number.isFinite);
    const s = r.length ? Math.max(...r) - Math.min(...r) : 0;
    if (s > spread) {
      spread = s;
      best = g;
    }
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
export function trainingDashboard(
  options: DashboardOptions & Omit<GroupViewOptions, 'step' | 'sample'> = {},
): TrainingDashboard {
  const { decodeToken, maxSide, ...dashOpts } = options;
  const dashboard = new Dashboard({ title: 'GRPO training', ...dashOpts });
  const samples = new Map<string, SamplePayload>();
  const sampleFor = async (s: VqaSample) => {
    let p = samples.get(s.id);
    if (!p) {
      // A missing or unreadable image must not stop the dashboard: the group shows without it.
      p = await samplePayload(s, { maxSide: maxSide ?? 256 }).catch(
        (): SamplePayload => ({
          id: s.id,
          question: s.question,
          images: [],
          answers: s.answers?.length ? s.answers : [s.answer],
          ...(s.answerType !== undefined ? { answerType: s.answerType } : {}),
          ...(s.questionType !== undefined ? { questionType: s.questionType } : {}),
        }),
      );
      if (samples.size > 64) samples.delete(samples.keys().next().value!);
      samples.set(s.id, p);
    }
    return p;
  };
  return {
    dashboard,
    async onStep(out: StepOutput) {
      const g = mostInformative(out.groups);
      if (g)
        dashboard.setGroup(await groupPayload(g, { step: out.step, decodeToken, sample: await sampleFor(g.sample) }));
      dashboard.log(metricsPoint(out.metrics));
    },
    finish(status = 'done', message?: string) {
      dashboard.finish(status, message);
    },
  };
}

/** Options of the live training dashboard (`run({ dashboard })`): the dashboard's options. */
export type RunDashboardOptions = Pick<
  DashboardOptions,
  'title' | 'run' | 'compare' | 'keys' | 'smoothing' | 'intervalMs' | 'maxPoints' | 'sink'
> & {
  /** Longest image side in the group view (default 256). */
  maxSide?: number;
};

declare module '../grpo/events.js' {
  interface RunOptionExtras {
    /**
     * One live dashboard for the run — metrics plot, progress bar with ETA, the latest group (the
     * one with the widest reward spread) — updated in place through a display id, throttled.
     * Default 'auto': shown when a display sink is installed (the vqalab kernel), nothing in a
     * script. `false`: never; `true` or options: always (without a sink only its state is kept, in
     * `RunResult.dashboard`).
     */
    dashboard?: 'auto' | boolean | RunDashboardOptions;
  }
  interface RunResultExtras {
    /** The run's live dashboard, when one was made. */
    dashboard?: TrainingDashboard;
  }
}

/** The run's dashboard per `options.dashboard`, as a subscriber of the trainer's events (or undefined). */
export function runDashboard(
  trainer: TrainerView,
  options: { dashboard?: unknown; evalEvery?: number; evalSplit?: string; steps: number },
): { live: TrainingDashboard; callback: TrainerCallback } | undefined {
  const want = options.dashboard ?? 'auto';
  if (want === false) return undefined;
  if (want !== 'auto' && want !== true && (typeof want !== 'object' || want === null || Array.isArray(want))) {
    throw invalidParameterError('dashboard', "'auto', true, false or dashboard options", want);
  }
  const given = (typeof want === 'object' ? want : {}) as RunDashboardOptions;
  const target = given.sink ?? getDisplaySink();
  if (want === 'auto' && !target) return undefined;
  // A front end that fails (a closed socket) must not stop training, also not from the
  // dashboard's throttle timer, where an exception would end the process.
  const sink: DisplaySink | undefined = target && {
    display: (bundle, opts) => {
      try {
        target.display(bundle, opts);
      } catch (err) {
        trainer.log(`dashboard: could not send an update: ${(err as Error).message}`);
      }
    },
  };
  const evalSets = trainer.evalSets;
  const evalKeys =
    (options.evalEvery ?? 0) > 0 && evalSets ? [`eval/${options.evalSplit ?? Object.keys(evalSets)[0]}`] : [];
  const keys = [
    'reward',
    'accuracy',
    ...evalKeys,
    'entropy',
    'loss',
    'grad_norm',
    'completion_length',
    'zero_variance_fraction',
    ...(trainer.config.beta > 0 ? ['kl'] : []),
  ];
  const live = trainingDashboard({
    title: 'GRPO training',
    keys,
    ...given,
    sink,
    // Progress counts global steps, so a continued run shows "12 of 20" rather than restarting at 0.
    total: trainer.globalStep + options.steps,
    firstStep: 0,
    decodeToken: (id) => trainer.tokenizer.decode([id], { skipSpecialTokens: false }),
  });
  // A dashboard that fails (an unreadable image, a closed front end) must not stop training.
  const show = async (what: string, fn: () => Promise<void> | void) => {
    try {
      await fn();
    } catch (err) {
      trainer.log(`dashboard: could not show ${what}: ${(err as Error).message}`);
    }
  };
  const callback: TrainerCallback = {
    // Wall-clock numbers stay out of the plot: a report of the run must reproduce every plotted
    // value exactly (`vqalab report verify` on CPU). They remain in `trainer.metrics`.
    onStepEnd: (_t, out) =>
      show(`step ${out.step}`, () =>
        live.onStep({ ...out, metrics: { ...out.metrics, tokensPerSecond: NaN, stepSeconds: NaN } }),
      ),
    onEvaluate: (t, summary, info) => {
      if (!info.named) return;
      return show(`the evaluation after step ${t.globalStep - 1}`, () =>
        live.dashboard.log({ step: t.globalStep - 1, [`eval/${summary.split}`]: summary.overall / 100 }),
      );
    },
    onRunEnd: (t, r) =>
      show(r.error ? 'the error' : 'the end of the run', () => {
        if (r.error) live.finish('error', `stopped by an error after step ${t.globalStep - 1}: ${r.error.message}`);
        else
          live.finish(
            r.stoppedBy === 'abort' ? 'stopped' : 'done',
            r.stoppedBy === 'abort' ? `interrupted after step ${t.globalStep - 1}; the trainer can go on` : undefined,
          );
      }),
  };
  return { live, callback };
}

registerTrainerPlugin({
  name: 'dashboard',
  runOptions: ['dashboard'],
  forRun: (trainer, options, run) => {
    const made = runDashboard(trainer, {
      dashboard: options.dashboard,
      evalEvery: run.evalEvery,
      evalSplit: run.evalSplit,
      steps: run.steps,
    });
    return made && { callback: made.callback, attach: { dashboard: made.live } };
  },
});
