/**
 * The GRPO trainer: step-by-step reinforcement learning of a Qwen2-VL policy on VQA, driven from
 * TypeScript over the engine contract (src/engine/types.ts). One `step()`:
 *
 *   draw prompts → G completions each (the engine, or any Policy) → rewards (concurrent, with
 *   parts; failures excluded or given a fallback) → [dynamic sampling: drop tied groups, refill]
 *   → advantages → μ passes of minibatch updates (old log-probs when the ratio can leave 1,
 *   reference log-probs when β > 0) → metrics.
 *
 * Where this departs from the GRPO paper (Shao et al. 2024, DeepSeekMath), by default or by design:
 *
 * - β = 0 by default: no KL term, no reference model (as TRL and DAPO do). With β > 0 the KL uses
 *   k3 (the paper's estimator) per token in the loss, or, with klPlacement 'reward', β·Σ_t KL_t is
 *   subtracted from each completion's reward.
 * - Loss aggregation defaults to token-mean over the minibatch (DAPO), not the paper's mean over
 *   sequences of per-sequence token means ('seq-mean-token-mean', available).
 * - Advantages divide by the unbiased group std + 1e-4 (TRL), or the batch std, or nothing.
 * - μ = 1 with one minibatch per step is the default: old log-probs equal the current ones, the
 *   ratio is 1 and clipping never acts (TRL's default). Old log-probs are recomputed by the
 *   engine's forward (not taken from the sampler) whenever the ratio can depart from 1.
 * - The trained policy is the temperature-1 policy: rollouts sampled at another temperature are
 *   slightly off-policy (TRL instead divides training logits by the temperature).
 * - Minibatches are whole groups (all completions of a prompt), so each prompt's prefix — image
 *   included — is computed once per forward and its gradients are summed exactly.
 * - Groups whose advantages are all 0 are not forwarded when no KL term is in the loss: their
 *   loss and gradient are exactly 0; they still count in the aggregation's denominators, so the
 *   loss equals TRL's. Token metrics (entropy, clip fractions) cover forwarded tokens only.
 * - A completion whose reward fails is dropped from its group (or scored with a fallback); the
 *   group's statistics use the rest.
 * - The learning rate changes per trainer step (verl), not per optimizer update (TRL).
 * - A sample that cannot be rolled out (unreadable image, prompt too long, generation or rewards
 *   failing for the whole group) is skipped and named in the step's metrics and output; the step
 *   trains on the others (config.maxBadSampleFraction stops a run that has too many).
 *
 * The pieces are free functions with explicit inputs: rollout.ts (prompts, batched rollout,
 * rewards), update.ts (advantages, minibatch updates, step metrics), sft.ts, evaluate.ts,
 * checkpoint.ts. The trainer raises events (events.ts) that the dashboard and report facts
 * subscribe to from their own layers.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { EngineModel } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { VlmTokenizer as Tokenizer } from '../text/tokenizer.js';
import { writeFileAtomic, withAtomicOutput } from '../util/fs.js';
import { interruptible } from '../util/interrupt.js';
import { expectInteger, expectOneOf } from '../util/validate.js';
import { grpoConfig, type GrpoConfig } from './config.js';
import { learningRateAt } from './schedule.js';
import { Rng, type RngState } from '../util/rng.js';
import { DataCursor, type CursorState } from './cursor.js';
import { MetricsLog, metricsFromJson, residentMiB, type StepMetrics } from './metrics.js';
import { scoreAnswer } from '../eval/vqa-metric.js';
import { evaluateSamples, summarize, type EvalSummary } from './evaluate.js';
import { PromptBuilder, rolloutRound, type RolloutGroup, type RolloutInputs, type SkippedSample } from './rollout.js';
import { emptyMetrics, fillStepMetrics, grpoUpdate, logprobsUnder } from './update.js';
import { MicroBatchSizer } from './micro.js';
import { sftUpdate } from './sft.js';
import { readCheckpoint, removeStaleTemps, writeCheckpoint, type TrainerState } from './checkpoint.js';
import {
  trainerPlugins,
  type RunState,
  type StepOutput,
  type TrainerCallback,
  type TrainerControl,
  type TrainerView,
} from './events.js';

export type { RolloutCompletion, RolloutGroup, SkippedSample } from './rollout.js';
export type { StepOutput, TrainerCallback, TrainerControl, TrainerView } from './events.js';
export {
  AbortError,
  BadSamplesError,
  type RunOptions,
  type RunResult,
  type SftOptions,
  type TrainerOptions,
} from './options.js';
import {
  AbortError,
  BadSamplesError,
  type RunOptions,
  type RunResult,
  type SftOptions,
  type TrainerOptions,
} from './options.js';
import { agentStep } from './agent-step.js';
import { fromPretrained } from './pretrained.js';
import type { AgentGroup } from './agent-step.js';

function now(): number {
  return performance.now();
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AbortError();
}

/** Peak GPU memory of the engine's pool since the last call, MiB (NaN on the CPU). */
function gpuPeakMiB(model: EngineModel): number {
  return model.deviceMemory?.(true)?.peakMiB ?? NaN;
}

export class Trainer implements TrainerView {
  readonly config: Readonly<GrpoConfig>;
  readonly model: EngineModel;
  readonly tokenizer: VlmTokenizer;
  readonly metrics: MetricsLog;
  /** The groups of the last GRPO step (for widgets). */
  lastGroups: RolloutGroup[] = [];
  /** With `agent`: the groups of attempts of the last step (src/gateway/view.ts shows one). */
  lastAgentGroups: AgentGroup[] = [];

  private readonly opts: TrainerOptions;
  private readonly rng: Rng;
  private readonly cursor: DataCursor;
  private readonly sftCursor: DataCursor;
  private state: TrainerState;
  private reference: EngineModel | undefined;
  private busy = false;
  private readonly prompts: PromptBuilder;
  private readonly sizer: MicroBatchSizer;
  private callbacksMade: TrainerCallback[] | undefined;
  private started = false;

  static readonly fromPretrained = fromPretrained; // model folder → trainer in one call (src/grpo/pretrained.ts)

  constructor(options: TrainerOptions, restored?: { state: TrainerState; metrics: StepMetrics[] }) {
    if (!options || typeof options !== 'object')
      throw new TypeError('Trainer needs options: {model, tokenizer, train, rewards, loadImages}');
    for (const key of ['model', 'tokenizer', 'train', 'rewards', 'loadImages'] as const) {
      if (options[key] === undefined || options[key] === null)
        throw new TypeError(`Trainer option "${key}" is required`);
    }
    this.config = grpoConfig(options.config);
    if (options.rolloutMode !== undefined)
      expectOneOf('rolloutMode', options.rolloutMode, ['batched', 'sequential'] as const);
    if (options.evalBatchSize !== undefined) expectInteger('evalBatchSize', options.evalBatchSize, 1);
    if (options.policyConcurrency !== undefined) expectInteger('policyConcurrency', options.policyConcurrency, 1);
    this.opts = options;
    this.model = options.model;
    this.tokenizer = options.tokenizer;
    this.reference = options.reference;
    this.sizer = new MicroBatchSizer(this.model, this.config.microBatchTokens);
    if (
      this.config.beta > 0 &&
      this.referenceKind() === 'lora-base' &&
      this.model.numParameters.trainable >= this.model.numParameters.total
    ) {
      throw new Error(
        'reference "lora-base" needs a LoRA model (the base with adapters disabled); load the model with LoRA or set reference: "copy"',
      );
    }
    this.state = restored?.state ?? {
      step: 0,
      sftStep: 0,
      rng: new Rng(this.config.seed).state(),
      cursor: { epoch: 0, index: 0 },
      sftCursor: { epoch: 0, index: 0 },
    };
    this.rng = new Rng(this.state.rng);
    this.cursor = new DataCursor(options.train.length, this.config.seed, this.state.cursor);
    this.sftCursor = new DataCursor(options.train.length, this.config.seed + 1, this.state.sftCursor);
    this.metrics = new MetricsLog(
      options.outputDir ? path.join(options.outputDir, 'metrics.jsonl') : undefined,
      restored?.metrics ?? [],
    );
    this.prompts = new PromptBuilder({
      tokenizer: this.tokenizer,
      loadImages: options.loadImages,
      systemPrompt: options.systemPrompt,
      mergeSize: options.mergeSize,
      cacheSize: options.imageCacheSize,
    });
  }

  /** GRPO steps done so far (the index the next step() gets). */
  get globalStep(): number {
    return this.state.step;
  }

  get sftSteps(): number {
    return this.state.sftStep;
  }

  get train(): readonly VqaSample[] {
    return this.opts.train;
  }

  get evalSets(): Readonly<Record<string, readonly VqaSample[]>> | undefined {
    return this.opts.evalSets;
  }

  get modelDir(): string | undefined {
    return this.opts.modelDir ?? this.tokenizer.source;
  }

  get recordsFacts(): boolean {
    return this.opts.recordFacts ?? true;
  }

  log(line: string): void {
    this.opts.log?.(line);
  }

  private accuracyOf = (prediction: string, answers: readonly string[]): number =>
    this.opts.vqaAccuracy ? this.opts.vqaAccuracy(prediction, answers) : scoreAnswer(prediction, answers).accuracy;

  private referenceKind(): 'copy' | 'lora-base' {
    const kind = this.config.reference;
    if (kind !== 'auto') return kind;
    return this.model.numParameters.trainable < this.model.numParameters.total ? 'lora-base' : 'copy';
  }

  // ───────────────────────── events ─────────────────────────

  /** The trainer-wide subscribers: registered layers' (made once), then options.callbacks. */
  private callbacks(): TrainerCallback[] {
    this.callbacksMade ??= [
      ...trainerPlugins()
        .map((p) => p.forTrainer?.(this))
        .filter((cb): cb is TrainerCallback => cb !== undefined),
      ...(this.opts.callbacks ?? []),
    ];
    return this.callbacksMade;
  }

  private async emit<K extends keyof TrainerCallback>(
    cbs: readonly TrainerCallback[],
    event: K,
    ...args: TrainerCallback[K] extends ((t: TrainerView, ...rest: infer A) => unknown) | undefined ? A : never
  ): Promise<void> {
    for (const cb of cbs) {
      const fn = cb[event] as ((t: TrainerView, ...rest: unknown[]) => unknown) | undefined;
      if (fn) await fn.call(cb, this, ...args);
    }
  }

  /** Once per trainer, before its first run or SFT: the subscribers' start (report facts). */
  private async starting(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.emit(this.callbacks(), 'onTrainerStart');
  }

  // ───────────────────────── one GRPO step ─────────────────────────

  private rolloutInputs(): RolloutInputs {
    return {
      model: this.model,
      tokenizer: this.tokenizer,
      config: this.config,
      prompts: this.prompts,
      rewards: this.opts.rewards,
      onRewardError: this.opts.onRewardError ?? 'exclude',
      accuracyOf: this.accuracyOf,
      policy: this.opts.policy,
      mode: this.opts.rolloutMode ?? 'batched',
      policyConcurrency: this.opts.policyConcurrency,
      log: (l) => this.log(l),
    };
  }

  /**
   * One GRPO step. With `signal`, an abort during the rollout leaves the trainer exactly as
   * before the step (AbortError); once updates have begun the step completes.
   */
  async step(options: { signal?: AbortSignal } = {}): Promise<StepOutput> {
    return this.stepWith(options.signal, this.callbacks(), { shouldStop: false });
  }

  private async stepWith(
    signal: AbortSignal | undefined,
    cbs: readonly TrainerCallback[],
    control: TrainerControl,
  ): Promise<StepOutput> {
    if (this.busy) throw new Error('a step is already running; await it before starting another');
    this.busy = true;
    const snapshot = { rng: this.rng.state(), cursor: this.cursor.position };
    let out: StepOutput;
    try {
      out = await this.stepInner(signal, snapshot);
    } finally {
      this.busy = false;
    }
    await this.emit(cbs, 'onStepEnd', out, control);
    return out;
  }

  private async stepInner(
    signal: AbortSignal | undefined,
    snapshot: { rng: RngState; cursor: CursorState },
  ): Promise<StepOutput> {
    if (this.opts.agent) return this.agentStepInner(signal, snapshot);
    const c = this.config;
    const t0 = now();
    const step = this.state.step;
    const metrics = emptyMetrics(step, 'grpo');
    gpuPeakMiB(this.model); // resets the peak

    // ── Rollout (abortable) ──
    const kept: RolloutGroup[] = [];
    const sampled: RolloutGroup[] = [];
    const skipped: SkippedSample[] = [];
    let rounds = 0,
      drawn = 0,
      genTokens = 0,
      genSeconds = 0,
      rewardSeconds = 0;
    try {
      const maxRounds = c.dynamicSampling ? c.maxSamplingRounds : 1;
      while (kept.length < c.promptsPerStep && rounds < maxRounds) {
        rounds++;
        const samples = this.cursor.take(c.promptsPerStep - kept.length).map((i) => this.opts.train[i]!);
        // Seeds drawn in sample order before any request goes out: a batched round samples exactly
        // what one prompt at a time would.
        const seeds = samples.map(() => this.rng.seed());
        drawn += samples.length;
        const r = await rolloutRound(this.rolloutInputs(), samples, seeds, step, signal);
        genTokens += r.genTokens;
        genSeconds += r.genSeconds;
        rewardSeconds += r.rewardSeconds;
        skipped.push(...r.skipped);
        for (const g of r.groups) {
          sampled.push(g);
          if (!c.dynamicSampling || !g.zeroVariance) kept.push(g);
        }
      }
      throwIfAborted(signal);
      for (const s of skipped) this.log(`step ${step}: skipped ${s.message}`);
      if (skipped.length > c.maxBadSampleFraction * drawn) {
        throw new BadSamplesError(
          `step ${step}: ${skipped.length} of ${drawn} samples failed, more than maxBadSampleFraction (${c.maxBadSampleFraction}) allows; ` +
            `fix or remove them (or raise maxBadSampleFraction):\n${skipped.map((s) => `  ${s.message}`).join('\n')}`,
          skipped,
        );
      }
    } catch (err) {
      this.rng.restore(snapshot.rng);
      this.cursor.position = snapshot.cursor;
      if (signal?.aborted) throw new AbortError();
      throw err;
    }

    // ── Advantages → updates ──
    const tTrain = now();
    const acc = await grpoUpdate(
      {
        model: this.model,
        config: c,
        rng: this.rng,
        referenceLogprobs: (groups) => this.referenceLogprobs(groups),
        log: (l) => this.log(l),
        sizer: this.sizer,
      },
      kept,
      step,
    );
    const trainSeconds = (now() - tTrain) / 1000;

    // ── Metrics ──
    fillStepMetrics(metrics, sampled, kept, acc, rounds);
    metrics.badSamples = skipped.length;
    if (skipped.length)
      metrics.extra = {
        ...metrics.extra,
        skipped: skipped.map((s) => ({ id: s.sampleId, kind: s.kind, message: s.message })),
      };
    metrics.rolloutSeconds = genSeconds;
    metrics.rewardSeconds = rewardSeconds;
    metrics.trainSeconds = trainSeconds;
    metrics.tokensPerSecond = genSeconds > 0 ? genTokens / genSeconds : NaN;
    metrics.trainTokensPerSecond = trainSeconds > 0 && acc.trainTokens > 0 ? acc.trainTokens / trainSeconds : NaN;
    metrics.gpuPeakMiB = gpuPeakMiB(this.model);
    metrics.stepSeconds = (now() - t0) / 1000;
    metrics.memoryMiB = residentMiB();
    metrics.time = new Date().toISOString();

    this.state.step = step + 1;
    this.syncState();
    this.metrics.push(metrics);
    this.lastGroups = kept;
    return { step, groups: kept, metrics, skipped };
  }

  /**
   * `agent`: the step's prompts run the agent command G times each through a training gateway
   * over this model (src/gateway), and the masked GRPO update trains on the recorded trajectories.
   * An abort during the rollout leaves the trainer as it was (AbortError).
   */
  private async agentStepInner(
    signal: AbortSignal | undefined,
    snapshot: { rng: RngState; cursor: CursorState },
  ): Promise<StepOutput> {
    const step = this.state.step;
    const samples = this.cursor.take(this.config.promptsPerStep).map((i) => this.opts.train[i]!);
    let r;
    try {
      r = await agentStep()({
        model: this.model,
        tokenizer: this.tokenizer,
        config: this.config,
        agent: this.opts.agent!,
        samples,
        step,
        signal,
        log: (l) => this.log(l),
      });
    } catch (err) {
      this.rng.restore(snapshot.rng);
      this.cursor.position = snapshot.cursor;
      if (signal?.aborted) throw new AbortError();
      throw err;
    }
    this.state.step = step + 1;
    this.syncState();
    this.metrics.push(r.metrics);
    this.lastGroups = [];
    this.lastAgentGroups = r.groups;
    return { step, groups: [], metrics: r.metrics, skipped: [] };
  }

  private syncState(): void {
    this.state.rng = this.rng.state();
    this.state.cursor = this.cursor.position;
    this.state.sftCursor = this.sftCursor.position;
  }

  // ───────────────────────── reference policy ─────────────────────────

  private async referenceModel(): Promise<EngineModel> {
    if (this.reference) return this.reference;
    if (!this.opts.loadModel)
      throw new Error(
        'beta > 0 with reference "copy" needs a reference model: pass `reference` or `loadModel` to the Trainer',
      );
    let dir = this.state.referenceDir;
    if (!dir || !existsSync(path.join(dir, 'config.json'))) {
      if (this.opts.outputDir) {
        removeStaleTemps(this.opts.outputDir);
        dir = path.join(this.opts.outputDir, 'reference');
      } else {
        dir = await fsp.mkdtemp(path.join(tmpdir(), 'vqalab-reference-'));
      }
      await withAtomicOutput(dir, async (tmp) => {
        await this.model.save(tmp, { optimizer: false });
      });
      this.state.referenceDir = dir;
    }
    this.reference = await this.opts.loadModel(dir, { role: 'reference' });
    return this.reference;
  }

  private async referenceLogprobs(groups: readonly RolloutGroup[]): Promise<Float32Array[][]> {
    if (this.referenceKind() === 'lora-base') {
      this.model.setLoraEnabled(false);
      try {
        return await logprobsUnder(this.model, groups, this.config.miniBatchPrompts);
      } finally {
        this.model.setLoraEnabled(true);
      }
    }
    return logprobsUnder(await this.referenceModel(), groups, this.config.miniBatchPrompts);
  }

  // ───────────────────────── SFT warm start ─────────────────────────

  /**
   * Supervised warm start: cross-entropy on each sample's reference answer (then <|im_end|>),
   * with the same data, prompts and engine. Stops at an update boundary on abort.
   */
  async sft(options: SftOptions): Promise<StepMetrics[]> {
    if (this.busy) throw new Error('a step is already running; await it before starting SFT');
    const batchSize = options.batchSize ?? 16;
    const out: StepMetrics[] = [];
    await this.starting();
    await this.emit(this.callbacks(), 'onSftBegin', {
      steps: options.steps,
      batchSize,
      learningRate: options.learningRate,
      warmupSteps: options.warmupSteps ?? 0,
      from: this.state.sftStep,
    });
    this.busy = true;
    try {
      for (let s = 0; s < options.steps; s++) {
        if (options.signal?.aborted) break;
        const samples = this.sftCursor.take(batchSize).map((i) => this.opts.train[i]!);
        const lr = learningRateAt(s, {
          learningRate: options.learningRate,
          warmupSteps: options.warmupSteps ?? 0,
          totalSteps: options.steps,
          schedule: 'constant',
          minLrRatio: 0,
        });
        const m = await sftUpdate(
          {
            model: this.model,
            tokenizer: this.tokenizer,
            config: this.config,
            prompts: this.prompts,
            log: (l) => this.log(l),
          },
          samples,
          lr,
          this.state.sftStep,
        );
        this.state.sftStep++;
        this.syncState();
        this.metrics.push(m);
        out.push(m);
        await this.emit(this.callbacks(), 'onSftStepEnd', m);
        await options.onStep?.(m);
      }
    } finally {
      this.busy = false;
    }
    return out;
  }

  // ───────────────────────── evaluation ─────────────────────────

  /**
   * Greedy answers on a split (a name of evalSets, or samples), scored by the official VQA metric.
   * Many questions go to the engine at once (`evalBatchSize`); a sample that cannot be answered
   * scores 0 and is named in the summary's rows (`error`).
   */
  async evaluate(
    split: string | readonly VqaSample[] = Object.keys(this.opts.evalSets ?? {})[0] ?? '',
    options: { limit?: number; signal?: AbortSignal; name?: string } = {},
  ): Promise<EvalSummary> {
    return this.evaluateWith(split, options, this.callbacks(), { shouldStop: false });
  }

  private async evaluateWith(
    split: string | readonly VqaSample[],
    options: { limit?: number; signal?: AbortSignal; name?: string },
    cbs: readonly TrainerCallback[],
    control: TrainerControl,
  ): Promise<EvalSummary> {
    let name: string, samples: readonly VqaSample[];
    if (typeof split === 'string') {
      const set = this.opts.evalSets?.[split];
      if (!set)
        throw new Error(
          `no evaluation split "${split}"; the trainer has ${
            Object.keys(this.opts.evalSets ?? {})
              .map((s) => `"${s}"`)
              .join(', ') || 'none (pass evalSets)'
          }`,
        );
      name = split;
      samples = set;
    } else {
      // Samples given directly: `options.name` names them in the summary and the metrics log.
      name = options.name ?? 'samples';
      samples = split;
    }
    if (options.limit !== undefined) samples = samples.slice(0, options.limit);
    throwIfAborted(options.signal);
    const t0 = now();
    let rows;
    try {
      rows = await evaluateSamples(
        {
          model: this.model,
          tokenizer: this.tokenizer,
          prompts: this.prompts,
          maxTokens: this.config.evalMaxTokens,
          accuracyOf: this.accuracyOf,
          policy: this.opts.policy,
          batchSize: this.opts.evalBatchSize,
          signal: options.signal,
        },
        samples,
      );
    } catch (err) {
      if (options.signal?.aborted) throw new AbortError('evaluation aborted');
      throw err;
    }
    for (const r of rows) if (r.error) this.log(`evaluate ${name}: ${r.error}`);
    const summary = summarize(name, rows, (now() - t0) / 1000);
    const m = emptyMetrics(this.state.step, 'eval');
    m.accuracy = summary.overall / 100;
    m.extra = { split: name, overall: summary.overall, perAnswerType: summary.perAnswerType, n: summary.n };
    const failed = rows.filter((r) => r.error).map((r) => r.id);
    if (failed.length) {
      m.badSamples = failed.length;
      m.extra.skipped = failed;
    }
    m.stepSeconds = summary.seconds;
    this.metrics.push(m);
    // Keyed by where training stood, so the warm start's and the final evaluation both stay apart.
    const at = this.state.step > 0 || this.state.sftStep === 0 ? `grpo${this.state.step}` : `sft${this.state.sftStep}`;
    await this.emit(
      cbs,
      'onEvaluate',
      summary,
      { named: typeof split === 'string', at, step: this.state.step },
      control,
    );
    return summary;
  }

  // ───────────────────────── run loop ─────────────────────────

  /**
   * Run steps until `steps` are done or an abort stops it at a step boundary: `signal`, a
   * subscriber's `control.shouldStop`, or an interrupt of the process-wide scope
   * (src/util/interrupt.ts: Ctrl-C in a script, the kernel's interrupt in a notebook) unless
   * `handleSigint` is false.
   */
  async run(options: RunOptions): Promise<RunResult> {
    const work = (signal: AbortSignal | undefined) => this.runLoop(options, signal);
    return (options.handleSigint ?? true) ? interruptible(work, options.signal) : work(options.signal);
  }

  private async runLoop(options: RunOptions, signal: AbortSignal | undefined): Promise<RunResult> {
    const evalEvery = options.evalEvery ?? 0,
      ckptEvery = options.checkpointEvery ?? 0;
    const result: RunResult = {
      stepsRun: 0,
      stoppedBy: 'steps',
      lastStep: this.state.step - 1,
      evals: [],
      checkpoints: [],
    };
    const run: RunState = {
      firstStep: this.state.step,
      steps: options.steps,
      evalEvery,
      ...(options.evalSplit !== undefined ? { evalSplit: options.evalSplit } : {}),
    };
    // Run subscribers (the dashboard), then the trainer's, then this run's own.
    const plugins = trainerPlugins();
    const known = new Set([
      'steps',
      'evalEvery',
      'evalSplit',
      'checkpointEvery',
      'onStep',
      'onEval',
      'signal',
      'handleSigint',
      'callbacks',
      ...plugins.flatMap((p) => p.runOptions ?? []),
    ]);
    for (const [k, v] of Object.entries(options)) {
      if (!known.has(k) && v !== undefined && !(k === 'dashboard' && (v === 'auto' || v === false))) {
        throw new Error(
          `run({ ${k} }) needs the layer that reads it: import "vqalab" (the package entry loads the dashboard and report layers) before running`,
        );
      }
    }
    const runCbs: TrainerCallback[] = [];
    for (const p of plugins) {
      const made = p.forRun?.(this, options as unknown as Record<string, unknown>, run);
      if (made) {
        runCbs.push(made.callback);
        Object.assign(result, made.attach ?? {});
      }
    }
    const user: TrainerCallback = {
      onStepEnd: options.onStep ? (_t, out) => options.onStep!(out) : undefined,
      onEvaluate: options.onEval ? (_t, summary) => options.onEval!(summary) : undefined,
    };
    const cbs = [...runCbs, ...this.callbacks(), ...(options.callbacks ?? []), user];
    const control: TrainerControl = { shouldStop: false };
    await this.starting();
    await this.emit(cbs, 'onRunBegin', run);
    try {
      for (let i = 0; i < options.steps; i++) {
        if (signal?.aborted || control.shouldStop) {
          result.stoppedBy = 'abort';
          break;
        }
        let out: StepOutput;
        try {
          out = await this.stepWith(signal, cbs, control);
        } catch (err) {
          if (err instanceof AbortError) {
            result.stoppedBy = 'abort';
            break;
          }
          throw err;
        }
        result.stepsRun++;
        result.lastStep = out.step;
        if (evalEvery > 0 && this.state.step % evalEvery === 0 && this.opts.evalSets) {
          const split = options.evalSplit ?? Object.keys(this.opts.evalSets)[0] ?? '';
          result.evals.push(await this.evaluateWith(split, {}, cbs, control));
        }
        if (ckptEvery > 0 && this.state.step % ckptEvery === 0)
          result.checkpoints.push(await this.saveWith(undefined, cbs));
      }
    } catch (err) {
      await this.emit(cbs, 'onRunEnd', { ...result, error: err as Error });
      throw err;
    }
    if (signal?.aborted || control.shouldStop) {
      result.stoppedBy = 'abort';
      this.log(`stopped at a step boundary after step ${this.state.step - 1}`);
    }
    await this.emit(cbs, 'onRunEnd', {
      stepsRun: result.stepsRun,
      stoppedBy: result.stoppedBy,
      lastStep: result.lastStep,
    });
    return result;
  }

  // ───────────────────────── checkpoints ─────────────────────────

  /**
   * Write a checkpoint atomically: model/ (Hugging Face folder with optimizer state, plus the
   * tokenizer files) and trainer.json (config, step, RNG, data cursors, metrics history).
   * Default place: outputDir/checkpoints/checkpoint-NNNNNN, recorded in checkpoints/latest.
   * Works before any optimizer update too (the optimizer state is then empty). Temporary folders
   * a killed save left beside it are removed.
   */
  async save(dir?: string): Promise<string> {
    return this.saveWith(dir, this.callbacks());
  }

  private async saveWith(dir: string | undefined, cbs: readonly TrainerCallback[]): Promise<string> {
    if (this.busy) throw new Error('a step is running; save() between steps');
    if (!dir && !this.opts.outputDir)
      throw new Error('save() needs a directory: pass one, or give the Trainer an outputDir');
    const defaultDir = !dir;
    const target = path.resolve(
      dir ?? path.join(this.opts.outputDir!, 'checkpoints', `checkpoint-${String(this.state.step).padStart(6, '0')}`),
    );
    mkdirSync(path.dirname(target), { recursive: true });
    this.syncState();
    this.busy = true;
    try {
      await writeCheckpoint(target, {
        model: this.model,
        tokenizer: this.tokenizer,
        tokenizerDir: this.opts.tokenizerDir,
        config: this.config,
        state: this.state,
        metrics: this.metrics.history,
      });
    } finally {
      this.busy = false;
    }
    if (defaultDir) await writeFileAtomic(path.join(path.dirname(target), 'latest'), `${path.basename(target)}\n`);
    await this.emit(cbs, 'onSave', target, { step: this.state.step });
    return target;
  }

  /**
   * Continue from a checkpoint (a checkpoint folder, or a run's outputDir/checkpoints folder or
   * outputDir, whose `latest` is used). `loadModel` must restore the optimizer state saved with
   * the weights. On CPU the resumed run continues bit-exactly. Temporary folders a killed save
   * left beside the checkpoint are removed.
   */
  static async resume(
    dir: string,
    options: Omit<TrainerOptions, 'model' | 'tokenizer' | 'config'> & {
      loadModel: (dir: string, info: { role: 'reference' | 'resume' }) => Promise<EngineModel>;
      tokenizer?: VlmTokenizer;
      /** Fields to change on resume (changing sampling or batch fields breaks bit-exactness). */
      config?: Partial<GrpoConfig>;
    },
  ): Promise<Trainer> {
    const ckpt = readCheckpoint(dir);
    const model = await options.loadModel(path.join(ckpt.dir, 'model'), { role: 'resume' });
    const tokenizer = options.tokenizer ?? Tokenizer.load(path.join(ckpt.dir, 'model'));
    return new Trainer(
      {
        modelDir: path.join(ckpt.dir, 'model'),
        ...options,
        model,
        tokenizer,
        config: { ...ckpt.file.config, ...options.config },
      },
      { state: ckpt.state, metrics: metricsFromJson(ckpt.file.metrics) },
    );
  }
}
