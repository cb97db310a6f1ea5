/**
 * Videos for the Qwen-VL family: a folder of frames → sampled frames → `[nPatches, patchDim]`
 * patches with `grid_thw = [frames / temporal_patch_size, h / patch, w / patch]`, as transformers'
 * video processors (Qwen2-VL / Qwen2.5-VL: `Qwen2VLVideoProcessor`; Qwen3-VL: `Qwen3VLVideoProcessor`)
 * produce them.
 *
 * Input: a folder of pre-extracted frames, not a video file. A folder is read with the image decoder
 * the project already uses (sharp: PNG, JPEG, WebP, ...), frames in natural name order (frame2 before
 * frame10), and its frame rate from `video.json` ({"fps": N}) in the folder or the sample's
 * `video_fps`. Why not a video file: decoding H.264/VP9 here needs ffmpeg (a system binary, or a
 * 25 MB WebAssembly build whose output depends on its build), which npm cannot install reproducibly on
 * every machine the engine runs on; `ffmpeg -i clip.mp4 -vf fps=4 dir/%05d.png` plus a one-line
 * video.json makes a folder, and the synthetic video set writes folders directly.
 *
 * Steps, in transformers' order:
 * 1. frame sampling by fps (or a frame count): Qwen2-VL's `sample_frames` (num_frames = total / fps_src
 *    · fps, clamped to [min_frames, max_frames] and floored to a multiple of temporal_patch_size;
 *    indices arange(0, total, total / num_frames)) or Qwen3-VL's (int(total / fps_src · fps) clamped to
 *    [min_frames, min(max_frames, total)], indices linspace(0, total − 1, n) rounded);
 * 2. one size for every frame: Qwen2-VL's per-frame smart_resize with the video processor's
 *    min/max pixels, or Qwen3-VL's smart_resize over (frames, height, width) with temporal factor 2
 *    (the pixel budget counts every frame);
 * 3. the frames resized with the image processor's resampler (PIL-compatible bicubic) — transformers'
 *    video processors resize with torchvision instead, so pixel values may differ by a rounding step;
 * 4. a frame count not divisible by temporal_patch_size is padded by repeating the last frame;
 * 5. rescale, normalise, cut into patch rows (t, block row, block col, row in block, col in block),
 *    each row (channel, frame of the temporal patch, y, x).
 * Qwen3-VL also gets each temporal patch's timestamp (mean of its frames' times, in seconds), which
 * the prompt writes as `<t.t seconds>` before the patch's vision tokens; Qwen2.5-VL gets
 * `secondPerGrid` = temporal_patch_size / the sampled fps for its M-RoPE time positions, as
 * transformers 5's Qwen2_5_VLProcessor: the sampled fps is frames kept / frames in the clip · the
 * clip's fps (`VideoMetadata.sampled_fps`), not the fps asked for (4 frames kept of 12 at 6 fps is
 * 2 fps, whatever fps was asked).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { ImageInput } from '../engine/types.js';
import { expectInteger, invalidParameterError } from '../util/validate.js';
import { decodeRgb, smartResize, CLIP_MEAN, CLIP_STD, type RgbImage } from './qwen2vl.js';
import { resizeBicubic } from './resize.js';

export type VideoFamily = 'qwen2_vl' | 'qwen2_5_vl' | 'qwen3_vl';

export interface VideoProcessorOptions {
  /** Sampling rules and sizing of which family's processor (default qwen2_vl; qwen2_5_vl is the same processor). */
  family?: VideoFamily;
  /** Frames sampled per second of video (default 2). */
  fps?: number;
  /** Sample exactly this many frames instead of by fps. */
  numFrames?: number;
  /** Default 4. */
  minFrames?: number;
  /** Default 768. */
  maxFrames?: number;
  /** Fewest pixels per frame (Qwen2-VL) or per clip (Qwen3-VL); default 128·28·28 / 128·32·32. */
  minPixels?: number;
  /** Most pixels per frame (Qwen2-VL, default 768·28·28) or per clip (Qwen3-VL, default 768·32·32). */
  maxPixels?: number;
  /** Default 14 (Qwen3-VL 16). */
  patchSize?: number;
  /** Default 2. */
  temporalPatchSize?: number;
  /** Default 2. */
  mergeSize?: number;
  /** Default CLIP's (Qwen3-VL 0.5). */
  imageMean?: readonly [number, number, number];
  imageStd?: readonly [number, number, number];
}

/** A processed video, ready for the engine (an ImageInput with `video: true`). */
export interface ProcessedVideo extends ImageInput {
  video: true;
  /** Seconds one temporal patch spans: temporal_patch_size / the sampled fps (frames kept / frames in the clip · its fps). */
  secondPerGrid: number;
  /** Qwen3-VL: the time of each temporal patch in seconds (the prompt writes `<t seconds>`). */
  timestamps?: number[];
  /** Indices of the sampled frames in the folder (after padding to the temporal patch size). */
  frameIndices: number[];
  resizedSize: { height: number; width: number };
  /** LLM tokens this video takes: t·h·w / merge². */
  numTokens: number;
}

/** Decoded frames of a video with its frame rate. */
export interface Frames {
  frames: RgbImage[];
  fps: number;
}

const FRAME_EXT = /\.(png|jpe?g|webp|bmp|tiff?|gif)$/i;

/** Natural order: digits compare as numbers (frame2 < frame10). */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The frame files of a folder in order; errors name the folder. */
export function frameFiles(dir: string): string[] {
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new Error(
      `${dir}: video folder not found (a video is a folder of frames: 00001.png, 00002.png, ... and video.json with {"fps": N})`,
    );
  }
  if (!st.isDirectory())
    throw new Error(
      `${dir}: expected a folder of frames (video files are not decoded here; extract frames with ffmpeg -i clip.mp4 -vf fps=4 ${dir}/%05d.png)`,
    );
  const files = readdirSync(dir)
    .filter((f) => FRAME_EXT.test(f))
    .sort(naturalCompare);
  if (files.length === 0) throw new Error(`${dir}: no frame images (.png, .jpg, .webp, ...) in the video folder`);
  return files.map((f) => path.join(dir, f));
}

/** The folder's frame rate: `fps` if given, else video.json's; errors say what was expected. */
export function folderFps(dir: string, fps?: number): number {
  if (fps !== undefined) {
    if (!(typeof fps === 'number' && Number.isFinite(fps) && fps > 0))
      throw new Error(`${dir}: video fps must be a positive number; got ${JSON.stringify(fps)}`);
    return fps;
  }
  const meta = path.join(dir, 'video.json');
  if (!existsSync(meta))
    throw new Error(
      `${dir}: the frame rate is unknown; add video.json with {"fps": N} to the folder or a video_fps column`,
    );
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(meta, 'utf8'));
  } catch (err) {
    throw new Error(`${meta}: invalid JSON (${(err as Error).message})`);
  }
  const v = (raw as { fps?: unknown } | null)?.fps;
  if (!(typeof v === 'number' && Number.isFinite(v) && v > 0))
    throw new Error(`${meta}: expected {"fps": a positive number}; got ${JSON.stringify(raw)}`);
  return v;
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

interface Resolved {
  family: VideoFamily;
  fps: number;
  numFrames?: number;
  minFrames: number;
  maxFrames: number;
  minPixels: number;
  maxPixels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
  mean: [number, number, number];
  std: [number, number, number];
}

function resolve(o: VideoProcessorOptions): Resolved {
  if (o === null || typeof o !== 'object') throw invalidParameterError('options', 'an object', o);
  const family = o.family ?? 'qwen2_vl';
  if (!['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl'].includes(family))
    throw invalidParameterError('family', 'one of "qwen2_vl", "qwen2_5_vl", "qwen3_vl"', family);
  const q3 = family === 'qwen3_vl';
  const patchSize = expectInteger('patchSize', o.patchSize ?? (q3 ? 16 : 14), 1);
  const mergeSize = expectInteger('mergeSize', o.mergeSize ?? 2, 1);
  const f = patchSize * mergeSize;
  const r: Resolved = {
    family,
    fps: o.fps ?? 2,
    minFrames: expectInteger('minFrames', o.minFrames ?? 4, 1),
    maxFrames: expectInteger('maxFrames', o.maxFrames ?? 768, 1),
    minPixels: expectInteger('minPixels', o.minPixels ?? 128 * f * f, 1),
    maxPixels: expectInteger('maxPixels', o.maxPixels ?? 768 * f * f, 1),
    patchSize,
    mergeSize,
    temporalPatchSize: expectInteger('temporalPatchSize', o.temporalPatchSize ?? 2, 1),
    mean: [...(o.imageMean ?? (q3 ? [0.5, 0.5, 0.5] : CLIP_MEAN))] as [number, number, number],
    std: [...(o.imageStd ?? (q3 ? [0.5, 0.5, 0.5] : CLIP_STD))] as [number, number, number],
  };
  if (!(typeof r.fps === 'number' && Number.isFinite(r.fps) && r.fps > 0))
    throw invalidParameterError('fps', 'positive number', o.fps);
  if (o.numFrames !== undefined) r.numFrames = expectInteger('numFrames', o.numFrames, 1);
  if (r.minPixels > r.maxPixels)
    throw invalidParameterError('minPixels', `integer <= maxPixels (${r.maxPixels})`, r.minPixels);
  if (r.minFrames > r.maxFrames)
    throw invalidParameterError('minFrames', `integer <= maxFrames (${r.maxFrames})`, r.minFrames);
  return r;
}

/**
 * Qwen3-VL's video smart_resize: both sides multiples of `factor`, the clip's pixels
 * (frames rounded to the temporal factor × height × width) within [minPixels, maxPixels].
 */
export function smartResizeVideo(
  numFrames: number,
  height: number,
  width: number,
  {
    temporalFactor = 2,
    factor = 32,
    minPixels = 128 * 32 * 32,
    maxPixels = 768 * 32 * 32,
  }: { temporalFactor?: number; factor?: number; minPixels?: number; maxPixels?: number } = {},
): [number, number] {
  if (numFrames < temporalFactor)
    throw new RangeError(`a video needs at least ${temporalFactor} frames (the temporal patch size); got ${numFrames}`);
  if (height < factor || width < factor)
    throw new RangeError(`video frames of ${width}x${height} pixels: both sides must be at least ${factor}`);
  const ratio = Math.max(height, width) / Math.min(height, width);
  if (ratio > 200)
    throw new RangeError(
      `video frames of ${width}x${height} pixels have an aspect ratio of ${ratio.toFixed(1)}; at most 200`,
    );
  let h = roundHalfEven(height / factor) * factor;
  let w = roundHalfEven(width / factor) * factor;
  const t = roundHalfEven(numFrames / temporalFactor) * temporalFactor;
  if (t * h * w > maxPixels) {
    const beta = Math.sqrt((numFrames * height * width) / maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (t * h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (numFrames * height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return [h, w];
}

/** The video processor of the family (see the module comment). */
export class VideoProcessor {
  private readonly o: Resolved;

  constructor(options: VideoProcessorOptions = {}) {
    this.o = resolve(options);
  }

  get patchDim(): number {
    return 3 * this.o.temporalPatchSize * this.o.patchSize ** 2;
  }

  /** Indices of the frames to keep out of `total` at source rate `srcFps` (step 1). */
  sampleIndices(total: number, srcFps: number): number[] {
    const { family, temporalPatchSize: tp, minFrames, maxFrames, fps } = this.o;
    expectInteger('total', total, 1);
    if (family === 'qwen3_vl') {
      let n = this.o.numFrames ?? Math.trunc((total / srcFps) * fps);
      n = Math.min(Math.max(n, minFrames), maxFrames, total);
      // numpy: linspace(0, total - 1, n) (i · step in float64, the last one exact), then round() half to even
      const step = n > 1 ? (total - 1) / (n - 1) : 0;
      return Array.from({ length: n }, (_, i) => (i === n - 1 && n > 1 ? total - 1 : roundHalfEven(i * step)));
    }
    let n: number;
    if (this.o.numFrames !== undefined) n = roundHalfEven(this.o.numFrames / tp) * tp;
    else {
      const cap = Math.floor(Math.min(maxFrames, total) / tp) * tp;
      n = Math.min(Math.max((total / srcFps) * fps, minFrames), cap, total);
      n = Math.floor(n / tp) * tp;
    }
    if (n > total)
      throw new RangeError(`the video has ${total} frames; ${n} were asked (numFrames rounded to a multiple of ${tp})`);
    if (n < tp) throw new RangeError(`the video has ${total} frames; at least ${tp} (one temporal patch) are needed`);
    // torch.arange(0, total, total / n).int(): float32 steps, truncated
    const step = Math.fround(total / n);
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(Math.trunc(Math.fround(i * step)));
    return out;
  }

  /** The resized frame size for `frames` frames of height × width (step 2). */
  plan(frames: number, height: number, width: number): { height: number; width: number } {
    const { patchSize, mergeSize, minPixels, maxPixels, temporalPatchSize } = this.o;
    const factor = patchSize * mergeSize;
    const [h, w] =
      this.o.family === 'qwen3_vl'
        ? smartResizeVideo(frames, height, width, { temporalFactor: temporalPatchSize, factor, minPixels, maxPixels })
        : smartResize(height, width, { factor, minPixels, maxPixels });
    return { height: h, width: w };
  }

  /** Read and process a frame folder (`fps`: the source rate when the folder has no video.json). */
  async processFolder(dir: string, fps?: number): Promise<ProcessedVideo> {
    const files = frameFiles(dir);
    const srcFps = folderFps(dir, fps);
    const indices = this.sampleIndices(files.length, srcFps);
    const frames: RgbImage[] = [];
    for (const i of indices) frames.push(await decodeRgb(files[i]!));
    try {
      return this.processFrames(frames, srcFps, indices, files.length);
    } catch (err) {
      throw new Error(`${dir}: ${(err as Error).message}`);
    }
  }

  /**
   * Process already sampled frames (steps 2–5). `indices`: the frames' indices in the source at
   * `srcFps` (for the timestamps; default 0, 1, 2, ...); `totalFrames`: how many frames the source
   * has (for the sampled fps behind `secondPerGrid`; default the frames given, i.e. they are the
   * whole clip).
   */
  processFrames(
    frames: readonly RgbImage[],
    srcFps: number,
    indices?: readonly number[],
    totalFrames: number = frames.length,
  ): ProcessedVideo {
    const { temporalPatchSize: tp, patchSize: p, mergeSize: m } = this.o;
    if (!Array.isArray(frames) || frames.length === 0)
      throw invalidParameterError('frames', 'a non-empty array of RGB frames', frames);
    const idx = indices ? [...indices] : frames.map((_, i) => i);
    if (idx.length !== frames.length) throw new RangeError(`${frames.length} frames but ${idx.length} indices`);
    expectInteger('totalFrames', totalFrames, frames.length);
    if (!(typeof srcFps === 'number' && Number.isFinite(srcFps) && srcFps > 0))
      throw invalidParameterError('srcFps', 'positive number', srcFps);
    // VideoMetadata.sampled_fps, before padding to the temporal patch size
    const sampledFps = (frames.length / totalFrames) * srcFps;
    const { width: W0, height: H0 } = frames[0]!;
    frames.forEach((f, i) => {
      if (f.width !== W0 || f.height !== H0)
        throw new RangeError(
          `frame ${idx[i]} is ${f.width}x${f.height}; the first frame is ${W0}x${H0} (every frame must have one size)`,
        );
    });
    const size = this.plan(frames.length, H0, W0);
    const resized = frames.map((f) =>
      size.height === H0 && size.width === W0 ? f.data : resizeBicubic(f.data, W0, H0, 3, size.width, size.height),
    );
    while (resized.length % tp !== 0) {
      resized.push(resized[resized.length - 1]!);
      idx.push(idx[idx.length - 1]!);
    }
    const pixels = this.patchifyFrames(resized, size.height, size.width);
    const gridThw: [number, number, number] = [resized.length / tp, size.height / p, size.width / p];
    const out: ProcessedVideo = {
      pixels,
      gridThw,
      video: true,
      secondPerGrid: tp / sampledFps,
      frameIndices: idx,
      resizedSize: size,
      numTokens: (gridThw[0] * gridThw[1] * gridThw[2]) / (m * m),
    };
    if (this.o.family === 'qwen3_vl') {
      // Qwen3VLProcessor._calculate_timestamps: frame times idx / fps, averaged over each temporal patch
      const times = idx.map((i) => i / srcFps);
      out.timestamps = [];
      for (let i = 0; i < times.length; i += tp) out.timestamps.push((times[i]! + times[i + tp - 1]!) / 2);
    }
    return out;
  }

  /** Normalise frames (RGB at their final size, a multiple of temporal_patch_size of them) and cut them into patch rows. */
  patchifyFrames(frames: readonly Uint8Array[], height: number, width: number): Float32Array {
    const { patchSize: p, temporalPatchSize: tp, mergeSize: m, mean, std } = this.o;
    if (height % (p * m) !== 0 || width % (p * m) !== 0)
      throw new RangeError(`patchifyFrames: ${width}x${height} is not a multiple of ${p * m} on both sides`);
    if (frames.length % tp !== 0)
      throw new RangeError(`patchifyFrames: ${frames.length} frames is not a multiple of ${tp}`);
    const plane = height * width;
    const m32 = mean.map(Math.fround),
      s32 = std.map(Math.fround);
    const lut = new Float32Array(3 * 256);
    for (let c = 0; c < 3; c++)
      for (let v = 0; v < 256; v++)
        lut[c * 256 + v] = Math.fround(Math.fround(Math.fround(v * (1 / 255)) - m32[c]!) / s32[c]!);
    const chw = frames.map((rgb) => {
      if (rgb.length !== plane * 3)
        throw new RangeError(
          `patchifyFrames: a frame has ${rgb.length} bytes; ${width}x${height} RGB needs ${plane * 3}`,
        );
      const out = new Float32Array(3 * plane);
      for (let i = 0; i < plane; i++) {
        out[i] = lut[rgb[3 * i]!]!;
        out[plane + i] = lut[256 + rgb[3 * i + 1]!]!;
        out[2 * plane + i] = lut[512 + rgb[3 * i + 2]!]!;
      }
      return out;
    });
    const gh = height / p,
      gw = width / p,
      gt = frames.length / tp;
    const dim = 3 * tp * p * p;
    const out = new Float32Array(gt * gh * gw * dim);
    let row = 0;
    for (let t0 = 0; t0 < gt; t0++) {
      for (let bh = 0; bh < gh / m; bh++) {
        for (let bw = 0; bw < gw / m; bw++) {
          for (let mh = 0; mh < m; mh++) {
            for (let mw = 0; mw < m; mw++) {
              const y0 = (bh * m + mh) * p,
                x0 = (bw * m + mw) * p;
              let o = row * dim;
              for (let c = 0; c < 3; c++) {
                for (let t = 0; t < tp; t++) {
                  const f = chw[t0 * tp + t]!;
                  for (let py = 0; py < p; py++) {
                    const from = c * plane + (y0 + py) * width + x0;
                    out.set(f.subarray(from, from + p), o);
                    o += p;
                  }
                }
              }
              row++;
            }
          }
        }
      }
    }
    return out;
  }
}

/** What a sample shows, in prompt order: its images, then its videos (a video sample's imagePath is a preview still). */
export function sampleVisuals(s: { imagePath: string; imagePaths?: string[]; videoPaths?: string[] }): {
  images: string[];
  videos: string[];
} {
  if (s.videoPaths && s.videoPaths.length > 0) return { images: s.imagePaths ?? [], videos: s.videoPaths };
  return { images: s.imagePaths && s.imagePaths.length > 0 ? s.imagePaths : [s.imagePath], videos: [] };
}

/** The kinds of a sample's visual inputs in prompt order (for the chat message's parts). */
export function visualKinds(s: {
  imagePath: string;
  imagePaths?: string[];
  videoPaths?: string[];
}): ('image' | 'video')[] {
  const v = sampleVisuals(s);
  return [...v.images.map(() => 'image' as const), ...v.videos.map(() => 'video' as const)];
}

/**
 * The video processor matching a model: its family, and the image processor's patch / merge /
 * normalisation settings (preprocessor_config.json); the video pixel budget stays the video
 * processor's unless `maxPixels` / `minPixels` are given.
 */
export function videoProcessorFor(
  family: VideoFamily,
  image: {
    patchSize?: number;
    temporalPatchSize?: number;
    mergeSize?: number;
    imageMean?: readonly [number, number, number];
    imageStd?: readonly [number, number, number];
  },
  extra: VideoProcessorOptions = {},
): VideoProcessor {
  return new VideoProcessor({
    family,
    ...(image.patchSize !== undefined ? { patchSize: image.patchSize } : {}),
    ...(image.temporalPatchSize !== undefined ? { temporalPatchSize: image.temporalPatchSize } : {}),
    ...(image.mergeSize !== undefined ? { mergeSize: image.mergeSize } : {}),
    ...(image.imageMean ? { imageMean: image.imageMean } : {}),
    ...(image.imageStd ? { imageStd: image.imageStd } : {}),
    ...extra,
  });
}
