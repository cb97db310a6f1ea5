/**
 * Rewards for VQA reinforcement learning: plain functions of (sample, completion, context) that
 * return a number or {score, parts}. See docs/rewards.md.
 */
export type {
  AsyncBreakdownReward,
  BreakdownReward,
  RewardBreakdown,
  RewardContext,
  RewardFn,
  RewardScore,
  RewardValue,
} from './types.js';
// defineReward, vqaAccuracy: at the package's top level (src/index.ts), so not repeated here.
export { checkRewardValue, rewardName, RewardValueError, type RewardProblem } from './core.js';
export { extractAnswer, type AnswerExtractor } from './extract.js';
export {
  brevity,
  exactMatch,
  format,
  FORMATS,
  numeric,
  parseNumber,
  RewardNotApplicableError,
  similarity,
  type BrevityOptions,
  type ExactMatchOptions,
  type FormatOptions,
  type NumericOptions,
  type SimilarityOptions,
  type VqaAccuracyOptions,
} from './basic.js';
export { gate, max, passes, weighted, type Component, type Components, type GateCondition } from './compose.js';
export {
  DEFAULT_JUDGE_TEMPLATE,
  JudgeError,
  llmJudge,
  parseJudgeScore,
  type JudgeStats,
  type JudgeTemplateValues,
  type LlmJudge,
  type LlmJudgeOptions,
} from './judge.js';
export {
  resolveRewardSet,
  scoreGroups,
  type FailureKind,
  type GroupInput,
  type OnRewardError,
  type RewardEntry,
  type RewardFailure,
  type RewardSet,
  type ScoredBatch,
  type ScoredCompletion,
  type ScoredGroup,
  type ScoreOptions,
} from './runner.js';
