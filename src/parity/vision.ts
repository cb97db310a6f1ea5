/**
 * The vision parity checker: for every image of a case's `meta.json` `images` map, run our
 * Qwen2-VL processor on `images/<name>.<ext>` with the case's min/max pixels (and its patch_size,
 * merge_size, temporal_patch_size, image_mean, image_std when given: Qwen3-VL's) and compare with
 * `<name>.pixel_values` in `inputs.safetensors` (transformers' output).
 *
 * Tolerances: an image that needs no resize must match to 1e-6 (max abs, normalised units); a
 * resized one reports max and mean abs error and must keep the mean ≤ 0.01. An image whose entry
 * carries `error` (transformers refused it) passes when we refuse it too.
 * Settings (`--set`): `vision.resample=sharp-cubic` checks the libvips resampler instead.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { SafetensorsFile } from '../util/safetensors.js';
import { Qwen2VLImageProcessor, type Qwen2VLProcessorOptions } from '../vision/qwen2vl.js';
import type { ParityChecker, ParityMeasurement } from './types.js';

export const VISION_EXACT_TOLERANCE = 1e-6;
export const VISION_RESIZED_MEAN_TOLERANCE = 0.01;

interface ImageEntry {
  grid_thw: [number, number, number] | null;
  min_pixels: number;
  max_pixels: number;
  error?: string;
  /** The processor's settings when they are not Qwen2-VL's (Qwen3-VL: patch 16, mean/std 0.5). */
  settings: Pick<Qwen2VLProcessorOptions, 'patchSize' | 'mergeSize' | 'temporalPatchSize' | 'imageMean' | 'imageStd'>;
}

function readSettings(where: string, e: Record<string, unknown>): ImageEntry['settings'] {
  const o: ImageEntry['settings'] = {};
  const int = (k: string) => {
    if (e[k] === undefined) return undefined;
    if (!Number.isInteger(e[k]) || (e[k] as number) < 1)
      throw new Error(`${where}.${k}: expected a positive integer, got ${JSON.stringify(e[k])}`);
    return e[k] as number;
  };
  const triple = (k: string) => {
    if (e[k] === undefined) return undefined;
    const v = e[k];
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new Error(`${where}.${k}: expected 3 numbers, got ${JSON.stringify(v)}`);
    }
    return v as [number, number, number];
  };
  const ps = int('patch_size'),
    ms = int('merge_size'),
    ts = int('temporal_patch_size');
  const mean = triple('image_mean'),
    std = triple('image_std');
  if (ps !== undefined) o.patchSize = ps;
  if (ms !== undefined) o.mergeSize = ms;
  if (ts !== undefined) o.temporalPatchSize = ts;
  if (mean) o.imageMean = mean;
  if (std) o.imageStd = std;
  return o;
}

function findImage(caseDir: string, name: string): string {
  const dir = path.join(caseDir, 'images');
  const hit = existsSync(dir) ? readdirSync(dir).find((f) => path.parse(f).name === name) : undefined;
  if (!hit) throw new Error(`${path.join(caseDir, 'meta.json')}: images.${name}: no file images/${name}.* in ${dir}`);
  return path.join(dir, hit);
}

function readEntry(metaPath: string, name: string, raw: unknown): ImageEntry {
  const where = `${metaPath}: images.${name}`;
  if (raw === null || typeof raw !== 'object')
    throw new Error(`${where}: expected an object {grid_thw, min_pixels, max_pixels}`);
  const e = raw as Record<string, unknown>;
  for (const k of ['min_pixels', 'max_pixels'] as const) {
    if (!Number.isInteger(e[k]) || (e[k] as number) < 1)
      throw new Error(`${where}.${k}: expected a positive integer, got ${JSON.stringify(e[k])}`);
  }
  const settings = readSettings(where, e);
  if (typeof e.error === 'string')
    return {
      grid_thw: null,
      min_pixels: e.min_pixels as number,
      max_pixels: e.max_pixels as number,
      error: e.error,
      settings,
    };
  const g = e.grid_thw;
  if (!Array.isArray(g) || g.length !== 3 || !g.every((v) => Number.isInteger(v) && v > 0)) {
    throw new Error(`${where}.grid_thw: expected [t, h, w] positive integers, got ${JSON.stringify(g)}`);
  }
  return {
    grid_thw: g as [number, number, number],
    min_pixels: e.min_pixels as number,
    max_pixels: e.max_pixels as number,
    settings,
  };
}

export const visionChecker: ParityChecker = {
  name: 'vision',

  applies(caseDir, meta) {
    const images = meta.images;
    return (
      images !== null &&
      typeof images === 'object' &&
      !Array.isArray(images) &&
      existsSync(path.join(caseDir, 'inputs.safetensors')) &&
      existsSync(path.join(caseDir, 'images'))
    );
  },

  async check(caseDir, meta, options) {
    const metaPath = path.join(caseDir, 'meta.json');
    const resample = (options.settings['vision.resample'] ?? 'pil-bicubic') as Qwen2VLProcessorOptions['resample'];
    const out: ParityMeasurement[] = [];
    const file = await SafetensorsFile.open(path.join(caseDir, 'inputs.safetensors'));
    try {
      for (const [name, raw] of Object.entries(meta.images as Record<string, unknown>)) {
        const entry = readEntry(metaPath, name, raw);
        const imagePath = findImage(caseDir, name);
        const proc = new Qwen2VLImageProcessor({
          minPixels: entry.min_pixels,
          maxPixels: entry.max_pixels,
          resample,
          ...entry.settings,
        });
        if (entry.error !== undefined) {
          try {
            const r = await proc.process(imagePath);
            out.push({
              name: `${name} refused`,
              value: 1,
              tolerance: 0,
              note: `transformers refused it (${entry.error}) but we produced grid ${JSON.stringify(r.gridThw)}`,
            });
          } catch (err) {
            out.push({
              name: `${name} refused`,
              value: 0,
              tolerance: 0,
              note: `both refuse; ours: ${(err as Error).message}`,
            });
          }
          continue;
        }
        const r = await proc.process(imagePath);
        const gridOk = r.gridThw.every((v, i) => v === entry.grid_thw![i]);
        out.push({
          name: `${name} grid_thw`,
          value: gridOk ? 0 : 1,
          tolerance: 0,
          note: gridOk ? undefined : `ours ${JSON.stringify(r.gridThw)}, expected ${JSON.stringify(entry.grid_thw)}`,
        });
        if (!gridOk) continue;
        const key = `${name}.pixel_values`;
        const info = file.info(key);
        if (info.shape.length !== 2 || info.shape[0]! * info.shape[1]! !== r.pixels.length) {
          throw new Error(
            `${path.join(caseDir, 'inputs.safetensors')}: ${key}: shape ${JSON.stringify(info.shape)} does not hold our ${r.pixels.length / proc.patchDim}x${proc.patchDim} patches`,
          );
        }
        const want = await file.readFloat32(key);
        let max = 0,
          sum = 0,
          at = 0;
        for (let i = 0; i < want.length; i++) {
          const d = Math.abs(want[i]! - r.pixels[i]!);
          if (!(d <= max)) {
            max = d;
            at = i;
          } // NaN propagates as a failure
          sum += d;
        }
        const mean = sum / want.length;
        const resized = r.resizedSize.height !== r.originalSize.height || r.resizedSize.width !== r.originalSize.width;
        const size = `HxW ${r.originalSize.height}x${r.originalSize.width}`;
        const where = `worst at patch ${Math.floor(at / proc.patchDim)}, value ${at % proc.patchDim}`;
        if (resized) {
          const note = `resized ${size} -> ${r.resizedSize.height}x${r.resizedSize.width} (${resample}); max_abs ${max.toExponential(3)}, ${where}`;
          out.push({ name: `${name} mean_abs`, value: mean, tolerance: VISION_RESIZED_MEAN_TOLERANCE, note });
        } else {
          out.push({
            name: `${name} max_abs`,
            value: max,
            tolerance: VISION_EXACT_TOLERANCE,
            note: `no resize (${size}); mean_abs ${mean.toExponential(3)}, ${where}`,
          });
        }
      }
    } finally {
      await file.close();
    }
    return out;
  },
};
