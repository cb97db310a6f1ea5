/**
 * The trainer's public option and result types, and its errors (src/grpo/trainer.ts re-exports them).
 */
import type { EngineModel, ImageInput } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { Policy } from '../rollout/types.js';
import { expectInteger, expectOneOf } from '../util/validate.js';
import type { AgentOptions } from './agent-step.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { checkTokenizerFamily } from '../text/family.js';
import type { OnRewardError, RewardSet } from '../reward/runner.js';
import type { GrpoConfig } from './config.js';
import type { EvalSummary } from './evaluate.js';
import type { StepMetrics } from './metrics.js';
import type { SkippedSample } from './rollout.js';
import type { RunOptionExtras, RunResultExtras, StepOutput, TrainerCallback } from './events.js';

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
  /** Per-question accuracy in [0, 1] for metrics and evaluate(); default `scoreAnswer` (src/eval): the official VQA metric with 10 answers, normalised exact match against any reference with fewer. It gets the answer after a `<think>…</think>` block (`answerAfterThinking`; '' for an unclosed one), rewards the whole text. */
  vqaAccuracy?: (prediction: string, answers: readonly string[]) => number;
  /** The processed images of a sample (src/vision's Qwen2-VL processor), in prompt order. */
  loadImages: (sample: VqaSample) => Promise<ImageInput[]>;
  config?: Partial<GrpoConfig>;
  /** Roll out with this policy instead of the engine's sampler (e.g. an OpenAI-compatible server). */
  policy?: Policy;
  /** Policy requests of one rollout round or evaluation in flight at once. Default 16. */
  policyConcurrency?: number;
  /**
   * 'batched' (default): all prompts of a rollout round go to the engine together (one batched
   * decode loop). 'sequential': one prompt at a time — the same groups, slower; for comparisons.
   */
  rolloutMode?: 'batched' | 'sequential';
  /** Questions answered at once by `evaluate()`. Default 256 on a GPU engine (one batched run), 64 on the CPU and through a policy. */
  evalBatchSize?: number;
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
  /** Messages for the user (failing rewards, skipped samples and updates). Default: none. */
  log?: (line: string) => void;
  /** Most processed images kept in memory (by sample id). Default 512. */
  imageCacheSize?: number;
  /**
   * Record report facts: config, seeds, dataset fingerprints, the starting weights' hash, engine
   * version and device when training starts; each checkpoint's hash; final metrics after each run
   * and named evaluation. Recorded by the report layer's subscriber (src/report/trainer-facts.ts,
   * loaded by the package entry); in the vqalab kernel they become the report's stamp. Default true.
   */
  recordFacts?: boolean;
  /** The folder the model's weights were loaded from, for their hash in the report (default: the tokenizer's folder when it holds weights). */
  modelDir?: string;
  /** Subscribers to the trainer's events (src/grpo/events.ts), after the registered layers'. */
  callbacks?: TrainerCallback[];
  /**
   * Train an agent (docs/agents.md): each step runs this command G = numGenerations times per
   * prompt through a training gateway over the model (Agent Lightning's runner contract); the
   * rewards are the ones the agent posts (`rewards` is not used for GRPO steps then), multi-turn
   * attempts are trajectories with non-policy tokens masked. β must be 0.
   */
  agent?: AgentOptions;
}

export interface SftOptions {
  steps: number;
  /** Samples per update. Default 16. */
  batchSize?: number;
  learningRate: number;
  warmupSteps?: number;
  signal?: AbortSignal;
  onStep?: (metrics: StepMetrics) => void | Promise<void>;
}

export interface RunOptions extends RunOptionExtras {
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
  /** Subscribers for this run only (after the trainer's). */
  callbacks?: TrainerCallback[];
}

export interface RunResult extends RunResultExtras {
  stepsRun: number;
  stoppedBy: 'steps' | 'abort';
  lastStep: number;
  evals: EvalSummary[];
  checkpoints: string[];
}

export class AbortError extends Error {
  constructor(message = 'aborted at a step boundary; the trainer is as it was before this step') {
    super(message);
    this.name = 'AbortError';
  }
}

/** Too many samples of a step failed (config.maxBadSampleFraction). */
export class BadSamplesError extends Error {
  constructor(
    message: string,
    readonly skipped: SkippedSample[],
  ) {
    super(message);
    this.name = 'BadSamplesError';
  }
}

/** The Trainer's checks of its options (required fields, rolloutMode, evalBatchSize, policyConcurrency). */
export function checkTrainerOptions(options: TrainerOptions): void {
  if (!options || typeof options !== 'object')
    throw new TypeError('Trainer needs options: {model, tokenizer, train, rewards, loadImages}');
  for (const key of ['model', 'tokenizer', 'train', 'rewards', 'loadImages'] as const) {
    if (options[key] === undefined || options[key] === null) throw new TypeError(`Trainer option "${key}" is required`);
  }
  // a folder whose tokenizer is another Qwen-VL family's would train on prompts of the wrong template
  const modelType = options.model.config?.modelType;
  if (modelType && options.tokenizer.config) checkTokenizerFamily(options.tokenizer, modelType);
  if (options.rolloutMode !== undefined)
    expectOneOf('rolloutMode', options.rolloutMode, ['batched', 'sequential'] as const);
  if (options.evalBatchSize !== undefined) expectInteger('evalBatchSize', options.evalBatchSize, 1);
  if (options.policyConcurrency !== undefined) expectInteger('policyConcurrency', options.policyConcurrency, 1);
}
