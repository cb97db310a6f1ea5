// Trainer, grpoConfig: at the package's top level (src/index.ts), so not repeated here.
export { AbortError, BadSamplesError } from './trainer.js';
export type {
  TrainerOptions,
  RolloutGroup,
  RolloutCompletion,
  SkippedSample,
  StepOutput,
  SftOptions,
  RunOptions,
  RunResult,
} from './trainer.js';
export {
  registerTrainerPlugin,
  type TrainerCallback,
  type TrainerControl,
  type TrainerPlugin,
  type TrainerView,
  type RunState,
} from './events.js';
export { rolloutRound, PromptBuilder } from './rollout.js';
export { grpoUpdate, fillStepMetrics } from './update.js';
export { sftUpdate } from './sft.js';
export { evaluateSamples } from './evaluate.js';
export { writeCheckpoint, readCheckpoint, removeStaleTemps } from './checkpoint.js';
export {
  ADVANTAGE_ESTIMATORS,
  REWARD_SCALINGS,
  LOSS_AGGREGATIONS,
  KL_ESTIMATORS,
  KL_PLACEMENTS,
  REFERENCE_KINDS,
  LR_SCHEDULES,
  GRPO_DEFAULTS,
  ConfigError,
  needsOldLogprobs,
  needsReference,
  type AdvantageEstimator,
  type RewardScaling,
  type LossAggregation,
  type KlEstimator,
  type KlPlacement,
  type ReferenceKind,
  type LrSchedule,
  type GrpoConfig,
} from './config.js';
export { computeAdvantages, isZeroVariance, klTerm, klPenalizedRewards, sampleStd } from './advantages.js';
export { grpoLoss, sftLoss, aggregationWeights } from './loss.js';
export type { LossBatch, LossOptions, LossMetrics, LossResult } from './loss.js';
export { learningRateAt } from './schedule.js';
export { MetricsLog, type StepMetrics } from './metrics.js';
export { summarize, type EvalSummary, type EvalRow } from './evaluate.js';
