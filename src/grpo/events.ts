/**
 * The trainer's events (transformers' TrainerCallback, STYLE.md §7): the trainer raises one event
 * per moment of training — a run begins, a step ends, an evaluation ends, a checkpoint is saved,
 * a run ends — and knows nothing of who listens. The notebook dashboard (src/display/training.ts)
 * and the report facts (src/report/trainer-facts.ts) are subscribers in their own layers: they
 * register a {@link TrainerPlugin} when their module loads (the package entry, src/index.ts,
 * loads both), so `src/grpo` imports nothing from src/display or src/report.
 *
 * A callback may set `control.shouldStop` to end `run()` at the next step boundary (early stopping
 * without the trainer knowing why).
 */
import type { EngineModel } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import type { GrpoConfig } from './config.js';
import type { EvalSummary } from './evaluate.js';
import type { MetricsLog, StepMetrics } from './metrics.js';
import type { RolloutGroup, SkippedSample } from './rollout.js';

/** One GRPO step's result. */
export interface StepOutput {
  step: number;
  groups: RolloutGroup[];
  metrics: StepMetrics;
  /** Samples drawn this step that could not be rolled out (unreadable image, prompt too long, reward error), by id. */
  skipped: SkippedSample[];
}

/** Flags a callback may set; read by the trainer at the next step boundary. */
export interface TrainerControl {
  shouldStop: boolean;
}

/** Where a run stands when an event is raised. */
export interface RunState {
  /** Global GRPO step the run started at, and how many steps it asked for. */
  firstStep: number;
  steps: number;
  evalEvery: number;
  evalSplit?: string;
}

/**
 * What subscribers may read of a trainer (the Trainer class implements it). Subscribers must not
 * call step()/run() from inside an event.
 */
export interface TrainerView {
  readonly config: Readonly<GrpoConfig>;
  readonly model: EngineModel;
  readonly tokenizer: VlmTokenizer;
  readonly metrics: MetricsLog;
  readonly globalStep: number;
  readonly sftSteps: number;
  readonly train: readonly VqaSample[];
  readonly evalSets: Readonly<Record<string, readonly VqaSample[]>> | undefined;
  /** The folder the starting weights came from (for their hash), when known. */
  readonly modelDir: string | undefined;
  /** Whether the trainer was asked to record report facts (TrainerOptions.recordFacts, default true). */
  readonly recordsFacts: boolean;
  log(line: string): void;
}

/** One method per moment; every method is optional and may be async. */
export interface TrainerCallback {
  /** Training starts: the first run() or sft() of this trainer (once per trainer). */
  onTrainerStart?(trainer: TrainerView): void | Promise<void>;
  /** A run() begins. */
  onRunBegin?(trainer: TrainerView, run: RunState): void | Promise<void>;
  /** An SFT warm start begins. */
  onSftBegin?(
    trainer: TrainerView,
    info: { steps: number; batchSize: number; learningRate: number; warmupSteps: number; from: number },
  ): void | Promise<void>;
  /** A GRPO step ended (step() alone, or inside run()). */
  onStepEnd?(trainer: TrainerView, out: StepOutput, control: TrainerControl): void | Promise<void>;
  /** An SFT update ended. */
  onSftStepEnd?(trainer: TrainerView, metrics: StepMetrics): void | Promise<void>;
  /** An evaluation ended; `named` when it ran on a named split of evalSets. `at`: 'grpoN' or 'sftN'. */
  onEvaluate?(
    trainer: TrainerView,
    summary: EvalSummary,
    info: { named: boolean; at: string; step: number },
    control: TrainerControl,
  ): void | Promise<void>;
  /** A checkpoint was written. */
  onSave?(trainer: TrainerView, dir: string, info: { step: number }): void | Promise<void>;
  /** A run ended: finished its steps, stopped (abort or control), or failed with `error`. */
  onRunEnd?(
    trainer: TrainerView,
    result: { stepsRun: number; stoppedBy: 'steps' | 'abort'; lastStep: number; error?: Error },
  ): void | Promise<void>;
}

/**
 * Extra fields of `run()`'s options and result that subscribers add by declaration merging
 * (src/display/training.ts adds `dashboard`).
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface RunOptionExtras {}
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface RunResultExtras {}

/** A subscriber layer: callbacks made per trainer and per run. */
export interface TrainerPlugin {
  /** Unique name ('dashboard', 'facts'); registering a name again replaces the plugin. */
  name: string;
  /** Run options this plugin reads (a run that sets one with no plugin to read it is an error). */
  runOptions?: string[];
  /** A callback for the trainer's whole life (made once, at its first event). */
  forTrainer?(trainer: TrainerView): TrainerCallback | undefined;
  /** A callback for one run; `attach` adds fields to the run's result. Throwing rejects run(). */
  forRun?(
    trainer: TrainerView,
    options: Readonly<Record<string, unknown>>,
    run: RunState,
  ): { callback: TrainerCallback; attach?: Partial<RunResultExtras> } | undefined;
}

const plugins = new Map<string, TrainerPlugin>();

/** Register a subscriber layer for every trainer (done by src/display/training.ts and src/report/trainer-facts.ts). */
export function registerTrainerPlugin(plugin: TrainerPlugin): void {
  plugins.set(plugin.name, plugin);
}

export function trainerPlugins(): TrainerPlugin[] {
  return [...plugins.values()];
}
