/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export { synthVocabulary, synthTokens } from './data/synth-vocab.js';
export * as safetensors from './util/safetensors.js';
export * as vision from './vision/qwen2vl.js';
export * as parity from './parity/run.js';
export { Trainer, grpoConfig, grpoLoss, computeAdvantages, GRPO_DEFAULTS } from './grpo/index.js';
export * as grpo from './grpo/index.js';
export { VlmTokenizer, buildTokenizerFiles } from './text/index.js';
export type { ChatMessage, ContentPart } from './text/index.js';
export { DEFAULT_MODEL_DIR, writeDefaultAssets } from './model/default.js';
