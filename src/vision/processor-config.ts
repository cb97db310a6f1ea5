import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Qwen2VLProcessorOptions } from './qwen2vl.js';
import type { VideoProcessorOptions } from './video.js';

function readConfig(file: string): Record<string, unknown> | undefined {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${file}: invalid JSON (${(err as Error).message})`);
  }
}

/**
 * The video sizing and sampling a checkpoint's video_preprocessor_config.json sets (Qwen3-VL ships
 * one: clips of 4096 to 25,165,824 pixels as `size` {shortest_edge, longest_edge}); {} when it has
 * none, so the family's defaults apply. Pass as `extra` of videoProcessorFor.
 */
export function videoProcessorOptionsFrom(dir: string): VideoProcessorOptions {
  const raw = readConfig(path.join(dir, 'video_preprocessor_config.json'));
  if (!raw) return {};
  const size = (raw.size ?? {}) as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const o: VideoProcessorOptions = {};
  const minPixels = num(raw.min_pixels) ?? num(size.shortest_edge);
  const maxPixels = num(raw.max_pixels) ?? num(size.longest_edge);
  if (minPixels !== undefined) o.minPixels = minPixels;
  if (maxPixels !== undefined) o.maxPixels = maxPixels;
  if (num(raw.fps) !== undefined) o.fps = num(raw.fps);
  if (num(raw.min_frames) !== undefined) o.minFrames = num(raw.min_frames);
  if (num(raw.max_frames) !== undefined) o.maxFrames = num(raw.max_frames);
  return o;
}

/** Qwen2-VL processor options from a checkpoint's preprocessor_config.json (defaults when it has none). */
export function processorOptionsFrom(dir: string): Qwen2VLProcessorOptions {
  const file = path.join(dir, 'preprocessor_config.json');
  const raw = readConfig(file);
  if (!raw) return {};
  const size = (raw.size ?? {}) as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const triple = (v: unknown) =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number')
      ? (v as [number, number, number])
      : undefined;
  const o: Qwen2VLProcessorOptions = {};
  const minPixels = num(raw.min_pixels) ?? num(size.shortest_edge);
  const maxPixels = num(raw.max_pixels) ?? num(size.longest_edge);
  if (minPixels !== undefined) o.minPixels = minPixels;
  if (maxPixels !== undefined) o.maxPixels = maxPixels;
  if (num(raw.patch_size) !== undefined) o.patchSize = num(raw.patch_size);
  if (num(raw.temporal_patch_size) !== undefined) o.temporalPatchSize = num(raw.temporal_patch_size);
  if (num(raw.merge_size) !== undefined) o.mergeSize = num(raw.merge_size);
  if (num(raw.rescale_factor) !== undefined) o.rescaleFactor = num(raw.rescale_factor);
  if (triple(raw.image_mean)) o.imageMean = triple(raw.image_mean);
  if (triple(raw.image_std)) o.imageStd = triple(raw.image_std);
  if (raw.do_resize === false) o.doResize = false;
  return o;
}
