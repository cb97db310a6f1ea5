/** The data layer's public surface (see docs/data.md). */
export type { VqaSample } from './types.js';
// VqaDataset: at the package's top level (src/index.ts), so not repeated here.
export type { SampleFilter, SplitOptions } from './dataset.js';
export { samplesFingerprint } from './fingerprint.js';
export { ImageCache, defaultImageCache } from './images.js';
export { REQUIRED_COLUMNS, OPTIONAL_COLUMNS, VqaTableBuilder, VqaTableReader } from './schema.js';
export {
  readParquetTable,
  readParquetFooter,
  writeParquetAtomic,
  ParquetStreamWriter,
  type ParquetWriteOptions,
} from './parquet.js';
export { convertVqav2, mostCommonAnswer, cocoPrefix, type ConvertOptions, type ConvertReport } from './vqav2.js';
export {
  verifyDataset,
  formatVerifyReport,
  type VerifyOptions,
  type VerifyReport,
  type VerifyIssue,
} from './verify.js';
export {
  writeSynth,
  synthSamples,
  renderScene,
  sceneSvg,
  SYNTH_DIFFICULTIES,
  type SynthOptions,
  type SynthDifficulty,
  type SynthScene,
} from './synth.js';
export { synthVocabulary, synthTokens, SYNTH_FAMILIES, SYNTH_SHAPES, SYNTH_COLOR_NAMES } from './synth-vocab.js';
export { scanJsonArray } from './json-stream.js';
