/**
 * The GRPO trainer's configuration: one typed object. Every field documents its default and its
 * effect, and the TRL / verl name where one exists (docs/grpo.md has the full mapping table).
 * `grpoConfig(partial)` fills defaults, checks each field, then checks fields against each other;
 * errors name the fix.
 */
import { expectBoolean, expectInteger, expectNumber, expectOneOf, invalidParameterError } from '../util/validate.js';

export const ADVANTAGE_ESTIMATORS = ['grpo', 'dr_grpo', 'rloo'] as const;
export type AdvantageEstimator = (typeof ADVANTAGE_ESTIMATORS)[number];
export const REWARD_SCALINGS = ['group', 'batch', 'none'] as const;
export type RewardScaling = (typeof REWARD_SCALINGS)[number];
export const LOSS_AGGREGATIONS = [
  'token-mean',
  'seq-mean-token-sum',
  'seq-mean-token-mean',
  'seq-mean-token-sum-norm',
] as const;
export type LossAggregation = (typeof LOSS_AGGREGATIONS)[number];
export const KL_ESTIMATORS = ['k1', 'k2', 'k3'] as const;
export type KlEstimator = (typeof KL_ESTIMATORS)[number];
export const KL_PLACEMENTS = ['loss', 'reward'] as const;
export type KlPlacement = (typeof KL_PLACEMENTS)[number];
export const REFERENCE_KINDS = ['auto', 'copy', 'lora-base'] as const;
export type ReferenceKind = (typeof REFERENCE_KINDS)[number];
export const LR_SCHEDULES = ['constant', 'cosine'] as const;
export type LrSchedule = (typeof LR_SCHEDULES)[number];

export interface GrpoConfig {
  // ───────────── Run ─────────────
  /** Seed of every random choice the trainer makes (prompt order, minibatch order, sampling seeds). Default 0. */
  seed: number;
  /**
   * Number of trainer steps the learning-rate schedule spans (warmup + decay); `run()` may stop
   * earlier or go on (the LR then stays at its final value). Default 100. TRL `max_steps`;
   * verl `trainer.total_training_steps`.
   */
  totalSteps: number;

  // ───────────── Rollout ─────────────
  /**
   * Prompts (distinct samples) drawn per step; each gets `numGenerations` completions. Default 8.
   * verl `data.train_batch_size`; TRL: per_device_train_batch_size × gradient_accumulation_steps ×
   * processes / num_generations.
   */
  promptsPerStep: number;
  /** G, completions per prompt (the group). At least 2. Default 8. TRL `num_generations`; verl `actor_rollout_ref.rollout.n`. */
  numGenerations: number;
  /** Most tokens sampled per completion (stop token included). Default 16. TRL `max_completion_length`; verl `data.max_response_length`. */
  maxCompletionLength: number;
  /** Sampling temperature for rollouts; must be > 0 (identical completions teach nothing). Default 1.0. TRL `temperature`. */
  temperature: number;
  /** Nucleus sampling; 1 disables. Default 1.0. TRL `top_p`. */
  topP: number;
  /** Top-k sampling; 0 disables. Default 0. TRL `top_k`. */
  topK: number;

  // ───────────── Dynamic sampling (DAPO) ─────────────
  /**
   * Drop groups whose rewards all tie (zero advantage: no signal) and draw more prompts until
   * `promptsPerStep` informative groups are collected or `maxSamplingRounds` rounds ran.
   * Default false. verl `algorithm.filter_groups.enable`.
   */
  dynamicSampling: boolean;
  /** Most rollout rounds per step with dynamic sampling (the first included). Default 3. verl `algorithm.filter_groups.max_num_gen_batches`. */
  maxSamplingRounds: number;
  /**
   * Bad rows: a sample whose images do not load, whose prompt does not fit the model's context, or
   * whose generation or rewards fail for the whole group is skipped (counted by id in the step's
   * metrics and output) and the step goes on with the others. When more than this fraction of a
   * step's drawn samples fail, the step stops with an error listing them. Default 0.5; 1 never stops.
   */
  maxBadSampleFraction: number;

  // ───────────── Advantages ─────────────
  /**
   * Baseline of the advantage. `grpo`: (r − group mean) / (std + ε); `dr_grpo`: r − group mean
   * (Dr. GRPO: no std division; needs scaleRewards 'none'); `rloo`: r − mean of the group's
   * other rewards (leave-one-out). Default 'grpo'. verl `algorithm.adv_estimator` (grpo, rloo);
   * TRL: `scale_rewards` false for Dr. GRPO.
   */
  advantageEstimator: AdvantageEstimator;
  /**
   * What the advantage is divided by: the group's reward std ('group'), the whole batch's
   * ('batch', more robust when groups are nearly tied), or nothing ('none'). Std is the unbiased
   * sample std. Default 'group'. TRL `scale_rewards` ("group" | "batch" | "none");
   * verl `algorithm.norm_adv_by_std_in_grpo` (true = 'group').
   */
  scaleRewards: RewardScaling;
  /** ε added to the std before dividing. Default 1e-4 (TRL's; verl uses 1e-6). */
  advantageEpsilon: number;

  // ───────────── Policy loss ─────────────
  /**
   * μ: passes over each step's rollouts. With μ > 1 (or several minibatches) old log-probs are
   * computed before the first update and the PPO ratio departs from 1. Default 1.
   * TRL `num_iterations`; verl `actor_rollout_ref.actor.ppo_epochs`.
   */
  numIterations: number;
  /**
   * Prompts (whole groups) per optimizer update; must divide `promptsPerStep`. Default: equal to
   * promptsPerStep (one update per pass). verl `ppo_mini_batch_size` (counted in prompts, as here).
   */
  miniBatchPrompts: number;
  /**
   * Forwarded tokens (prompt once per piece + completions) per micro-batch of a training pass; the
   * gradients of a minibatch's micro-batches add up before its one update, so the update does not
   * change. Default 0: no split on the CPU; on a GPU sized from the memory the device can still give
   * and what earlier passes cost per token, halved after an out-of-memory.
   */
  microBatchTokens: number;
  /** Lower clip: the ratio is clipped below at 1 − epsilonLow. Default 0.2. TRL `epsilon`; verl `clip_ratio_low`. */
  epsilonLow: number;
  /** Upper clip: at 1 + epsilonHigh (DAPO's clip-higher uses 0.28). Default 0.2. TRL `epsilon_high`; verl `clip_ratio_high`. */
  epsilonHigh: number;
  /**
   * Dual-clip constant c (> 1): for negative advantages the per-token loss is capped at −c·A.
   * 0 disables. Default 0. verl `clip_ratio_c` (3.0 there).
   */
  dualClip: number;
  /**
   * How per-token losses become one number. `token-mean`: Σ/Σ tokens of the minibatch (DAPO,
   * TRL bnpo/dapo); `seq-mean-token-mean`: mean over sequences of each sequence's token mean
   * (original GRPO, TRL "grpo"); `seq-mean-token-sum`: mean over sequences of token sums;
   * `seq-mean-token-sum-norm`: token sums / maxCompletionLength, mean over sequences (Dr. GRPO,
   * TRL "dr_grpo"). Default 'token-mean'. verl `loss_agg_mode`.
   */
  lossAggregation: LossAggregation;

  // ───────────── KL ─────────────
  /**
   * KL coefficient β. 0 skips the KL term and loads no reference model. Default 0.
   * TRL `beta`; verl `kl_loss_coef` (in the loss) or `algorithm.kl_ctrl.kl_coef` (in the reward).
   */
  beta: number;
  /**
   * KL estimator with d = log π_ref − log π: k1 = −d, k2 = d²/2, k3 = eᵈ − d − 1 (Schulman's
   * unbiased, always ≥ 0). Default 'k3'. verl `kl_loss_type` (kl/k1, mse/k2, low_var_kl/k3).
   */
  klEstimator: KlEstimator;
  /**
   * 'loss': β·KL is added to every token's loss (GRPO paper, TRL). 'reward': β·Σ_t KL_t (rollout
   * policy vs reference) is subtracted from each completion's reward before advantages (PPO
   * style). Default 'loss'. verl `use_kl_loss` vs `algorithm.use_kl_in_reward`.
   */
  klPlacement: KlPlacement;
  /**
   * The reference policy when β > 0: 'copy' (a frozen copy of the starting weights), 'lora-base'
   * (the same model with LoRA adapters disabled; needs LoRA, costs no memory), 'auto' (lora-base
   * with LoRA, else copy). Ignored when β = 0. Default 'auto'.
   */
  reference: ReferenceKind;

  // ───────────── Optimizer (AdamW) ─────────────
  /** Peak learning rate. Default 1e-6 (TRL's). TRL `learning_rate`; verl `actor.optim.lr`. */
  learningRate: number;
  /** AdamW β1. Default 0.9. TRL `adam_beta1`. */
  adamBeta1: number;
  /** AdamW β2. Default 0.999. TRL `adam_beta2`. */
  adamBeta2: number;
  /** AdamW ε. Default 1e-8. TRL `adam_epsilon`. */
  adamEpsilon: number;
  /** Decoupled weight decay, applied to ≥2-D weights only. Default 0. TRL `weight_decay`; verl `actor.optim.weight_decay`. */
  weightDecay: number;
  /** Clip the global gradient norm to this; 0 disables. Default 1.0. TRL `max_grad_norm`; verl `actor.grad_clip`. */
  maxGradNorm: number;
  /** Steps of linear warmup from 0 to learningRate (step s gets s/warmupSteps of it). Default 0. TRL `warmup_steps`; verl `lr_warmup_steps`. */
  warmupSteps: number;
  /** After warmup: 'constant' or 'cosine' decay to minLrRatio·learningRate at totalSteps. Default 'constant'. TRL `lr_scheduler_type`; verl `warmup_style`/`lr_scheduler_type`. */
  lrSchedule: LrSchedule;
  /** Floor of the cosine schedule, as a fraction of learningRate. Default 0. verl `min_lr_ratio`. */
  minLrRatio: number;

  // ───────────── Evaluation ─────────────
  /** Most tokens of a greedy answer in `evaluate()`. Default 16. */
  evalMaxTokens: number;
}

export const GRPO_DEFAULTS: Readonly<GrpoConfig> = Object.freeze({
  seed: 0,
  totalSteps: 100,
  promptsPerStep: 8,
  numGenerations: 8,
  maxCompletionLength: 16,
  temperature: 1.0,
  topP: 1.0,
  topK: 0,
  dynamicSampling: false,
  maxSamplingRounds: 3,
  maxBadSampleFraction: 0.5,
  advantageEstimator: 'grpo',
  scaleRewards: 'group',
  advantageEpsilon: 1e-4,
  numIterations: 1,
  miniBatchPrompts: 0, // 0 = promptsPerStep, resolved by grpoConfig()
  microBatchTokens: 0,
  epsilonLow: 0.2,
  epsilonHigh: 0.2,
  dualClip: 0,
  lossAggregation: 'token-mean',
  beta: 0,
  klEstimator: 'k3',
  klPlacement: 'loss',
  reference: 'auto',
  learningRate: 1e-6,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEpsilon: 1e-8,
  weightDecay: 0,
  maxGradNorm: 1.0,
  warmupSteps: 0,
  lrSchedule: 'constant',
  minLrRatio: 0,
  evalMaxTokens: 16,
} satisfies GrpoConfig);

/** A configuration error between fields; the message says how to fix it. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Fill defaults and validate. Unknown keys are rejected (a typo must not silently do nothing). */
export function grpoConfig(partial: Partial<GrpoConfig> = {}): Readonly<GrpoConfig> {
  if (partial === null || typeof partial !== 'object') throw invalidParameterError('config', 'an object', partial);
  for (const key of Object.keys(partial)) {
    if (!(key in GRPO_DEFAULTS)) {
      const near = Object.keys(GRPO_DEFAULTS).find((k) => k.toLowerCase() === key.toLowerCase().replace(/_/g, ''));
      throw new ConfigError(
        `unknown GRPO config field "${key}"${near ? `; did you mean "${near}"?` : ''} (docs/grpo.md lists the fields)`,
      );
    }
  }
  const c = { ...GRPO_DEFAULTS, ...partial } as GrpoConfig;
  if (partial.miniBatchPrompts === undefined || partial.miniBatchPrompts === 0) c.miniBatchPrompts = c.promptsPerStep;

  expectInteger('seed', c.seed, 0);
  expectInteger('totalSteps', c.totalSteps, 1);
  expectInteger('promptsPerStep', c.promptsPerStep, 1);
  expectInteger('numGenerations', c.numGenerations, 1);
  expectInteger('maxCompletionLength', c.maxCompletionLength, 1);
  expectNumber('temperature', c.temperature, 0);
  expectNumber('topP', c.topP, 0, 1);
  expectInteger('topK', c.topK, 0);
  expectBoolean('dynamicSampling', c.dynamicSampling);
  expectInteger('maxSamplingRounds', c.maxSamplingRounds, 1);
  expectNumber('maxBadSampleFraction', c.maxBadSampleFraction, 0, 1);
  expectOneOf('advantageEstimator', c.advantageEstimator, ADVANTAGE_ESTIMATORS);
  expectOneOf('scaleRewards', c.scaleRewards, REWARD_SCALINGS);
  expectNumber('advantageEpsilon', c.advantageEpsilon, 0);
  expectInteger('numIterations', c.numIterations, 1);
  expectInteger('miniBatchPrompts', c.miniBatchPrompts, 1);
  expectInteger('microBatchTokens', c.microBatchTokens, 0);
  expectNumber('epsilonLow', c.epsilonLow, 0, 1);
  expectNumber('epsilonHigh', c.epsilonHigh, 0);
  expectNumber('dualClip', c.dualClip, 0);
  expectOneOf('lossAggregation', c.lossAggregation, LOSS_AGGREGATIONS);
  expectNumber('beta', c.beta, 0);
  expectOneOf('klEstimator', c.klEstimator, KL_ESTIMATORS);
  expectOneOf('klPlacement', c.klPlacement, KL_PLACEMENTS);
  expectOneOf('reference', c.reference, REFERENCE_KINDS);
  expectNumber('learningRate', c.learningRate, 0);
  expectNumber('adamBeta1', c.adamBeta1, 0, 1);
  expectNumber('adamBeta2', c.adamBeta2, 0, 1);
  expectNumber('adamEpsilon', c.adamEpsilon, 0);
  expectNumber('weightDecay', c.weightDecay, 0);
  expectNumber('maxGradNorm', c.maxGradNorm, 0);
  expectInteger('warmupSteps', c.warmupSteps, 0);
  expectOneOf('lrSchedule', c.lrSchedule, LR_SCHEDULES);
  expectNumber('minLrRatio', c.minLrRatio, 0, 1);
  expectInteger('evalMaxTokens', c.evalMaxTokens, 1);

  // Cross-field checks.
  if (c.numGenerations < 2) {
    throw new ConfigError(
      `numGenerations is ${c.numGenerations}, but group-relative advantages need at least 2 completions per prompt; set numGenerations to 2 or more (8 is usual)`,
    );
  }
  if (c.temperature === 0) {
    throw new ConfigError(
      'temperature 0 makes all completions of a group identical, so every advantage is 0; set temperature > 0 (1.0 is usual)',
    );
  }
  if (c.advantageEstimator === 'dr_grpo' && c.scaleRewards !== 'none') {
    throw new ConfigError(
      `advantageEstimator "dr_grpo" does not divide by a std, but scaleRewards is "${c.scaleRewards}"; set scaleRewards: "none" (or use advantageEstimator "grpo" to keep the scaling)`,
    );
  }
  if (c.promptsPerStep % c.miniBatchPrompts !== 0) {
    const divisors = Array.from({ length: c.promptsPerStep }, (_, i) => i + 1).filter(
      (d) => c.promptsPerStep % d === 0,
    );
    throw new ConfigError(
      `miniBatchPrompts (${c.miniBatchPrompts}) must divide promptsPerStep (${c.promptsPerStep}); use one of ${divisors.join(', ')}`,
    );
  }
  if (c.dualClip !== 0 && c.dualClip <= 1) {
    throw new ConfigError(
      `dualClip must be greater than 1 (verl uses 3.0) or 0 to disable it, but it is ${c.dualClip}`,
    );
  }
  if (c.klPlacement === 'reward' && c.beta === 0) {
    throw new ConfigError(
      'klPlacement "reward" with beta 0 adds no KL penalty; set beta > 0 (e.g. 0.04) or leave klPlacement "loss"',
    );
  }
  if (c.lrSchedule === 'cosine' && c.warmupSteps >= c.totalSteps) {
    throw new ConfigError(
      `warmupSteps (${c.warmupSteps}) must be less than totalSteps (${c.totalSteps}) for a cosine schedule; lower warmupSteps or raise totalSteps`,
    );
  }
  if (c.dynamicSampling && c.maxSamplingRounds < 2) {
    throw new ConfigError(
      'dynamicSampling refills dropped groups in later rounds, but maxSamplingRounds is 1; set maxSamplingRounds to 2 or more',
    );
  }
  return Object.freeze(c);
}

/** True when the step needs log-probs of the rollout policy before the first update (ratio ≠ 1 later). */
export function needsOldLogprobs(c: GrpoConfig): boolean {
  return c.numIterations > 1 || c.miniBatchPrompts < c.promptsPerStep;
}

/** True when a reference policy must be available. */
export function needsReference(c: GrpoConfig): boolean {
  return c.beta > 0;
}
