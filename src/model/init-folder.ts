/**
 * `vqalab model init`: a model folder with random weights at a real architecture's dims — config.json,
 * model.safetensors, the real Qwen tokenizer, chat template, generation and preprocessor configs —
 * so tokenizer, template, the 151,936-row head, image pads and checkpoints run exactly as with a
 * downloaded checkpoint, before any weights are downloaded.
 *
 * Weights are streamed: the safetensors header is laid out from the tensor shapes, then each tensor
 * is drawn in chunks of `CHUNK` values, converted (bf16 by default, as the checkpoints ship) and
 * written, so 2.2 B parameters take a few MiB of memory, not 9 GB. Initialisation follows
 * transformers' `_init_weights` (src/model/init.ts): matrices N(0, initializer_range²), biases 0,
 * norm weights 1; normals from a seeded xoshiro128** (Box–Muller, both outputs used), so a seed
 * gives the same bytes on every machine.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Rng } from '../grpo/rng.js';
import { withAtomicOutput } from '../util/fs.js';
import { numelOf, qwen2vlTensorSpecs, type Qwen2VLDims, type TensorSpec } from './qwen2vl.js';
import { MODEL_PRESETS, presetDims, type DimOverrides, type ModelPreset } from './presets.js';
import { qwen2vlGenerationConfig, qwen2vlPreprocessorConfig, qwen2vlTokenizerConfig, qwen2vlTokenizerJson } from './qwen-tokenizer.js';

/** Values drawn and written per chunk (4 MiB of f32 scratch, 2 MiB of bf16 output). */
const CHUNK = 1 << 20;

export type WeightDtype = 'BF16' | 'F32';

export interface ModelInitOptions {
  /** A name of MODEL_PRESETS (default 'qwen2-vl-2b'). */
  preset?: string;
  overrides?: DimOverrides;
  /** Seed of the weights (default 0). */
  seed?: number;
  /** Weight dtype in model.safetensors (default BF16, as the released checkpoints). */
  dtype?: WeightDtype;
  /** preprocessor_config.json max_pixels (default the checkpoint's 12845056). */
  maxPixels?: number;
  /** Called after each chunk with the parameters written so far and the total. */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface ModelInitResult {
  dir: string;
  preset: string;
  dims: Qwen2VLDims;
  parameters: number;
  bytes: number;
  seconds: number;
}

/** The preset by name; the message lists the known ones. */
export function modelPreset(name: string): ModelPreset {
  const p = MODEL_PRESETS[name];
  if (!p) throw new Error(`unknown preset "${name}"; known: ${Object.keys(MODEL_PRESETS).join(', ')}`);
  return p;
}

/** The safetensors header for tensors of one dtype written in spec order (8-byte padded, as the reference writer does). */
export function safetensorsHeader(specs: readonly TensorSpec[], dtype: WeightDtype, metadata: Record<string, string>): { header: Buffer; dataBytes: number } {
  const bytes = dtype === 'BF16' ? 2 : 4;
  const h: Record<string, unknown> = { __metadata__: metadata };
  let at = 0;
  for (const s of specs) {
    const n = numelOf(s.shape) * bytes;
    h[s.name] = { dtype, shape: s.shape, data_offsets: [at, at + n] };
    at += n;
  }
  let json = JSON.stringify(h);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const header = Buffer.alloc(8 + body.length);
  header.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(header, 8);
  return { header, dataBytes: at };
}

/** Seeded standard normals, two per Box–Muller draw. */
class NormalStream {
  private spare = NaN;
  constructor(private readonly rng: Rng) {}
  fill(out: Float32Array, n: number, std: number): void {
    let i = 0;
    if (n > 0 && !Number.isNaN(this.spare)) { out[i++] = this.spare * std; this.spare = NaN; }
    const TWO_PI = 2 * Math.PI, INV = 1 / 4294967296;
    for (; i < n; i += 2) {
      const u = (this.rng.nextU32() + 1) * INV, v = this.rng.nextU32() * INV;
      const r = Math.sqrt(-2 * Math.log(u)), a = TWO_PI * v;
      out[i] = r * Math.cos(a) * std;
      if (i + 1 < n) out[i + 1] = r * Math.sin(a) * std;
      else this.spare = r * Math.sin(a);
    }
  }
}

/** float32 → bfloat16, round to nearest even (NaN stays NaN). */
function toBf16(src: Float32Array, n: number, out: Uint16Array): void {
  const u = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const b = u[i]!;
    out[i] = (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
}

/**
 * Stream `specs` to `file` as safetensors, drawing each tensor's values as its `init` says.
 * Memory: one chunk. Returns the bytes written.
 */
export async function writeRandomSafetensors(file: string, specs: readonly TensorSpec[], o: { seed: number; std: number; dtype: WeightDtype; metadata?: Record<string, string>; onProgress?: (done: number, total: number) => void; signal?: AbortSignal }): Promise<number> {
  const { header, dataBytes } = safetensorsHeader(specs, o.dtype, { format: 'pt', ...o.metadata });
  const total = specs.reduce((a, s) => a + numelOf(s.shape), 0);
  const normals = new NormalStream(new Rng(o.seed));
  const f32 = new Float32Array(CHUNK);
  const bf16 = new Uint16Array(CHUNK);
  const h = await fsp.open(file, 'w');
  let done = 0;
  try {
    await h.write(header);
    for (const s of specs) {
      const n = numelOf(s.shape);
      for (let at = 0; at < n; at += CHUNK) {
        if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
        const k = Math.min(CHUNK, n - at);
        if (s.init === 'normal') normals.fill(f32, k, o.std);
        else f32.fill(s.init === 'ones' ? 1 : 0, 0, k);
        let bytes: Uint8Array;
        if (o.dtype === 'BF16') {
          toBf16(f32, k, bf16);
          bytes = new Uint8Array(bf16.buffer, 0, k * 2);
        } else {
          bytes = new Uint8Array(f32.buffer, 0, k * 4);
        }
        let w = 0;
        while (w < bytes.length) w += (await h.write(bytes, w, bytes.length - w)).bytesWritten;
        done += k;
        o.onProgress?.(done, total);
      }
    }
    await h.sync();
  } finally {
    await h.close();
  }
  return header.length + dataBytes;
}

/**
 * Write a model folder at `dir` (atomically: a temporary folder renamed into place; an existing
 * non-empty `dir` is an error unless `force`).
 */
export async function initModelFolder(dir: string, options: ModelInitOptions & { force?: boolean } = {}): Promise<ModelInitResult> {
  const t0 = performance.now();
  const preset = modelPreset(options.preset ?? 'qwen2-vl-2b');
  const dims = presetDims(preset, options.overrides ?? {});
  const config = preset.configJson(dims);
  const dtype = options.dtype ?? 'BF16';
  if (dtype === 'F32') config.torch_dtype = 'float32';
  const seed = options.seed ?? 0;
  const specs = qwen2vlTensorSpecs(dims);
  const parameters = specs.reduce((a, s) => a + numelOf(s.shape), 0);
  const target = path.resolve(dir);
  if (!options.force) {
    const entries = await fsp.readdir(target).catch(() => []);
    if (entries.length > 0) throw new Error(`${dir} exists and is not empty; choose a new folder or pass --force to replace it`);
  }
  // Read the tokenizer first: a missing package fails before 4 GB are written.
  const tokenizerJson = qwen2vlTokenizerJson();
  let bytes = 0;
  await withAtomicOutput(target, async (tmp) => {
    await fsp.mkdir(tmp, { recursive: true });
    const json = (name: string, value: unknown) => fsp.writeFile(path.join(tmp, name), JSON.stringify(value, null, 2) + '\n');
    await json('config.json', config);
    await fsp.writeFile(path.join(tmp, 'tokenizer.json'), JSON.stringify(tokenizerJson));
    await json('tokenizer_config.json', qwen2vlTokenizerConfig());
    await json('generation_config.json', qwen2vlGenerationConfig());
    await json('preprocessor_config.json', qwen2vlPreprocessorConfig(options.maxPixels));
    bytes = await writeRandomSafetensors(path.join(tmp, 'model.safetensors'), specs, {
      seed, std: dims.initializerRange, dtype, onProgress: options.onProgress, signal: options.signal,
      metadata: { 'vqalab.init': `preset=${preset.name} seed=${seed} random weights` },
    });
  });
  return { dir: target, preset: preset.name, dims, parameters, bytes, seconds: (performance.now() - t0) / 1000 };
}
