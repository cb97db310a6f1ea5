/**
 * The image and video processor files of the Qwen2.5-VL and Qwen3-VL presets' folders, as the
 * released Instruct checkpoints ship them (the tokenizer-side files: src/model/qwen-tokenizer.ts).
 */
import type { FamilyDims } from './presets-family.js';

/**
 * preprocessor_config.json as the released Instruct checkpoints ship it: Qwen2.5-VL min/max_pixels
 * (3136 to 12845056), CLIP mean/std, patch 14; Qwen3-VL `size` {shortest_edge 65536, longest_edge
 * 16777216} (pixels), mean/std 0.5, patch 16, the fast image processor. Public copies of these
 * files agree on every value (src/vision reads either form).
 */
export function familyPreprocessorConfig(d: FamilyDims): Record<string, unknown> {
  const v = d.vision;
  const grid = { patch_size: v.patchSize, temporal_patch_size: v.temporalPatchSize, merge_size: v.spatialMergeSize };
  if (d.modelType === 'qwen3_vl') {
    return {
      size: { longest_edge: 16777216, shortest_edge: 65536 },
      ...grid,
      image_mean: [0.5, 0.5, 0.5],
      image_std: [0.5, 0.5, 0.5],
      processor_class: 'Qwen3VLProcessor',
      image_processor_type: 'Qwen2VLImageProcessorFast',
    };
  }
  return {
    min_pixels: 3136,
    max_pixels: 12845056,
    ...grid,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: 'Qwen2VLImageProcessor',
    processor_class: 'Qwen2_5_VLProcessor',
  };
}

/** Qwen3-VL's video_preprocessor_config.json (frames of 4096 to 25165824 pixels); Qwen2.5-VL ships none. */
export function familyVideoPreprocessorConfig(d: FamilyDims): Record<string, unknown> | undefined {
  if (d.modelType !== 'qwen3_vl') return undefined;
  const v = d.vision;
  return {
    size: { longest_edge: 25165824, shortest_edge: 4096 },
    patch_size: v.patchSize,
    temporal_patch_size: v.temporalPatchSize,
    merge_size: v.spatialMergeSize,
    image_mean: [0.5, 0.5, 0.5],
    image_std: [0.5, 0.5, 0.5],
    processor_class: 'Qwen3VLProcessor',
    video_processor_type: 'Qwen3VLVideoProcessor',
  };
}
