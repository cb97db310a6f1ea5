export * from './tokenizer.js';
export * from './build.js';
export * from './qwen2vl.js';
export { trainBpe } from './bpe-train.js';
export { toByteLevel, fromByteLevel } from './byte-level.js';
export { tokenizerFamily, checkTokenizerFamily } from './family.js';
