/**
 * Bicubic resampling of 8-bit interleaved images, computed the way PIL's `Image.resize(...,
 * BICUBIC)` computes it, so that our pixels equal those of transformers' PIL image processor.
 *
 * Why not sharp's resize: libvips enlarges through an affine interpolator whose sampling grid
 * differs from PIL's, so upscaled pixels differ by ~12 of 255 levels on average (≈0.17 in CLIP-
 * normalised units, measured; see docs/data.md); even its downscale differs by ~0.3 levels. The
 * Qwen2-VL processor upscales small images to multiples of 28 all the time, so we resample here.
 *
 * The method (a separable convolution, as PIL does it):
 * - per axis, `scale = inSize / outSize`; the cubic kernel (a = -0.5, support 2) is stretched by
 *   `max(scale, 1)` when shrinking (antialiasing); output pixel i is centred at `(i + 0.5) * scale`
 *   in input coordinates and takes the input pixels whose centres fall within the support;
 * - weights are normalised to sum 1, then quantised to fixed point with 22 fractional bits
 *   (rounded half away from zero), and each sum is rounded and clamped to 0..255;
 * - the horizontal pass runs first (only over the rows the vertical pass reads), its 8-bit result
 *   feeds the vertical pass; an axis whose size does not change is not resampled.
 */

const PRECISION_BITS = 32 - 8 - 2;
const HALF = 1 << (PRECISION_BITS - 1);

function cubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs {
  /** First input index of each output pixel. */
  start: Int32Array;
  /** Number of taps of each output pixel. */
  count: Int32Array;
  /** Taps per output pixel (stride of `weights`). */
  stride: number;
  /** Fixed-point weights, `stride` per output pixel. */
  weights: Int32Array;
}

function coefficients(inSize: number, outSize: number): Coeffs {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const stride = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * stride);
  const k = new Float64Array(stride);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // Truncation toward zero, as a C cast; both bounds are clamped to the input.
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const n = hi - lo;
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const w = cubic((j + lo - center + 0.5) / filterScale);
      k[j] = w;
      sum += w;
    }
    for (let j = 0; j < n; j++) {
      const w = sum !== 0 ? k[j]! / sum : k[j]!;
      weights[i * stride + j] =
        w < 0 ? Math.trunc(-0.5 + w * (1 << PRECISION_BITS)) : Math.trunc(0.5 + w * (1 << PRECISION_BITS));
    }
    start[i] = lo;
    count[i] = n;
  }
  return { start, count, stride, weights };
}

function clamp8(v: number): number {
  // v is the fixed-point sum; an arithmetic shift floors, as PIL's does.
  const x = v >> PRECISION_BITS;
  return x < 0 ? 0 : x > 255 ? 255 : x;
}

/**
 * Resize an 8-bit interleaved image (`channels` values per pixel, row-major) to `outWidth` ×
 * `outHeight` with PIL-compatible bicubic resampling. Returns a new buffer.
 */
export function resizeBicubic(
  src: Uint8Array,
  width: number,
  height: number,
  channels: number,
  outWidth: number,
  outHeight: number,
): Uint8Array {
  if (src.length !== width * height * channels) {
    throw new RangeError(
      `resizeBicubic: expected ${width * height * channels} bytes for ${width}x${height}x${channels} but received ${src.length}`,
    );
  }
  if (outWidth === width && outHeight === height) return src.slice();
  const needH = outWidth !== width;
  const needV = outHeight !== height;
  const cv = needV ? coefficients(height, outHeight) : undefined;
  // Rows the vertical pass reads; the horizontal pass computes only these.
  let rowFirst = 0,
    rowLast = height;
  if (cv) {
    rowFirst = cv.start[0]!;
    rowLast = cv.start[outHeight - 1]! + cv.count[outHeight - 1]!;
  }
  let mid = src;
  let midFirst = 0;
  if (needH) {
    const ch = coefficients(width, outWidth);
    const rows = rowLast - rowFirst;
    mid = new Uint8Array(rows * outWidth * channels);
    midFirst = rowFirst;
    for (let y = 0; y < rows; y++) {
      const inRow = (y + rowFirst) * width * channels;
      const outRow = y * outWidth * channels;
      for (let x = 0; x < outWidth; x++) {
        const s = ch.start[x]!,
          n = ch.count[x]!,
          w0 = x * ch.stride;
        for (let c = 0; c < channels; c++) {
          let acc = HALF;
          for (let j = 0; j < n; j++) acc += src[inRow + (s + j) * channels + c]! * ch.weights[w0 + j]!;
          mid[outRow + x * channels + c] = clamp8(acc);
        }
      }
    }
  }
  if (!cv) return mid;
  const rowLen = outWidth * channels;
  const out = new Uint8Array(outHeight * rowLen);
  for (let y = 0; y < outHeight; y++) {
    const s = cv.start[y]! - midFirst,
      n = cv.count[y]!,
      w0 = y * cv.stride;
    const outRow = y * rowLen;
    for (let i = 0; i < rowLen; i++) {
      let acc = HALF;
      for (let j = 0; j < n; j++) acc += mid[(s + j) * rowLen + i]! * cv.weights[w0 + j]!;
      out[outRow + i] = clamp8(acc);
    }
  }
  return out;
}
