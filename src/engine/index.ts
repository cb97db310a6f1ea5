/** The engine: Qwen2-VL on the native CPU engine (see docs/engine.md). */
export * from './types.js';
export { loadModel, weightFiles } from './model.js';
export { parseConfig, readConfig, type EngineConfig } from './config.js';
export { resolveCheckpoint, resolveModelFolder, type ResolvedCheckpoint } from './folder.js';
