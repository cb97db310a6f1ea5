/**
 * `vqalab model init`: a model folder with random weights at a real architecture's dims — config.json,
 * model.safetensors, and the tokenizer-side files of the preset's family (the real Qwen tokenizer with
 * that checkpoint's added tokens, its chat template, generation and preprocessor configs;
 * src/model/qwen-tokenizer.ts) — so tokenizer, template, the 151,936-row head, image pads and checkpoints run exactly as with a
 * downloaded checkpoint, before any weights are downloaded.
 *
 * Weights are streamed: the safetensors header is laid out from the tensor shapes, then each tensor
 * is drawn in chunks of `CHUNK` values, converted (bf16 by default, as the checkpoints ship) and
 * written, so 2.2 B parameters take a few MiB of memory, not 9 GB. Initialisation follows
 * transformers' `_init_weights` (src/model/init.ts): matrices N(0, initializer_range²), biases 0,
 * norm weights 1; normals by Box–Muller from xoshiro128** seeded per chunk of each tensor, drawn on
 * worker threads, so a seed gives the same bytes on every machine, with any number of threads.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { withAtomicOutput } from '../util/fs.js';
import { numelOf, qwen2vlTensorSpecs, type Qwen2VLDims, type TensorSpec } from './qwen2vl.js';
import { MODEL_PRESETS, presetDims, type DimOverrides, type ModelPreset } from './presets.js';
import {
  FAMILY_PRESETS,
  familyConfigJson,
  familyPresetDims,
  familyTensorSpecs,
  type FamilyDims,
} from './presets-family.js';
import { familyPreprocessorConfig, familyVideoPreprocessorConfig } from './processor-files.js';
import { qwen2vlPreprocessorConfig, qwenTokenizerFiles, type QwenFamily } from './qwen-tokenizer.js';

/** Values drawn and written per chunk (4 MiB of f32 scratch, 2 MiB of bf16 output). */
const CHUNK = 1 << 20;

export type WeightDtype = 'BF16' | 'F32';

export interface ModelInitOptions {
  /** A name of MODEL_PRESETS or FAMILY_PRESETS (default 'qwen2-vl-2b'). */
  preset?: string;
  overrides?: DimOverrides;
  /** Seed of the weights (default 0). */
  seed?: number;
  /** Weight dtype in model.safetensors (default BF16, as the released checkpoints). */
  dtype?: WeightDtype;
  /** preprocessor_config.json max_pixels (default the checkpoint's 12845056). */
  maxPixels?: number;
  /** Worker threads drawing the weights (default: the machine's cores; the bytes do not depend on it). */
  threads?: number;
  /** Called after each chunk with the parameters written so far and the total. */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface ModelInitResult {
  dir: string;
  preset: string;
  dims: Qwen2VLDims | FamilyDims;
  parameters: number;
  bytes: number;
  seconds: number;
}

/** Every preset name: Qwen2-VL's (presets.ts), then Qwen2.5-VL's and Qwen3-VL's (presets-family.ts). */
export const PRESET_NAMES: readonly string[] = [...Object.keys(MODEL_PRESETS), ...Object.keys(FAMILY_PRESETS)];

/** The preset by name; the message lists the known ones. */
export function modelPreset(name: string): ModelPreset {
  const p = MODEL_PRESETS[name];
  if (!p) throw new Error(`unknown preset "${name}"; known: ${PRESET_NAMES.join(', ')}`);
  return p;
}

/** What a folder of a preset is made of, for any family: dims after overrides, config.json, tensors, processor settings. */
export interface PresetLayout {
  name: string;
  dims: Qwen2VLDims | FamilyDims;
  config: Record<string, unknown>;
  specs: TensorSpec[];
  preprocessor: Record<string, unknown>;
  /** video_preprocessor_config.json, where the checkpoint ships one (Qwen3-VL). */
  videoPreprocessor?: Record<string, unknown>;
  /** Whose tokenizer files the folder gets (config.json model_type). */
  family: QwenFamily;
}

export function presetLayout(name: string, overrides: DimOverrides = {}, maxPixels?: number): PresetLayout {
  const fam = FAMILY_PRESETS[name];
  if (fam) {
    const dims = familyPresetDims(fam.dims, overrides);
    const preprocessor = familyPreprocessorConfig(dims);
    if (maxPixels !== undefined) {
      // Qwen3-VL's file gives the bounds as size {shortest_edge, longest_edge}, Qwen2.5-VL's as min/max_pixels
      const size = preprocessor.size as { shortest_edge: number; longest_edge: number } | undefined;
      const min = size ? size.shortest_edge : (preprocessor.min_pixels as number);
      if (maxPixels < min)
        throw new Error(`--max-pixels ${maxPixels} is below the ${name} processor's min_pixels ${min}`);
      if (size) size.longest_edge = maxPixels;
      else preprocessor.max_pixels = maxPixels;
    }
    const videoPreprocessor = familyVideoPreprocessorConfig(dims);
    return {
      name,
      dims,
      config: familyConfigJson(dims),
      specs: familyTensorSpecs(dims),
      preprocessor,
      ...(videoPreprocessor ? { videoPreprocessor } : {}),
      family: dims.modelType,
    };
  }
  const preset = modelPreset(name);
  const dims = presetDims(preset, overrides);
  return {
    name,
    dims,
    config: preset.configJson(dims),
    specs: qwen2vlTensorSpecs(dims),
    preprocessor: qwen2vlPreprocessorConfig(maxPixels),
    family: 'qwen2_vl',
  };
}

/** The safetensors header for tensors of one dtype written in spec order (8-byte padded, as the reference writer does). */
export function safetensorsHeader(
  specs: readonly TensorSpec[],
  dtype: WeightDtype,
  metadata: Record<string, string>,
): { header: Buffer; dataBytes: number } {
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

/**
 * The chunk generator, as source text so it runs in worker threads without a separate file (the
 * same code in a bundle): chunk c of tensor t is drawn from xoshiro128** seeded with
 * mix(seed, t, c), standard normals by Box–Muller (both outputs), scaled by std, then narrowed to
 * bf16 (round to nearest even) or kept f32. The bytes depend on (seed, t, c) only, so any number
 * of threads writes the same file.
 */
const CHUNK_SOURCE = String.raw`
function mix(a, b) {
  let h = (Math.imul(a ^ (a >>> 16), 0x85ebca6b) ^ Math.imul(b + 0x9e3779b9, 0xc2b2ae35)) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0x27d4eb2d) >>> 0;
  return (h ^ (h >>> 15)) >>> 0;
}
function drawChunk(seed, tensor, chunk, n, std, init, dtype) {
  const f32 = new Float32Array(n);
  if (init === 'ones') f32.fill(1);
  else if (init === 'normal') {
    let x = mix(mix(seed >>> 0, tensor), chunk);
    const s = new Uint32Array(4);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (s[0] === 0 && s[1] === 0 && s[2] === 0 && s[3] === 0) s[0] = 1;
    const next = () => {
      const r = Math.imul(((Math.imul(s[1], 5) << 7) | (Math.imul(s[1], 5) >>> 25)), 9) >>> 0;
      const t = (s[1] << 9) >>> 0;
      s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
      s[3] = ((s[3] << 11) | (s[3] >>> 21)) >>> 0;
      return r;
    };
    const INV = 1 / 4294967296, TWO_PI = 2 * Math.PI;
    for (let i = 0; i < n; i += 2) {
      const u = (next() + 1) * INV, v = next() * INV;
      const r = Math.sqrt(-2 * Math.log(u)) * std, a = TWO_PI * v;
      f32[i] = r * Math.cos(a);
      if (i + 1 < n) f32[i + 1] = r * Math.sin(a);
    }
  }
  if (dtype === 'F32') return f32.buffer;
  const u32 = new Uint32Array(f32.buffer), out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const b = u32[i];
    out[i] = (b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) ? (b >>> 16) | 0x40 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out.buffer;
}
`;

type DrawChunk = (
  seed: number,
  tensor: number,
  chunk: number,
  n: number,
  std: number,
  init: string,
  dtype: WeightDtype,
) => ArrayBuffer;
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const drawChunk = new Function(`${CHUNK_SOURCE}; return drawChunk;`)() as DrawChunk;

const WORKER_SOURCE = `${CHUNK_SOURCE}
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => {
  const buf = drawChunk(m.seed, m.tensor, m.chunk, m.n, m.std, m.init, m.dtype);
  parentPort.postMessage({ id: m.id, buf }, [buf]);
});`;

interface Job {
  seed: number;
  tensor: number;
  chunk: number;
  n: number;
  std: number;
  init: string;
  dtype: WeightDtype;
}

/** Chunks drawn on `threads` worker threads (or inline for 1), delivered in order. */
class ChunkPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (b: ArrayBuffer) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private turn = 0;
  constructor(threads: number) {
    for (let i = 0; i < (threads > 1 ? threads : 0); i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true });
      w.on('message', (m: { id: number; buf: ArrayBuffer }) => {
        this.pending.get(m.id)?.resolve(m.buf);
        this.pending.delete(m.id);
      });
      w.on('error', (err) => {
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
      this.workers.push(w);
    }
  }
  draw(job: Job): Promise<ArrayBuffer> {
    if (this.workers.length === 0)
      return Promise.resolve(drawChunk(job.seed, job.tensor, job.chunk, job.n, job.std, job.init, job.dtype));
    const id = this.nextId++;
    const w = this.workers[this.turn++ % this.workers.length]!;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ ...job, id });
    });
  }
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/**
 * Stream `specs` to `file` as safetensors, drawing each tensor's values as its `init` says, on
 * `threads` worker threads (default: the machine's cores; the bytes do not depend on it). Memory:
 * a few chunks per thread. Returns the bytes written.
 */
export async function writeRandomSafetensors(
  file: string,
  specs: readonly TensorSpec[],
  o: {
    seed: number;
    std: number;
    dtype: WeightDtype;
    threads?: number;
    metadata?: Record<string, string>;
    onProgress?: (done: number, total: number) => void;
    signal?: AbortSignal;
  },
): Promise<number> {
  const { header, dataBytes } = safetensorsHeader(specs, o.dtype, { format: 'pt', ...o.metadata });
  const total = specs.reduce((a, s) => a + numelOf(s.shape), 0);
  const threads = Math.max(1, o.threads ?? availableParallelism());
  const jobs: Job[] = [];
  specs.forEach((s, t) => {
    const n = numelOf(s.shape);
    for (let c = 0, at = 0; at < n; c++, at += CHUNK)
      jobs.push({
        seed: o.seed,
        tensor: t,
        chunk: c,
        n: Math.min(CHUNK, n - at),
        std: o.std,
        init: s.init,
        dtype: o.dtype,
      });
  });
  const pool = new ChunkPool(threads);
  const h = await fsp.open(file, 'w');
  let done = 0;
  try {
    await h.write(header);
    // Keep 2 chunks per thread in flight; write them in order.
    const window = 2 * threads;
    const inflight: Promise<ArrayBuffer>[] = [];
    let next = 0;
    for (let j = 0; j < jobs.length; j++) {
      while (next < jobs.length && next < j + window) inflight.push(pool.draw(jobs[next++]!));
      if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
      const bytes = new Uint8Array(await inflight.shift()!);
      let w = 0;
      while (w < bytes.length) w += (await h.write(bytes, w, bytes.length - w)).bytesWritten;
      done += jobs[j]!.n;
      o.onProgress?.(done, total);
    }
    await h.sync();
  } finally {
    await h.close();
    await pool.close();
  }
  return header.length + dataBytes;
}

/**
 * Write a model folder at `dir` (atomically: a temporary folder renamed into place; an existing
 * non-empty `dir` is an error unless `force`).
 */
export async function initModelFolder(
  dir: string,
  options: ModelInitOptions & { force?: boolean } = {},
): Promise<ModelInitResult> {
  const t0 = performance.now();
  const layout = presetLayout(options.preset ?? 'qwen2-vl-2b', options.overrides ?? {}, options.maxPixels);
  const { dims, config, specs } = layout;
  const preset = { name: layout.name };
  const dtype = options.dtype ?? 'BF16';
  if (dtype === 'F32') {
    // the nested form (Qwen3-VL) names the dtype in text_config.dtype
    if (config.text_config && typeof config.text_config === 'object')
      (config.text_config as Record<string, unknown>).dtype = 'float32';
    else config.torch_dtype = 'float32';
  }
  const seed = options.seed ?? 0;
  const parameters = specs.reduce((a, s) => a + numelOf(s.shape), 0);
  const target = path.resolve(dir);
  if (!options.force) {
    const entries = await fsp.readdir(target).catch(() => []);
    if (entries.length > 0)
      throw new Error(`${dir} exists and is not empty; choose a new folder or pass --force to replace it`);
  }
  // Read the tokenizer first: a missing package fails before 4 GB are written.
  const tokenizerFiles = qwenTokenizerFiles(layout.family);
  let bytes = 0;
  await withAtomicOutput(target, async (tmp) => {
    await fsp.mkdir(tmp, { recursive: true });
    const json = (name: string, value: unknown) =>
      fsp.writeFile(path.join(tmp, name), JSON.stringify(value, null, 2) + '\n');
    await json('config.json', config);
    for (const [name, value] of Object.entries(tokenizerFiles)) {
      // tokenizer.json is 11 MB: written compact, as the released file
      if (name === 'tokenizer.json') await fsp.writeFile(path.join(tmp, name), JSON.stringify(value));
      else await json(name, value);
    }
    await json('preprocessor_config.json', layout.preprocessor);
    if (layout.videoPreprocessor) await json('video_preprocessor_config.json', layout.videoPreprocessor);
    bytes = await writeRandomSafetensors(path.join(tmp, 'model.safetensors'), specs, {
      seed,
      std: dims.initializerRange,
      dtype,
      onProgress: options.onProgress,
      signal: options.signal,
      ...(options.threads === undefined ? {} : { threads: options.threads }),
      metadata: { 'vqalab.init': `preset=${preset.name} seed=${seed} random weights` },
    });
  });
  return { dir: target, preset: preset.name, dims, parameters, bytes, seconds: (performance.now() - t0) / 1000 };
}
