/** Model folders: the default tiny model, presets, random initialisation (`vqalab model init`). */
export { DEFAULT_MODEL_DIR, DEFAULT_MODEL_SEED, writeDefaultAssets, type DefaultAssetsOptions } from './default.js';
export {
  initModelFolder,
  modelPreset,
  type ModelInitOptions,
  type ModelInitResult,
  type WeightDtype,
} from './init-folder.js';
export { MODEL_PRESETS, type ModelPreset } from './presets.js';
export { FAMILY_PRESETS, type FamilyDims, type FamilyModelType } from './presets-family.js';
