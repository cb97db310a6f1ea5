/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export { synthVocabulary, synthTokens } from './data/synth-vocab.js';
export * as safetensors from './util/safetensors.js';
export * as vision from './vision/qwen2vl.js';
export * as parity from './parity/run.js';
// Rewards: everything under `rewards`; the common ones also flat (format and max only under `rewards`).
export * as rewards from './reward/index.js';
export {
  brevity, defineReward, exactMatch, gate, llmJudge, numeric, scoreGroups, similarity,
  vqaAccuracy, weighted,
} from './reward/index.js';
export type { RewardBreakdown, RewardContext, RewardFn, RewardValue } from './reward/index.js';
export * as vqaEval from './eval/index.js';
export * as display from './display/index.js';
export { show, plot, browse, dashboard, completionsFrom, rewardLab, RewardTable, showComparison } from './display/index.js';
export * as engine from './engine/index.js';
export { Trainer, grpoConfig, grpoLoss, computeAdvantages, GRPO_DEFAULTS } from './grpo/index.js';
export * as grpo from './grpo/index.js';
export { VlmTokenizer, buildTokenizerFiles } from './text/index.js';
export type { ChatMessage, ContentPart } from './text/index.js';
export { DEFAULT_MODEL_DIR, writeDefaultAssets } from './model/default.js';
export { initModelFolder, type ModelInitOptions, type ModelInitResult } from './model/init-folder.js';
export { MODEL_PRESETS } from './model/presets.js';
export * as data from './data/index.js';
export { VqaDataset } from './data/dataset.js';
export type { VqaSample } from './data/types.js';
export { Qwen2VLImageProcessor } from './vision/qwen2vl.js';
export { interruptSignal, interruptible, onInterrupt, isInterrupted, throwIfInterrupted, InterruptedError } from './util/interrupt.js';
// Report facts (configs, seeds, dataset fingerprints, model hashes, versions, devices, metrics) for the
// header stamp of `vqalab report`; the runner and exporter live in src/report/index.ts.
export * as report from './report/facts.js';
export { recordFacts } from './report/facts.js';
// The trainer's subscribers (src/grpo/events.ts): report facts here, the run dashboard in src/display/training.ts.
import './report/trainer-facts.js';
export * as rollout from './rollout/index.js';
export { LocalPolicy, OpenAIPolicy, RequestScheduler, rollout as rolloutBatch, evaluatePolicies, policyFromSpec } from './rollout/index.js';
export type { Policy, Completion, SamplingOptions } from './rollout/index.js';
export { OnnxPolicy, OnnxModel } from './rollout/onnx.js';
export { exportOnnx } from './export/index.js';
export type { ExportOptions, ExportResult, ExportDtype } from './export/index.js';
export { serve } from './serve/index.js';
export * as gateway from './gateway/index.js';
