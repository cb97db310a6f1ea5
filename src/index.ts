/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export { synthVocabulary, synthTokens } from './data/synth-vocab.js';
export * as safetensors from './util/safetensors.js';
