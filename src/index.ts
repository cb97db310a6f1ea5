/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export { synthVocabulary, synthTokens } from './data/synth-vocab.js';
export * as safetensors from './util/safetensors.js';
export * as vision from './vision/qwen2vl.js';
export * as parity from './parity/run.js';
export * as data from './data/index.js';
export { VqaDataset } from './data/dataset.js';
export type { VqaSample } from './data/types.js';
export { Qwen2VLImageProcessor } from './vision/qwen2vl.js';
