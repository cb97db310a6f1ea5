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
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { EngineModel, ForwardRequest, ImageInput, Prompt } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { Policy } from '../rollout/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { VlmTokenizer as Tokenizer } from '../text/tokenizer.js';
import { writeFileAtomic, withAtomicOutput } from '../util/fs.js';
import { interruptible } from '../util/interrupt.js';
import { grpoConfig, needsOldLogprobs, type GrpoConfig } from './config.js';
import { computeAdvantages, isZeroVariance, klPenalizedRewards } from './advantages.js';
import { grpoLoss, sftLoss, type LossMetrics } from './loss.js';
import { learningRateAt } from './schedule.js';
import { Rng, type RngState } from './rng.js';
import { DataCursor, type CursorState } from './cursor.js';
import { MetricsLog, meanStd, metricsFromJson, residentMiB, type StepMetrics } from './metrics.js';
import { scoreGroups, type OnRewardError, type RewardSet } from '../reward/runner.js';
import type { Completion } from '../rollout/types.js';
import { scoreVqa } from '../eval/vqa-metric.js';
import { summarize, type EvalRow, type EvalSummary } from './evaluate.js';
import { deviceFact, engineVersion, samplesFingerprint, weightsHash, weightsHashIfAny } from './facts.js';
import { recordFacts, type ModelFact } from '../report/facts.js';
import { getDisplaySink, type DisplaySink } from '../display/sink.js';
import { invalidParameterError } from '../util/validate.js';
import { trainingDashboard, type TrainingDashboard } from '../display/training.js';
import type { DashboardOptions } from '../display/dashboard.js';

/** One sampled completion of a group, with everything the step learned about it. */
export interface RolloutCompletion {
  text: string;
  /** Completion token ids as trained on (the stop token included when the completion stopped). */
  tokenIds: Int32Array;
  finishReason: 'stop' | 'length' | 'error';
  /** Weighted total reward; NaN when the completion was excluded after a failure. */
  reward: number;
  /** Each reward's score and named parts. */
  rewardParts: Record<string, number>;
  /** Official VQA accuracy of the text against the sample's answers. */
  accuracy: number;
  advantage: number;
  /** Log-probs of the tokens under the sampling policy (when the sampler reports them). */
  logprobs?: Float32Array;
  /** Why the completion was excluded (reward or generation failures). */
  errors: string[];
}

export interface RolloutGroup {
  sample: VqaSample;
  promptText: string;
  promptIds: Int32Array;
  imagePaths: string[];
  completions: RolloutCompletion[];
  /** All valid rewards tied: no learning signal. */
  zeroVariance: boolean;
  /** The engine prompt (ids + processed images). Not serialised. */
  prompt: Prompt;
}

export interface StepOutput {
  step: number;
  groups: RolloutGroup[];
  metrics: StepMetrics;
}

export interface TrainerOptions {
  /** The policy being trained (loaded by the engine). */
  model: EngineModel;
  tokenizer: VlmTokenizer;
  /** Training samples (prompts are drawn from these in seeded epoch shuffles). */
  train: readonly VqaSample[];
  /** Named evaluation splits for `evaluate(name)`. */
  evalSets?: Record<string, readonly VqaSample[]>;
  /**
   * Rewards (src/reward's RewardSet: functions, `{reward, weight, name, onError}`, or an object
   * keyed by name); a completion's reward is the weighted total. Scored by src/reward's runner.
   */
  rewards: RewardSet;
  /** What a failing reward does to its completion: 'exclude' (default) or `{ fallback: score }`. */
  onRewardError?: OnRewardError;
  /** Per-question accuracy in [0, 1] for metrics and evaluate(); default: the official VQA metric (src/eval). */
  vqaAccuracy?: (prediction: string, answers: readonly string[]) => number;
  /** The processed images of a sample (src/vision's Qwen2-VL processor), in prompt order. */
  loadImages: (sample: VqaSample) => Promise<ImageInput[]>;
  config?: Partial<GrpoConfig>;
  /** Roll out with this policy instead of the engine's sampler (e.g. an OpenAI-compatible server). */
  policy?: Policy;
  /**
   * Loads a checkpoint folder into a fresh engine model: the frozen reference copy (β > 0, role
   * 'reference': saved without optimizer state) and `Trainer.resume` (role 'resume': load the
   * optimizer too), e.g. `(dir, { role }) => loadModel(dir, { loadOptimizer: role === 'resume' })`.
   */
  loadModel?: (dir: string, info: { role: 'reference' | 'resume' }) => Promise<EngineModel>;
  /** A ready reference model (β > 0, reference 'copy'); otherwise one is saved and loaded when needed. */
  reference?: EngineModel;
  /** Where metrics.jsonl, checkpoints/ and reference/ go. Default: memory only (save() then needs a dir). */
  outputDir?: string;
  /** Folder holding tokenizer files copied into each checkpoint's model/ (default: the tokenizer's source). */
  tokenizerDir?: string;
  /** Vision spatial merge size (image pads per image = t·h·w / merge²). Default 2. */
  mergeSize?: number;
  /** System message of every prompt; default: the chat template's own (Qwen2-VL's). */
  systemPrompt?: string;
  /** Messages for the user (failing rewards, skipped updates). Default: none. */
  log?: (line: string) => void;
  /** Most processed images kept in memory (by sample id). Default 512. */
  imageCacheSize?: number;
  /**
   * Record report facts (src/report's `recordFacts`): config, seeds, dataset fingerprints, the
   * starting weights' hash, engine version and device when training starts; each checkpoint's
   * hash; final metrics after each run and named evaluation. In the vqalab kernel they become the
   * report's stamp; in a script they are only kept in memory. Default true.
   */
  recordFacts?: boolean;
  /** The folder the model's weights were loaded from, for their hash in the report (default: the tokenizer's folder when it holds weights). */
  modelDir?: string;
}

/** Options of the live training dashboard (`run({ dashboard })`): src/display's dashboard options. */
export type RunDashboardOptions = Pick<DashboardOptions, 'title' | 'run' | 'compare' | 'keys' | 'smoothing' | 'intervalMs' | 'maxPoints' | 'sink'> & {
  /** Longest image side in the group view (default 256). */
  maxSide?: number;
};

export interface SftOptions {
  steps: number;
  /** Samples per update. Default 16. */
  batchSize?: number;
  learningRate: number;
  warmupSteps?: number;
  signal?: AbortSignal;
  onStep?: (metrics: StepMetrics) => void | Promise<void>;
}

export interface RunOptions {
  /** Steps to run now (from the current step). */
  steps: number;
  /** Evaluate every N steps (0: never). Default 0. */
  evalEvery?: number;
  /** Split for periodic evaluation; default the first of evalSets. */
  evalSplit?: string;
  /** Checkpoint every N steps (0: never) and at the end. Default 0. */
  checkpointEvery?: number;
  onStep?: (out: StepOutput) => void | Promise<void>;
  onEval?: (summary: EvalSummary) => void | Promise<void>;
  signal?: AbortSignal;
  /**
   * Stop at the next step boundary on an interrupt of the process-wide scope (Ctrl-C in a script,
   * where a second one exits; the kernel's interrupt in a notebook). Default true.
   */
  handleSigint?: boolean;
  /**
   * One live dashboard for the run — metrics plot, progress bar with ETA, the latest group (the one
   * with the widest reward spread) — updated in place through a display id, throttled
   * (src/display's `trainingDashboard`). Default 'auto': shown when a display sink is installed
   * (the vqalab kernel), nothing in a script. `false`: never; `true` or options: always (without a
   * sink only its state is kept, in `RunResult.dashboard`).
   */
  dashboard?: 'auto' | boolean | RunDashboardOptions;
}

export interface RunResult {
  stepsRun: number;
  stoppedBy: 'steps' | 'abort';
  lastStep: number;
  evals: EvalSummary[];
  checkpoints: string[];
  /** The run's live dashboard, when one was made. */
  dashboard?: TrainingDashboard;
}

interface TrainerState {
  step: number;
  sftStep: number;
  rng: RngState;
  cursor: CursorState;
  sftCursor: CursorState;
  referenceDir?: string;
}

interface CheckpointFile extends TrainerState {
  format: 'vqalab.trainer';
  version: 1;
  config: GrpoConfig;
  metrics: unknown[];
  savedAt: string;
}

const CHECKPOINT_VERSION = 1;
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'chat_template.json', 'chat_template.jinja', 'preprocessor_config.json'];

export class AbortError extends Error {
  constructor(message = 'aborted at a step boundary; the trainer is as it was before this step') {
    super(message);
    this.name = 'AbortError';
  }
}

function now(): number {
  return performance.now();
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AbortError();
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function emptyMetrics(step: number, kind: StepMetrics['kind']): StepMetrics {
  return {
    step, kind, time: new Date().toISOString(), rewardMean: NaN, rewardStd: NaN, rewardParts: {}, accuracy: NaN, loss: NaN, kl: NaN,
    clipFractionLow: NaN, clipFractionHigh: NaN, clipFractionDual: NaN, entropy: NaN, gradNorm: NaN, learningRate: NaN,
    completionLength: NaN, completionLengthMax: NaN, truncatedFraction: NaN, zeroVarianceFraction: NaN, groups: 0, samplingRounds: 0,
    rewardFailures: 0, skippedUpdates: 0, tokensPerSecond: NaN, stepSeconds: NaN, rolloutSeconds: NaN, rewardSeconds: NaN,
    trainSeconds: NaN, memoryMiB: residentMiB(),
  };
}

export class Trainer {
  readonly config: Readonly<GrpoConfig>;
  readonly model: EngineModel;
  readonly tokenizer: VlmTokenizer;
  readonly metrics: MetricsLog;
  /** The groups of the last GRPO step (for widgets). */
  lastGroups: RolloutGroup[] = [];

  private readonly opts: TrainerOptions;
  private readonly rng: Rng;
  private readonly cursor: DataCursor;
  private readonly sftCursor: DataCursor;
  private state: TrainerState;
  private reference: EngineModel | undefined;
  private busy = false;
  private readonly imageCache = new Map<string, ImageInput[]>();

  constructor(options: TrainerOptions, restored?: { state: TrainerState; metrics: StepMetrics[] }) {
    if (!options || typeof options !== 'object') throw new TypeError('Trainer needs options: {model, tokenizer, train, rewards, loadImages}');
    for (const key of ['model', 'tokenizer', 'train', 'rewards', 'loadImages'] as const) {
      if (options[key] === undefined || options[key] === null) throw new TypeError(`Trainer option "${key}" is required`);
    }
    this.config = grpoConfig(options.config);
    this.opts = options;
    this.model = options.model;
    this.tokenizer = options.tokenizer;
    this.reference = options.reference;
    if (this.config.beta > 0 && this.referenceKind() === 'lora-base' && this.model.numParameters.trainable >= this.model.numParameters.total) {
      throw new Error('reference "lora-base" needs a LoRA model (the base with adapters disabled); load the model with LoRA or set reference: "copy"');
    }
    this.state = restored?.state ?? {
      step: 0, sftStep: 0, rng: new Rng(this.config.seed).state(), cursor: { epoch: 0, index: 0 }, sftCursor: { epoch: 0, index: 0 },
    };
    this.rng = new Rng(this.state.rng);
    this.cursor = new DataCursor(options.train.length, this.config.seed, this.state.cursor);
    this.sftCursor = new DataCursor(options.train.length, this.config.seed + 1, this.state.sftCursor);
    this.metrics = new MetricsLog(options.outputDir ? path.join(options.outputDir, 'metrics.jsonl') : undefined, restored?.metrics ?? []);
  }

  /** GRPO steps done so far (the index the next step() gets). */
  get globalStep(): number {
    return this.state.step;
  }

  get sftSteps(): number {
    return this.state.sftStep;
  }

  private accuracyOf(prediction: string, answers: readonly string[]): number {
    return this.opts.vqaAccuracy ? this.opts.vqaAccuracy(prediction, answers) : scoreVqa(prediction, answers).accuracy;
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  private referenceKind(): 'copy' | 'lora-base' {
    const kind = this.config.reference;
    if (kind !== 'auto') return kind;
    return this.model.numParameters.trainable < this.model.numParameters.total ? 'lora-base' : 'copy';
  }

  // ───────────────────────── prompts and images ─────────────────────────

  private async images(sample: VqaSample): Promise<ImageInput[]> {
    const hit = this.imageCache.get(sample.id);
    if (hit) return hit;
    let imgs: ImageInput[];
    try {
      imgs = await this.opts.loadImages(sample);
    } catch (err) {
      throw new Error(`sample ${sample.id}: cannot load its image ${sample.imagePath}: ${(err as Error).message}`);
    }
    const limit = this.opts.imageCacheSize ?? 512;
    if (limit > 0) {
      if (this.imageCache.size >= limit) this.imageCache.delete(this.imageCache.keys().next().value!);
      this.imageCache.set(sample.id, imgs);
    }
    return imgs;
  }

  private async promptFor(sample: VqaSample): Promise<{ prompt: Prompt; text: string }> {
    const images = await this.images(sample);
    const messages = Tokenizer.vqaMessages(sample.question, images.length, this.opts.systemPrompt);
    const prompt = this.tokenizer.buildPrompt(messages, images, { mergeSize: this.opts.mergeSize ?? 2 });
    return { prompt, text: this.tokenizer.applyChatTemplate(messages) };
  }

  /**
   * Completion ids as trained on, at most maxCompletionLength: a stopped completion keeps its stop
   * token (appended when the sampler left it out, e.g. text re-encoded from a server's answer).
   */
  private completionIds(ids: ArrayLike<number>, finish: string): Int32Array {
    const arr = Array.from(ids);
    const max = this.config.maxCompletionLength;
    const stops = this.tokenizer.stopTokenIds;
    if (finish === 'stop' && (arr.length === 0 || !stops.includes(arr[arr.length - 1]!))) {
      return Int32Array.from([...arr.slice(0, max - 1), this.tokenizer.special.imEnd]);
    }
    return Int32Array.from(arr.slice(0, max));
  }

  // ───────────────────────── rollout ─────────────────────────

  private async generate(sample: VqaSample, prompt: Prompt, n: number, temperature: number, maxTokens: number, seed: number, signal?: AbortSignal): Promise<Omit<RolloutCompletion, 'reward' | 'rewardParts' | 'accuracy' | 'advantage'>[]> {
    const c = this.config;
    if (this.opts.policy) {
      const out = await this.opts.policy.generate(sample, {
        n, temperature, topP: c.topP, topK: c.topK || undefined, maxTokens, stopTokenIds: this.tokenizer.stopTokenIds, seed, signal,
      });
      return out.map((comp) => {
        if (comp.finishReason === 'error') {
          return { text: '', tokenIds: new Int32Array(0), finishReason: 'error' as const, errors: [`generation failed for sample ${sample.id}: ${comp.error ?? 'unknown error'}`] };
        }
        const ids = comp.tokenIds ?? this.tokenizer.encode(comp.text);
        return {
          text: comp.text, tokenIds: this.completionIds(ids, comp.finishReason), finishReason: comp.finishReason,
          logprobs: comp.logprobs ? Float32Array.from(comp.logprobs) : undefined, errors: [],
        };
      });
    }
    const res = await this.model.sample({
      prompt, n, temperature, topP: c.topP, topK: c.topK || undefined, maxTokens, stopTokenIds: this.tokenizer.stopTokenIds, seed, signal,
    });
    return res.tokenIds.map((ids, i) => {
      const tokenIds = this.completionIds(ids, res.finishReason[i]!);
      return {
        text: this.tokenizer.decodeCompletion(tokenIds).text, tokenIds, finishReason: res.finishReason[i]!,
        logprobs: res.logprobs[i], errors: [],
      };
    });
  }

  private async rolloutRound(indices: number[], step: number, signal?: AbortSignal): Promise<{ groups: RolloutGroup[]; genTokens: number; genSeconds: number; rewardSeconds: number }> {
    const c = this.config;
    const groups: RolloutGroup[] = [];
    let genTokens = 0;
    const t0 = now();
    for (const i of indices) {
      throwIfAborted(signal);
      const sample = this.opts.train[i]!;
      const { prompt, text } = await this.promptFor(sample);
      const seed = this.rng.seed();
      const gen = await this.generate(sample, prompt, c.numGenerations, c.temperature, c.maxCompletionLength, seed, signal);
      for (const g of gen) genTokens += g.tokenIds.length;
      groups.push({
        sample, promptText: text, promptIds: prompt.ids, imagePaths: sample.imagePaths ?? [sample.imagePath], prompt, zeroVariance: false,
        completions: gen.map((g) => ({ ...g, reward: NaN, rewardParts: {}, accuracy: NaN, advantage: 0 })),
      });
    }
    const genSeconds = (now() - t0) / 1000;
    throwIfAborted(signal);
    const t1 = now();
    const batch = await scoreGroups(groups.map((g) => ({
      sample: g.sample,
      completions: g.completions.map((c): string | Completion => (c.finishReason === 'error' ? { text: '', finishReason: 'error', error: c.errors[0] ?? 'generation failed' } : c.text)),
    })), this.opts.rewards, { onError: this.opts.onRewardError ?? 'exclude', step, signal, onMessage: (m) => this.log(m) });
    const failed = new Map<string, string[]>();
    for (const f of batch.failures) {
      if (f.kind === 'generation') continue;
      const key = `${f.group}:${f.completion}`;
      failed.set(key, [...(failed.get(key) ?? []), f.message]);
    }
    groups.forEach((g, gi) => {
      g.completions.forEach((comp, ci) => {
        const s = batch.groups[gi]!.completions[ci]!;
        comp.accuracy = this.accuracyOf(comp.text, g.sample.answers);
        if (comp.finishReason === 'error') return;
        comp.reward = s.total ?? NaN;
        for (const r of s.rewards) {
          if (r.score !== null) comp.rewardParts[r.name] = r.score;
          for (const [p, v] of Object.entries(r.parts ?? {})) comp.rewardParts[`${r.name}.${p}`] = v;
        }
        comp.errors.push(...(failed.get(`${gi}:${ci}`) ?? []));
      });
      const valid = g.completions.filter((x) => Number.isFinite(x.reward)).map((x) => x.reward);
      g.zeroVariance = valid.length < 2 || isZeroVariance(valid);
    });
    return { groups, genTokens, genSeconds, rewardSeconds: (now() - t1) / 1000 };
  }

  // ───────────────────────── log-probs ─────────────────────────

  private requests(groups: readonly RolloutGroup[], keep: boolean): ForwardRequest[] {
    return groups.map((g) => ({ prompt: g.prompt, completions: g.completions.filter(validCompletion).map((x) => x.tokenIds), keepForBackward: keep }));
  }

  /** Log-probs of each group's valid completions under `model`, in chunks of miniBatchPrompts. */
  private async logprobsUnder(model: EngineModel, groups: readonly RolloutGroup[]): Promise<Float32Array[][]> {
    const out: Float32Array[][] = [];
    for (const chunk of chunks(groups, this.config.miniBatchPrompts)) {
      const res = await model.forward(this.requests(chunk, false));
      for (const r of res) out.push(r.logprobs);
    }
    return out;
  }

  private async referenceModel(): Promise<EngineModel> {
    if (this.reference) return this.reference;
    if (!this.opts.loadModel) throw new Error('beta > 0 with reference "copy" needs a reference model: pass `reference` or `loadModel` to the Trainer');
    let dir = this.state.referenceDir;
    if (!dir || !existsSync(path.join(dir, 'config.json'))) {
      dir = this.opts.outputDir ? path.join(this.opts.outputDir, 'reference') : await fsp.mkdtemp(path.join(tmpdir(), 'vqalab-reference-'));
      await withAtomicOutput(dir, async (tmp) => { await this.model.save(tmp, { optimizer: false }); });
      this.state.referenceDir = dir;
    }
    this.reference = await this.opts.loadModel(dir, { role: 'reference' });
    return this.reference;
  }

  private async referenceLogprobs(groups: readonly RolloutGroup[]): Promise<Float32Array[][]> {
    if (this.referenceKind() === 'lora-base') {
      this.model.setLoraEnabled(false);
      try {
        return await this.logprobsUnder(this.model, groups);
      } finally {
        this.model.setLoraEnabled(true);
      }
    }
    return this.logprobsUnder(await this.referenceModel(), groups);
  }

  // ───────────────────────── one GRPO step ─────────────────────────

  /**
   * One GRPO step. With `signal`, an abort during the rollout leaves the trainer exactly as
   * before the step (AbortError); once updates have begun the step completes.
   */
  async step(options: { signal?: AbortSignal } = {}): Promise<StepOutput> {
    if (this.busy) throw new Error('a step is already running; await it before starting another');
    this.busy = true;
    const snapshot = { rng: this.rng.state(), cursor: this.cursor.position };
    try {
      return await this.stepInner(options.signal, snapshot);
    } finally {
      this.busy = false;
    }
  }

  private async stepInner(signal: AbortSignal | undefined, snapshot: { rng: RngState; cursor: CursorState }): Promise<StepOutput> {
    const c = this.config;
    const t0 = now();
    const step = this.state.step;
    const metrics = emptyMetrics(step, 'grpo');

    // ── Rollout (abortable) ──
    const kept: RolloutGroup[] = [];
    const sampled: RolloutGroup[] = [];
    let rounds = 0, genTokens = 0, genSeconds = 0, rewardSeconds = 0;
    try {
      const maxRounds = c.dynamicSampling ? c.maxSamplingRounds : 1;
      while (kept.length < c.promptsPerStep && rounds < maxRounds) {
        rounds++;
        const r = await this.rolloutRound(this.cursor.take(c.promptsPerStep - kept.length), step, signal);
        genTokens += r.genTokens; genSeconds += r.genSeconds; rewardSeconds += r.rewardSeconds;
        for (const g of r.groups) {
          sampled.push(g);
          if (!c.dynamicSampling || !g.zeroVariance) kept.push(g);
        }
      }
      throwIfAborted(signal);
    } catch (err) {
      this.rng.restore(snapshot.rng);
      this.cursor.position = snapshot.cursor;
      if (signal?.aborted) throw new AbortError();
      throw err;
    }

    // ── Rewards → advantages ──
    const tTrain = now();
    let oldLogprobs: Float32Array[][] | undefined;
    let refLogprobs: Float32Array[][] | undefined;
    const validRewards = kept.map((g) => g.completions.filter(validCompletion).map((x) => x.reward));
    let rewardsForAdvantage = validRewards;
    if (c.beta > 0 && c.klPlacement === 'reward') {
      oldLogprobs = await this.logprobsUnder(this.model, kept);
      refLogprobs = await this.referenceLogprobs(kept);
      rewardsForAdvantage = validRewards.map((rs, g) => klPenalizedRewards(rs, oldLogprobs![g]!, refLogprobs![g]!, c.beta, c.klEstimator).rewards);
    }
    const advantages = computeAdvantages(rewardsForAdvantage, { estimator: c.advantageEstimator, scale: c.scaleRewards, epsilon: c.advantageEpsilon });
    kept.forEach((g, gi) => {
      let k = 0;
      for (const comp of g.completions) if (validCompletion(comp)) comp.advantage = advantages[gi]![k++]!;
    });

    // ── Updates ──
    const klInLoss = c.beta > 0 && c.klPlacement === 'loss';
    if (!oldLogprobs && needsOldLogprobs(c)) oldLogprobs = await this.logprobsUnder(this.model, kept);
    if (klInLoss && !refLogprobs) refLogprobs = await this.referenceLogprobs(kept);
    const lr = learningRateAt(step, { learningRate: c.learningRate, warmupSteps: c.warmupSteps, totalSteps: c.totalSteps, schedule: c.lrSchedule, minLrRatio: c.minLrRatio });
    const acc = { tokens: 0, loss: 0, lossRuns: 0, updates: 0, low: 0, high: 0, dual: 0, kl: 0, klTokens: 0, ent: 0, entTokens: 0, gradNorm: 0, gradNorms: 0, skipped: 0 };
    for (let iter = 0; iter < c.numIterations; iter++) {
      const order = this.rng.shuffle(kept.map((_, i) => i));
      for (const mb of chunks(order, c.miniBatchPrompts)) {
        const active = mb.filter((gi) => klInLoss || kept[gi]!.completions.some((x) => validCompletion(x) && x.advantage !== 0));
        if (active.length === 0) continue;
        const idle = mb.filter((gi) => !active.includes(gi));
        const skippedLengths = idle.flatMap((gi) => kept[gi]!.completions.filter(validCompletion).map((x) => x.tokenIds.length));
        const fwd = await this.model.forward(this.requests(active.map((gi) => kept[gi]!), true));
        // Gradients accumulate over one minibatch's backward only (the forward keeps activations,
        // not gradients, so clearing after it is the same as before it).
        this.model.zeroGrad();
        const validOf = (gi: number) => kept[gi]!.completions.filter(validCompletion);
        const loss = grpoLoss({
          logprobs: active.flatMap((_, a) => fwd[a]!.logprobs),
          entropy: active.flatMap((_, a) => fwd[a]!.entropy),
          oldLogprobs: oldLogprobs ? active.flatMap((gi) => oldLogprobs![gi]!) : undefined,
          refLogprobs: klInLoss ? active.flatMap((gi) => refLogprobs![gi]!) : undefined,
          advantages: active.flatMap((gi) => validOf(gi).map((x) => x.advantage)),
          skippedLengths,
        }, {
          epsilonLow: c.epsilonLow, epsilonHigh: c.epsilonHigh, dualClip: c.dualClip, beta: klInLoss ? c.beta : 0,
          klEstimator: c.klEstimator, aggregation: c.lossAggregation, maxCompletionLength: c.maxCompletionLength,
        });
        if (!Number.isFinite(loss.loss)) {
          acc.skipped++;
          this.log(`step ${step}: the loss is ${loss.loss}; update skipped, weights untouched`);
          continue;
        }
        addLossMetrics(acc, loss.metrics, loss.loss);
        // Back to per-request, per-completion rows for the engine.
        let k = 0;
        await this.model.backward(active.map((_, a) => fwd[a]!.logprobs.map(() => loss.gradLogprobs[k++]!)));
        const st = await this.model.step({
          lr, beta1: c.adamBeta1, beta2: c.adamBeta2, eps: c.adamEpsilon, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm,
        });
        if (st.skipped) {
          acc.skipped++;
          this.log(`step ${step}: the engine skipped an update (${st.reason ?? 'non-finite gradient'}); weights untouched`);
        } else {
          acc.updates++;
        }
        if (Number.isFinite(st.gradNorm)) { acc.gradNorm += st.gradNorm; acc.gradNorms++; }
      }
    }
    const trainSeconds = (now() - tTrain) / 1000;

    // ── Metrics ──
    // Rewards, accuracy and lengths describe every completion sampled this step (all rounds), so
    // they measure the policy even when dynamic sampling kept few groups (or none: all tied).
    const all = sampled.flatMap((g) => g.completions);
    const valid = all.filter(validCompletion);
    const rs = meanStd(valid.map((x) => x.reward));
    metrics.rewardMean = rs.mean;
    metrics.rewardStd = rs.std;
    const partSums = new Map<string, { s: number; n: number }>();
    for (const comp of valid) for (const [p, v] of Object.entries(comp.rewardParts)) {
      const e = partSums.get(p) ?? { s: 0, n: 0 };
      e.s += v; e.n++;
      partSums.set(p, e);
    }
    metrics.rewardParts = Object.fromEntries([...partSums].map(([p, e]) => [p, e.s / e.n]));
    metrics.accuracy = meanStd(all.filter((x) => x.finishReason !== 'error').map((x) => x.accuracy)).mean;
    metrics.loss = acc.lossRuns > 0 ? acc.loss / acc.lossRuns : NaN;
    metrics.kl = acc.klTokens > 0 ? acc.kl / acc.klTokens : NaN;
    metrics.clipFractionLow = acc.tokens > 0 ? acc.low / acc.tokens : 0;
    metrics.clipFractionHigh = acc.tokens > 0 ? acc.high / acc.tokens : 0;
    metrics.clipFractionDual = acc.tokens > 0 ? acc.dual / acc.tokens : 0;
    metrics.entropy = acc.entTokens > 0 ? acc.ent / acc.entTokens : NaN;
    metrics.gradNorm = acc.gradNorms > 0 ? acc.gradNorm / acc.gradNorms : NaN;
    metrics.learningRate = lr;
    const lengths = all.filter((x) => x.finishReason !== 'error').map((x) => x.tokenIds.length);
    metrics.completionLength = meanStd(lengths).mean;
    metrics.completionLengthMax = lengths.length ? Math.max(...lengths) : NaN;
    metrics.truncatedFraction = lengths.length ? all.filter((x) => x.finishReason === 'length').length / lengths.length : NaN;
    metrics.zeroVarianceFraction = sampled.length ? sampled.filter((g) => g.zeroVariance).length / sampled.length : NaN;
    metrics.groups = kept.length;
    metrics.samplingRounds = rounds;
    metrics.rewardFailures = sampled.reduce((a, g) => a + g.completions.filter((x) => x.errors.length > 0).length, 0);
    metrics.skippedUpdates = acc.skipped;
    metrics.rolloutSeconds = genSeconds;
    metrics.rewardSeconds = rewardSeconds;
    metrics.trainSeconds = trainSeconds;
    metrics.tokensPerSecond = genSeconds > 0 ? genTokens / genSeconds : NaN;
    metrics.stepSeconds = (now() - t0) / 1000;
    metrics.memoryMiB = residentMiB();
    metrics.time = new Date().toISOString();

    this.state.step = step + 1;
    this.syncState();
    this.metrics.push(metrics);
    this.lastGroups = kept;
    return { step, groups: kept, metrics };
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
    const c = this.config;
    const out: StepMetrics[] = [];
    await this.recordStartFacts();
    if (this.recordsFacts) {
      recordFacts({ configs: { sft: { steps: options.steps, batchSize, learningRate: options.learningRate, warmupSteps: options.warmupSteps ?? 0, from: this.state.sftStep } } });
    }
    this.busy = true;
    try {
      for (let s = 0; s < options.steps; s++) {
        if (options.signal?.aborted) break;
        const t0 = now();
        const samples = this.sftCursor.take(batchSize).map((i) => this.opts.train[i]!);
        const requests: ForwardRequest[] = [];
        for (const sample of samples) {
          const { prompt } = await this.promptFor(sample);
          requests.push({ prompt, completions: [this.tokenizer.answerIds(sample.answer)], keepForBackward: true });
        }
        const lr = learningRateAt(s, { learningRate: options.learningRate, warmupSteps: options.warmupSteps ?? 0, totalSteps: options.steps, schedule: 'constant', minLrRatio: 0 });
        const fwd = await this.model.forward(requests);
        this.model.zeroGrad();

        const loss = sftLoss(fwd.flatMap((r) => r.logprobs));
        const m = emptyMetrics(this.state.sftStep, 'sft');
        if (Number.isFinite(loss.loss)) {
          let k = 0;
          await this.model.backward(fwd.map((r) => r.logprobs.map(() => loss.gradLogprobs[k++]!)));
          const st = await this.model.step({ lr, beta1: c.adamBeta1, beta2: c.adamBeta2, eps: c.adamEpsilon, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm });
          m.gradNorm = st.gradNorm;
          m.skippedUpdates = st.skipped ? 1 : 0;
        } else {
          m.skippedUpdates = 1;
          this.log(`sft step ${this.state.sftStep}: the loss is ${loss.loss}; update skipped`);
        }
        m.loss = loss.loss;
        m.entropy = meanStd(fwd.flatMap((r) => r.entropy.flatMap((e) => Array.from(e)))).mean;
        m.learningRate = lr;
        m.groups = samples.length;
        m.completionLength = loss.tokens / samples.length;
        m.stepSeconds = (now() - t0) / 1000;
        m.trainSeconds = m.stepSeconds;
        m.memoryMiB = residentMiB();
        this.state.sftStep++;
        this.syncState();
        this.metrics.push(m);
        out.push(m);
        await options.onStep?.(m);
      }
    } finally {
      this.busy = false;
    }
    return out;
  }

  // ───────────────────────── evaluation ─────────────────────────

  /** Greedy answers on a split (a name of evalSets, or samples), scored by the official VQA metric. */
  async evaluate(split: string | readonly VqaSample[] = Object.keys(this.opts.evalSets ?? {})[0] ?? '', options: { limit?: number; signal?: AbortSignal; name?: string } = {}): Promise<EvalSummary> {
    let name: string, samples: readonly VqaSample[];
    if (typeof split === 'string') {
      const set = this.opts.evalSets?.[split];
      if (!set) throw new Error(`no evaluation split "${split}"; the trainer has ${Object.keys(this.opts.evalSets ?? {}).map((s) => `"${s}"`).join(', ') || 'none (pass evalSets)'}`);
      name = split; samples = set;
    } else {
      // Samples given directly: `options.name` names them in the summary and the metrics log.
      name = options.name ?? 'samples'; samples = split;
    }
    if (options.limit !== undefined) samples = samples.slice(0, options.limit);
    const t0 = now();
    const rows: EvalRow[] = [];
    for (const sample of samples) {
      throwIfAborted(options.signal);
      const { prompt } = await this.promptFor(sample);
      const [comp] = await this.generate(sample, prompt, 1, 0, this.config.evalMaxTokens, 0, options.signal);
      const prediction = comp?.finishReason === 'error' ? '' : (comp?.text ?? '');
      rows.push({
        id: sample.id, question: sample.question, prediction, answers: sample.answers, answerType: sample.answerType ?? 'other',
        accuracy: this.accuracyOf(prediction, sample.answers),
      });
    }
    const summary = summarize(name, rows, (now() - t0) / 1000);
    const m = emptyMetrics(this.state.step, 'eval');
    m.accuracy = summary.overall / 100;
    m.extra = { split: name, overall: summary.overall, perAnswerType: summary.perAnswerType, n: summary.n };
    m.stepSeconds = summary.seconds;
    this.metrics.push(m);
    if (this.recordsFacts && typeof split === 'string' && Number.isFinite(summary.overall)) {
      // Keyed by where training stood, so the warm start's and the final evaluation both stay in the stamp.
      const at = this.state.step > 0 || this.state.sftStep === 0 ? `grpo${this.state.step}` : `sft${this.state.sftStep}`;
      const metrics: Record<string, number> = { [`eval/${name}@${at}`]: summary.overall };
      for (const [t, v] of Object.entries(summary.perAnswerType)) if (Number.isFinite(v)) metrics[`eval/${name}@${at}/${t}`] = v;
      recordFacts({ metrics });
    }
    return summary;
  }

  // ───────────────────────── run loop ─────────────────────────

  /**
   * Run steps until `steps` are done or an abort stops it at a step boundary: `signal`, or an
   * interrupt of the process-wide scope (src/util/interrupt.ts: Ctrl-C in a script, the kernel's
   * interrupt in a notebook) unless `handleSigint` is false.
   */
  async run(options: RunOptions): Promise<RunResult> {
    const work = (signal: AbortSignal | undefined) => this.runLoop(options, signal);
    return (options.handleSigint ?? true) ? interruptible(work, options.signal) : work(options.signal);
  }

  private async runLoop(options: RunOptions, signal: AbortSignal | undefined): Promise<RunResult> {
    const evalEvery = options.evalEvery ?? 0, ckptEvery = options.checkpointEvery ?? 0;
    const result: RunResult = { stepsRun: 0, stoppedBy: 'steps', lastStep: this.state.step - 1, evals: [], checkpoints: [] };
    await this.recordStartFacts();
    const live = this.liveDashboard(options);
    if (live) result.dashboard = live;
    // A dashboard that fails (an unreadable image, a closed front end) must not stop training.
    const show = async (what: string, fn: () => Promise<void> | void) => {
      if (!live) return;
      try {
        await fn();
      } catch (err) {
        this.log(`dashboard: could not show ${what}: ${(err as Error).message}`);
      }
    };
    try {
      for (let i = 0; i < options.steps; i++) {
        if (signal?.aborted) { result.stoppedBy = 'abort'; break; }
        let out: StepOutput;
        try {
          out = await this.step({ signal });
        } catch (err) {
          if (err instanceof AbortError) { result.stoppedBy = 'abort'; break; }
          throw err;
        }
        result.stepsRun++;
        result.lastStep = out.step;
        // Wall-clock numbers stay out of the plot: a report of the run must reproduce every plotted
        // value exactly (`vqalab report verify` on CPU). They remain in `trainer.metrics`.
        await show(`step ${out.step}`, () => live!.onStep({ ...out, metrics: { ...out.metrics, tokensPerSecond: NaN, stepSeconds: NaN } }));
        await options.onStep?.(out);
        if (evalEvery > 0 && this.state.step % evalEvery === 0 && this.opts.evalSets) {
          const summary = await this.evaluate(options.evalSplit);
          result.evals.push(summary);
          await show(`the evaluation after step ${out.step}`, () => live!.dashboard.log({ step: out.step, [`eval/${summary.split}`]: summary.overall / 100 }));
          await options.onEval?.(summary);
        }
        if (ckptEvery > 0 && this.state.step % ckptEvery === 0) result.checkpoints.push(await this.save());
      }
    } catch (err) {
      await show('the error', () => live!.finish('error', `stopped by an error after step ${this.state.step - 1}: ${(err as Error).message}`));
      throw err;
    }
    if (signal?.aborted) {
      result.stoppedBy = 'abort';
      this.log(`stopped at a step boundary after step ${this.state.step - 1}`);
    }
    await show('the end of the run', () => live!.finish(result.stoppedBy === 'abort' ? 'stopped' : 'done',
      result.stoppedBy === 'abort' ? `interrupted after step ${this.state.step - 1}; the trainer can go on` : undefined));
    this.recordRunFacts(result);
    return result;
  }

  /** The run's dashboard per `options.dashboard` (see RunOptions), or undefined. */
  private liveDashboard(options: RunOptions): TrainingDashboard | undefined {
    const want = options.dashboard ?? 'auto';
    if (want === false) return undefined;
    if (want !== 'auto' && want !== true && (typeof want !== 'object' || want === null || Array.isArray(want))) {
      throw invalidParameterError('dashboard', "'auto', true, false or dashboard options", want);
    }
    const given: RunDashboardOptions = typeof want === 'object' ? want : {};
    const target = given.sink ?? getDisplaySink();
    if (want === 'auto' && !target) return undefined;
    // A front end that fails (a closed socket) must not stop training, also not from the
    // dashboard's throttle timer, where an exception would end the process.
    const sink: DisplaySink | undefined = target && {
      display: (bundle, opts) => {
        try {
          target.display(bundle, opts);
        } catch (err) {
          this.log(`dashboard: could not send an update: ${(err as Error).message}`);
        }
      },
    };
    const evalKeys = (options.evalEvery ?? 0) > 0 && this.opts.evalSets ? [`eval/${options.evalSplit ?? Object.keys(this.opts.evalSets)[0]}`] : [];
    const keys = ['reward', 'accuracy', ...evalKeys, 'entropy', 'loss', 'grad_norm',
      'completion_length', 'zero_variance_fraction', ...(this.config.beta > 0 ? ['kl'] : [])];
    return trainingDashboard({
      title: 'GRPO training', keys, ...given, sink,
      // Progress counts global steps, so a continued run shows "12 of 20" rather than restarting at 0.
      total: this.state.step + options.steps, firstStep: 0,
      decodeToken: (id) => this.tokenizer.decode([id], { skipSpecialTokens: false }),
    });
  }

  // ───────────────────────── report facts ─────────────────────────

  private startFactsRecorded = false;

  private get recordsFacts(): boolean {
    return this.opts.recordFacts ?? true;
  }

  /** Config, seeds, data fingerprints, starting weights, engine and device: once, when training starts. */
  private async recordStartFacts(): Promise<void> {
    if (!this.recordsFacts || this.startFactsRecorded) return;
    this.startFactsRecorded = true;
    const datasets = [{ name: 'train', split: 'train', rows: this.opts.train.length, fingerprint: samplesFingerprint(this.opts.train) }];
    for (const [name, set] of Object.entries(this.opts.evalSets ?? {})) datasets.push({ name, split: name, rows: set.length, fingerprint: samplesFingerprint(set) });
    const dir = this.opts.modelDir ?? this.tokenizer.source;
    const hash = await weightsHashIfAny(dir);
    const models: ModelFact[] = hash ? [{ name: path.basename(path.resolve(dir)), hash, path: path.resolve(dir), role: this.state.step > 0 || this.state.sftStep > 0 ? 'resumed' : 'base' }] : [];
    recordFacts({
      configs: { grpo: { ...this.config } }, seeds: { trainer: this.config.seed }, datasets, models,
      versions: { engine: engineVersion(this.model) }, devices: [deviceFact(this.model)],
      ...(this.model.device === 'cpu' ? {} : { tolerances: { '*': { rtol: 2e-2, atol: 1e-3 } } }),
    });
  }

  /** The run's final numbers (later runs of the same trainer overwrite them: the stamp keeps the last). */
  private recordRunFacts(result: RunResult): void {
    if (!this.recordsFacts) return;
    const last = this.metrics.history.filter((m) => m.kind === 'grpo').at(-1);
    const metrics: Record<string, number> = { 'train/steps': this.state.step };
    if (last) {
      for (const [k, v] of [['train/reward', last.rewardMean], ['train/accuracy', last.accuracy], ['train/entropy', last.entropy]] as const) {
        if (Number.isFinite(v)) metrics[k] = v;
      }
    }
    recordFacts({ metrics, notes: { stoppedBy: result.stoppedBy } });
  }

  // ───────────────────────── checkpoints ─────────────────────────

  /**
   * Write a checkpoint atomically: model/ (Hugging Face folder with optimizer state, plus the
   * tokenizer files) and trainer.json (config, step, RNG, data cursors, metrics history).
   * Default place: outputDir/checkpoints/checkpoint-NNNNNN, recorded in checkpoints/latest.
   */
  async save(dir?: string): Promise<string> {
    if (this.busy) throw new Error('a step is running; save() between steps');
    if (!dir && !this.opts.outputDir) throw new Error('save() needs a directory: pass one, or give the Trainer an outputDir');
    const defaultDir = !dir;
    const target = path.resolve(dir ?? path.join(this.opts.outputDir!, 'checkpoints', `checkpoint-${String(this.state.step).padStart(6, '0')}`));
    mkdirSync(path.dirname(target), { recursive: true });
    this.syncState();
    const file: CheckpointFile = {
      format: 'vqalab.trainer', version: CHECKPOINT_VERSION, config: { ...this.config }, ...this.state,
      metrics: JSON.parse(JSON.stringify(this.metrics.history, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v))) as unknown[],
      savedAt: new Date().toISOString(),
    };
    this.busy = true;
    try {
      await withAtomicOutput(target, async (tmp) => {
        mkdirSync(tmp, { recursive: true });
        await this.model.save(path.join(tmp, 'model'), { optimizer: true });
        const tokDir = this.opts.tokenizerDir ?? (existsSync(path.join(this.tokenizer.source, 'tokenizer.json')) ? this.tokenizer.source : undefined);
        if (tokDir) {
          for (const f of TOKENIZER_FILES) {
            const src = path.join(tokDir, f), dst = path.join(tmp, 'model', f);
            if (existsSync(src) && !existsSync(dst)) copyFileSync(src, dst);
          }
        }
        await fsp.writeFile(path.join(tmp, 'trainer.json'), JSON.stringify(file, null, 1));
      });
    } finally {
      this.busy = false;
    }
    if (defaultDir) await writeFileAtomic(path.join(path.dirname(target), 'latest'), `${path.basename(target)}\n`);
    if (this.recordsFacts) {
      const hash = await weightsHash(path.join(target, 'model')).catch(() => undefined);
      if (hash) recordFacts({ models: [{ name: path.basename(target), hash, path: target, role: 'checkpoint', step: this.state.step }] });
    }
    return target;
  }

  /**
   * Continue from a checkpoint (a checkpoint folder, or a run's outputDir/checkpoints folder or
   * outputDir, whose `latest` is used). `loadModel` must restore the optimizer state saved with
   * the weights. On CPU the resumed run continues bit-exactly.
   */
  static async resume(dir: string, options: Omit<TrainerOptions, 'model' | 'tokenizer' | 'config'> & {
    loadModel: (dir: string, info: { role: 'reference' | 'resume' }) => Promise<EngineModel>;
    tokenizer?: VlmTokenizer;
    /** Fields to change on resume (changing sampling or batch fields breaks bit-exactness). */
    config?: Partial<GrpoConfig>;
  }): Promise<Trainer> {
    const ckpt = resolveCheckpoint(dir);
    const raw = JSON.parse(readFileSync(path.join(ckpt, 'trainer.json'), 'utf8')) as CheckpointFile;
    if (raw.format !== 'vqalab.trainer') throw new Error(`${ckpt}/trainer.json: not a vqalab trainer checkpoint (format ${JSON.stringify(raw.format)})`);
    if (raw.version !== CHECKPOINT_VERSION) throw new Error(`${ckpt}/trainer.json: checkpoint version ${raw.version}, this vqalab reads version ${CHECKPOINT_VERSION}`);
    const model = await options.loadModel(path.join(ckpt, 'model'), { role: 'resume' });
    const tokenizer = options.tokenizer ?? Tokenizer.load(path.join(ckpt, 'model'));
    const state: TrainerState = {
      step: raw.step, sftStep: raw.sftStep, rng: raw.rng, cursor: raw.cursor, sftCursor: raw.sftCursor, referenceDir: raw.referenceDir,
    };
    return new Trainer({ modelDir: path.join(ckpt, 'model'), ...options, model, tokenizer, config: { ...raw.config, ...options.config } }, { state, metrics: metricsFromJson(raw.metrics) });
  }
}

function validCompletion(c: RolloutCompletion): boolean {
  return c.finishReason !== 'error' && Number.isFinite(c.reward) && c.tokenIds.length > 0;
}

function addLossMetrics(acc: { tokens: number; loss: number; lossRuns: number; low: number; high: number; dual: number; kl: number; klTokens: number; ent: number; entTokens: number }, m: LossMetrics, loss: number): void {
  acc.tokens += m.tokens;
  acc.loss += loss;
  acc.lossRuns++;
  acc.low += m.clipFractionLow * m.tokens;
  acc.high += m.clipFractionHigh * m.tokens;
  acc.dual += m.clipFractionDual * m.tokens;
  if (Number.isFinite(m.kl)) { acc.kl += m.kl * m.tokens; acc.klTokens += m.tokens; }
  if (Number.isFinite(m.entropy)) { acc.ent += m.entropy * m.tokens; acc.entTokens += m.tokens; }
}

/** A checkpoint folder (has trainer.json), or a folder whose `latest` (or checkpoints/latest) names one. */
export function resolveCheckpoint(dir: string): string {
  if (existsSync(path.join(dir, 'trainer.json'))) return dir;
  for (const base of [dir, path.join(dir, 'checkpoints')]) {
    const latest = path.join(base, 'latest');
    if (existsSync(latest)) {
      const name = readFileSync(latest, 'utf8').trim();
      const ckpt = path.join(base, name);
      if (existsSync(path.join(ckpt, 'trainer.json'))) return ckpt;
      throw new Error(`${latest} names ${name}, but ${ckpt}/trainer.json does not exist`);
    }
  }
  throw new Error(`${dir}: not a checkpoint (no trainer.json) and no checkpoints/latest to follow`);
}
