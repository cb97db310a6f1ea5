/**
 * The GRPO trainer: step-by-step reinforcement learning of a Qwen2-VL policy on VQA, driven from
 * TypeScript over the engine contract (src/engine/types.ts). One `step()`:
 *
 *   draw prompts → G completions each (the engine, or any Policy) → rewards (concurrent, with
 *   parts; failures excluded or given a fallback) → [dynamic sampling: drop tied groups, refill]
 *   → advantages → μ passes of minibatch updates (old log-probs when the ratio can leave 1,
 *   reference log-probs when β > 0) → metrics.
 *
 * Where this departs from the GRPO paper (Shao et al. 2024, DeepSeekMath), by default or by design
 * (β = 0, token-mean aggregation, μ = 1, whole-group minibatches, skipped samples, ...): docs/grpo.md,
 * "Where vqalab departs from the paper".
 *
 * The pieces are free functions with explicit inputs: rollout.ts (prompts, batched rollout,
 * rewards), rollout-step.ts (a step's rounds), update.ts (advantages, minibatch updates, step
 * metrics), reference.ts, sft.ts, evaluate.ts and eval-split.ts, checkpoint.ts, run-callbacks.ts.
 * The trainer raises events (events.ts) that the dashboard and report facts subscribe to from
 * their own layers.
 */
import path from 'node:path';
import type { EngineModel } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { VlmTokenizer as Tokenizer } from '../text/tokenizer.js';
import { interruptible } from '../util/interrupt.js';
import { grpoConfig, type GrpoConfig } from './config.js';
import { Rng, type RngState } from '../util/rng.js';
import { DataCursor, type CursorState } from './cursor.js';
import { MetricsLog, metricsFromJson, residentMiB, type StepMetrics } from './metrics.js';
import { scoreAnswer } from '../eval/vqa-metric.js';
import type { EvalSummary } from './evaluate.js';
import { PromptBuilder, type RolloutGroup, type RolloutInputs } from './rollout.js';
import { emptyMetrics, fillStepMetrics, grpoUpdate } from './update.js';
import { MicroBatchSizer } from './micro.js';
import { sftLoop } from './sft.js';
import { readCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.js';
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
  checkTrainerOptions,
  type RunOptions,
  type RunResult,
  type SftOptions,
  type TrainerOptions,
} from './options.js';
import { agentStep } from './agent-step.js';
import { rolloutStep, type StepRollout } from './rollout-step.js';
import { runCallbacks } from './run-callbacks.js';
import { evaluateSplit } from './eval-split.js';
import { ReferencePolicy } from './reference.js';
import { fromPretrained } from './pretrained.js';
import type { AgentGroup } from './agent-step.js';

function now(): number {
  return performance.now();
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
  private readonly reference: ReferencePolicy;
  private busy = false;
  private readonly prompts: PromptBuilder;
  private readonly sizer: MicroBatchSizer;
  private callbacksMade: TrainerCallback[] | undefined;
  private started = false;

  static readonly fromPretrained = fromPretrained; // model folder → trainer in one call (src/grpo/pretrained.ts)

  constructor(options: TrainerOptions, restored?: { state: TrainerState; metrics: StepMetrics[] }) {
    checkTrainerOptions(options);
    this.config = grpoConfig(options.config);
    this.opts = options;
    this.model = options.model;
    this.tokenizer = options.tokenizer;
    this.sizer = new MicroBatchSizer(this.model, this.config.microBatchTokens);
    this.state = restored?.state ?? {
      step: 0,
      sftStep: 0,
      rng: new Rng(this.config.seed).state(),
      cursor: { epoch: 0, index: 0 },
      sftCursor: { epoch: 0, index: 0 },
    };
    this.reference = new ReferencePolicy({
      model: this.model,
      config: this.config,
      state: this.state,
      reference: options.reference,
      loadModel: options.loadModel,
      outputDir: options.outputDir,
    });
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
    this.sizer.takePeak(); // the step's peak window starts here

    // ── Rollout (abortable) ──
    let r: StepRollout;
    try {
      r = await rolloutStep(
        this.rolloutInputs(),
        { train: this.opts.train, cursor: this.cursor, rng: this.rng },
        step,
        signal,
      );
    } catch (err) {
      this.rng.restore(snapshot.rng);
      this.cursor.position = snapshot.cursor;
      if (signal?.aborted) throw new AbortError();
      throw err;
    }
    const { kept, sampled, skipped, rounds, genTokens, genSeconds, rewardSeconds } = r;
    // The next step's images load while this step's update keeps the engine busy.
    if (!this.opts.policy) this.prompts.prefetch(this.cursor.peek(c.promptsPerStep).map((i) => this.opts.train[i]!));

    // ── Advantages → updates ──
    const tTrain = now();
    const acc = await grpoUpdate(
      {
        model: this.model,
        config: c,
        rng: this.rng,
        referenceLogprobs: (groups) => this.reference.logprobs(groups),
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
    metrics.gpuPeakMiB = this.sizer.takePeak();
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
      await sftLoop(
        {
          model: this.model,
          tokenizer: this.tokenizer,
          config: this.config,
          prompts: this.prompts,
          log: (l) => this.log(l),
        },
        { train: this.opts.train, cursor: this.sftCursor },
        { ...options, batchSize },
        this.state.sftStep,
        async (m) => {
          this.state.sftStep++;
          this.syncState();
          this.metrics.push(m);
          out.push(m);
          await this.emit(this.callbacks(), 'onSftStepEnd', m);
          await options.onStep?.(m);
        },
      );
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
    const { summary, metrics } = await evaluateSplit(
      {
        model: this.model,
        tokenizer: this.tokenizer,
        prompts: this.prompts,
        maxTokens: this.config.evalMaxTokens,
        accuracyOf: this.accuracyOf,
        policy: this.opts.policy,
        batchSize: this.opts.evalBatchSize,
        evalSets: this.opts.evalSets,
        step: this.state.step,
        log: (l) => this.log(l),
      },
      split,
      options,
    );
    this.metrics.push(metrics);
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
    const runCbs = runCallbacks(this, options, run, result);
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
    this.syncState();
    this.busy = true;
    let target: string;
    try {
      target = await saveCheckpoint(dir, this.opts.outputDir, {
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
