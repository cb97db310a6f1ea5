/**
 * The Qwen2-VL image processor in TypeScript: image → `[nPatches, 1176]` float32 patches and
 * `grid_thw`, equal to what transformers' Qwen2-VL image processor (PIL backend) produces.
 *
 * Steps, in transformers' order:
 * 1. decode with sharp; apply EXIF orientation (as transformers' `load_image` does); drop any
 *    alpha channel, as its `convert_to_rgb` (`PIL.Image.convert("RGB")`) does: transparent pixels
 *    keep their stored colour, they are not composited over white; 8-bit sRGB, 3 channels;
 * 2. {@link smartResize}: both sides multiples of `patchSize * mergeSize` (28), pixel count within
 *    [minPixels, maxPixels], aspect ratio kept as well as possible, > 200 is an error;
 * 3. bicubic resize to that size, PIL-compatible ({@link resizeBicubic}), result rounded to 8 bits;
 * 4. rescale by 1/255 (in float64, then stored as float32) and normalise with the CLIP mean/std
 *    (float32 arithmetic), channels first;
 * 5. duplicate the frame to `temporalPatchSize` (2) frames;
 * 6. cut into patches and flatten: rows ordered (t, block row, block col, row in block, col in
 *    block) with blocks of `mergeSize`×`mergeSize` patches, so the merger's 2×2 neighbours are
 *    consecutive rows; each row holds (channel, frame, y, x) of one 14×14 patch: 3·2·14·14 = 1176.
 */
import sharp from 'sharp';
import { expectInteger, invalidParameterError } from '../util/validate.js';
import { resizeBicubic } from './resize.js';

/** OpenAI CLIP normalisation, the Qwen2-VL default. */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

export interface Qwen2VLProcessorOptions {
  /** Fewest pixels after resizing (transformers `min_pixels` / `size.shortest_edge`). Default 56·56 = 3136. */
  minPixels?: number;
  /** Most pixels after resizing (`max_pixels` / `size.longest_edge`). Default 28·28·1280 = 1,003,520. */
  maxPixels?: number;
  /** Spatial patch size. Default 14. */
  patchSize?: number;
  /** Frames per temporal patch; a still image is repeated to fill it. Default 2. */
  temporalPatchSize?: number;
  /** Side of the block of patches the merger joins into one token. Default 2. */
  mergeSize?: number;
  /** Resize with smartResize (default true). When false, sides must already be multiples of patchSize·mergeSize. */
  doResize?: boolean;
  /**
   * Resampler: 'pil-bicubic' (default) matches transformers' PIL backend exactly; 'sharp-cubic' uses
   * libvips (faster on large images; differs from PIL, see docs/data.md).
   */
  resample?: 'pil-bicubic' | 'sharp-cubic';
  /** Apply EXIF orientation when decoding (default true, as transformers' load_image). */
  autoOrient?: boolean;
  imageMean?: readonly [number, number, number];
  imageStd?: readonly [number, number, number];
  /** Default 1/255. */
  rescaleFactor?: number;
}

/** An image ready for the engine (the shape of `ImageInput` in src/engine/types.ts). */
export interface ProcessedImage {
  /** [nPatches, patchDim] row-major, nPatches = t·h·w of gridThw, patchDim = 3·temporal·patch². */
  pixels: Float32Array;
  /** Grid in patches: [frames / temporalPatchSize, height / patchSize, width / patchSize]. */
  gridThw: [number, number, number];
  /** Size of the decoded image, before resizing. */
  originalSize: { height: number; width: number };
  /** Size after smartResize (what the patches cover). */
  resizedSize: { height: number; width: number };
  /** LLM tokens this image takes in the prompt: t·h·w / mergeSize². */
  numTokens: number;
}

/** Several images for one prompt, in prompt order, with their patches concatenated. */
export interface ProcessedImages {
  /** All images' patches, concatenated in order: [Σ nPatches, patchDim]. */
  pixelValues: Float32Array;
  gridThw: [number, number, number][];
  images: ProcessedImage[];
}

/** Decoded 8-bit RGB pixels, interleaved, row-major. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** What the processor accepts: a file path, encoded bytes (PNG, JPEG, ...), or decoded RGB. */
export type ImageSource = string | Uint8Array | RgbImage;

/** Python's round(): half to even (Qwen2-VL's smart_resize uses it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Qwen2-VL's target size: both sides divisible by `factor`, `minPixels ≤ h·w ≤ maxPixels`,
 * aspect ratio kept as closely as possible; `round` is Python's (half to even). Throws, as
 * transformers does, for an aspect ratio above 200. Checked against transformers 5.17's
 * `smart_resize` over a table of sizes (test/fixtures/vision/smart_resize.json).
 */
export function smartResize(
  height: number,
  width: number,
  {
    factor = 28,
    minPixels = 56 * 56,
    maxPixels = 28 * 28 * 1280,
  }: { factor?: number; minPixels?: number; maxPixels?: number } = {},
): [number, number] {
  expectInteger('height', height, 1);
  expectInteger('width', width, 1);
  expectInteger('factor', factor, 1);
  const ratio = Math.max(height, width) / Math.min(height, width);
  if (ratio > 200) {
    throw new RangeError(
      `image of ${width}x${height} pixels has an aspect ratio of ${ratio.toFixed(1)}; Qwen2-VL accepts at most 200`,
    );
  }
  let h = roundHalfEven(height / factor) * factor;
  let w = roundHalfEven(width / factor) * factor;
  if (h * w > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    // A very thin image keeps one factor on its short side, even if that exceeds maxPixels.
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return [h, w];
}

interface Resolved {
  minPixels: number;
  maxPixels: number;
  patchSize: number;
  temporalPatchSize: number;
  mergeSize: number;
  doResize: boolean;
  resample: 'pil-bicubic' | 'sharp-cubic';
  autoOrient: boolean;
  mean: [number, number, number];
  std: [number, number, number];
  rescaleFactor: number;
}

function resolve(o: Qwen2VLProcessorOptions): Resolved {
  if (o === null || typeof o !== 'object') throw invalidParameterError('options', 'an object', o);
  const r: Resolved = {
    minPixels: expectInteger('minPixels', o.minPixels ?? 56 * 56, 1),
    maxPixels: expectInteger('maxPixels', o.maxPixels ?? 28 * 28 * 1280, 1),
    patchSize: expectInteger('patchSize', o.patchSize ?? 14, 1),
    temporalPatchSize: expectInteger('temporalPatchSize', o.temporalPatchSize ?? 2, 1),
    mergeSize: expectInteger('mergeSize', o.mergeSize ?? 2, 1),
    doResize: o.doResize ?? true,
    resample: o.resample ?? 'pil-bicubic',
    autoOrient: o.autoOrient ?? true,
    mean: [...(o.imageMean ?? CLIP_MEAN)] as [number, number, number],
    std: [...(o.imageStd ?? CLIP_STD)] as [number, number, number],
    rescaleFactor: o.rescaleFactor ?? 1 / 255,
  };
  if (r.minPixels > r.maxPixels)
    throw invalidParameterError('minPixels', `integer <= maxPixels (${r.maxPixels})`, r.minPixels);
  if (r.resample !== 'pil-bicubic' && r.resample !== 'sharp-cubic')
    throw invalidParameterError('resample', 'one of "pil-bicubic", "sharp-cubic"', r.resample);
  if (r.mean.length !== 3 || r.std.length !== 3 || r.std.some((s) => !(s > 0))) {
    throw invalidParameterError('imageStd', 'three positive numbers (and imageMean three numbers)', o.imageStd);
  }
  return r;
}

function describeSource(src: ImageSource): string {
  return typeof src === 'string'
    ? src
    : src instanceof Uint8Array
      ? `<${src.length} bytes>`
      : `<${src.width}x${src.height} RGB>`;
}

/**
 * Decode any image sharp reads into 8-bit RGB, as transformers sees it: EXIF orientation applied
 * (optional), alpha dropped, greyscale and palettes expanded. Errors name the file.
 */
export async function decodeRgb(
  src: string | Uint8Array,
  { autoOrient = true }: { autoOrient?: boolean } = {},
): Promise<RgbImage> {
  try {
    const img = sharp(src, { failOn: 'error', autoOrient }).removeAlpha().toColourspace('srgb');
    const { data, info } = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return {
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: info.width,
      height: info.height,
    };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const what = typeof src === 'string' ? src : `image buffer (${src.length} bytes)`;
    if (e.code === 'ENOENT' || /Input file is missing/.test(e.message))
      throw new Error(`${what}: image file not found`);
    // libvips repeats its warnings line by line; keep each once.
    const msg = [
      ...new Set(
        e.message
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean),
      ),
    ].join('; ');
    throw new Error(`${what}: cannot decode image: ${msg}`);
  }
}

/** The Qwen2-VL image processor (see the module comment for what it does, step by step). */
export class Qwen2VLImageProcessor {
  private readonly o: Resolved;

  constructor(options: Qwen2VLProcessorOptions = {}) {
    this.o = resolve(options);
  }

  /** Values per patch row: 3 · temporalPatchSize · patchSize². 1176 for Qwen2-VL. */
  get patchDim(): number {
    return 3 * this.o.temporalPatchSize * this.o.patchSize * this.o.patchSize;
  }

  /** The resized size and grid an image of this size gets, without touching pixels. */
  plan(
    height: number,
    width: number,
  ): { resizedSize: { height: number; width: number }; gridThw: [number, number, number]; numTokens: number } {
    const { patchSize, mergeSize } = this.o;
    const factor = patchSize * mergeSize;
    let h = height,
      w = width;
    if (this.o.doResize) {
      [h, w] = smartResize(height, width, { factor, minPixels: this.o.minPixels, maxPixels: this.o.maxPixels });
    } else if (height % factor !== 0 || width % factor !== 0) {
      throw new RangeError(
        `image of ${width}x${height} pixels: with doResize false both sides must be multiples of ${factor}`,
      );
    }
    const grid: [number, number, number] = [1, h / patchSize, w / patchSize];
    return {
      resizedSize: { height: h, width: w },
      gridThw: grid,
      numTokens: (grid[1] * grid[2]) / (mergeSize * mergeSize),
    };
  }

  /** Process one image (path, encoded bytes, or decoded RGB). */
  async process(src: ImageSource): Promise<ProcessedImage> {
    const rgb =
      typeof src === 'string' || src instanceof Uint8Array
        ? await decodeRgb(src, { autoOrient: this.o.autoOrient })
        : src;
    if (!rgb || !(rgb.data instanceof Uint8Array) || rgb.data.length !== rgb.width * rgb.height * 3) {
      throw invalidParameterError(
        'image',
        'a path, encoded image bytes, or {data: Uint8Array (width*height*3), width, height}',
        src,
      );
    }
    let plan;
    try {
      plan = this.plan(rgb.height, rgb.width);
    } catch (err) {
      throw new Error(`${describeSource(src)}: ${(err as Error).message}`);
    }
    const { height: rh, width: rw } = plan.resizedSize;
    let pixels = rgb.data;
    if (rh !== rgb.height || rw !== rgb.width) {
      if (this.o.resample === 'pil-bicubic') {
        pixels = resizeBicubic(rgb.data, rgb.width, rgb.height, 3, rw, rh);
      } else {
        const out = await sharp(rgb.data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } })
          .resize(rw, rh, { kernel: 'cubic', fit: 'fill' })
          .raw()
          .toBuffer();
        pixels = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      }
    }
    return {
      pixels: this.patchify(pixels, rh, rw),
      gridThw: plan.gridThw,
      originalSize: { height: rgb.height, width: rgb.width },
      resizedSize: plan.resizedSize,
      numTokens: plan.numTokens,
    };
  }

  /** Process the images of one prompt, in order, and concatenate their patches. */
  async processMany(sources: readonly ImageSource[]): Promise<ProcessedImages> {
    if (!Array.isArray(sources) || sources.length === 0)
      throw invalidParameterError('sources', 'a non-empty array of images', sources);
    const images: ProcessedImage[] = [];
    for (const s of sources) images.push(await this.process(s));
    const total = images.reduce((n, im) => n + im.pixels.length, 0);
    const pixelValues = new Float32Array(total);
    let at = 0;
    for (const im of images) {
      pixelValues.set(im.pixels, at);
      at += im.pixels.length;
    }
    return { pixelValues, gridThw: images.map((im) => im.gridThw), images };
  }

  /**
   * Normalise 8-bit RGB pixels (interleaved, already at their final size) and flatten them into
   * patch rows. Pure and synchronous: the heart of the processor, tested against transformers.
   */
  patchify(rgb: Uint8Array, height: number, width: number): Float32Array {
    const { patchSize: p, temporalPatchSize: tp, mergeSize: m, rescaleFactor, mean, std } = this.o;
    if (height % (p * m) !== 0 || width % (p * m) !== 0) {
      throw new RangeError(`patchify: ${width}x${height} is not a multiple of ${p * m} on both sides`);
    }
    // Channel planes in float32, computed as numpy does: u8 → float64 × scale → float32, then
    // (x − mean) / std in float32 (Math.fround after each double op gives the float32 result).
    const plane = height * width;
    const chw = new Float32Array(3 * plane);
    const m32 = mean.map(Math.fround),
      s32 = std.map(Math.fround);
    const lut = new Float32Array(3 * 256);
    for (let c = 0; c < 3; c++) {
      for (let v = 0; v < 256; v++) {
        const x = Math.fround(v * rescaleFactor);
        lut[c * 256 + v] = Math.fround(Math.fround(x - m32[c]!) / s32[c]!);
      }
    }
    for (let i = 0; i < plane; i++) {
      chw[i] = lut[rgb[3 * i]!]!;
      chw[plane + i] = lut[256 + rgb[3 * i + 1]!]!;
      chw[2 * plane + i] = lut[512 + rgb[3 * i + 2]!]!;
    }
    const gh = height / p,
      gw = width / p;
    const dim = 3 * tp * p * p;
    const out = new Float32Array(gh * gw * dim);
    let row = 0;
    for (let bh = 0; bh < gh / m; bh++) {
      for (let bw = 0; bw < gw / m; bw++) {
        for (let mh = 0; mh < m; mh++) {
          for (let mw = 0; mw < m; mw++) {
            const y0 = (bh * m + mh) * p,
              x0 = (bw * m + mw) * p;
            let o = row * dim;
            for (let c = 0; c < 3; c++) {
              for (let t = 0; t < tp; t++) {
                // every frame is the same still image
                for (let py = 0; py < p; py++) {
                  const from = c * plane + (y0 + py) * width + x0;
                  out.set(chw.subarray(from, from + p), o);
                  o += p;
                }
              }
            }
            row++;
          }
        }
      }
    }
    return out;
  }
}
