/** The Qwen2-VL image processor: pixels → patches + grid_thw (see docs/engine.md). */
export * from './qwen2vl.js';
export { processorOptionsFrom, videoProcessorOptionsFrom } from './processor-config.js';
