/**
 * OnnxPolicy: the {@link Policy} over an ONNX folder written by `vqalab export onnx` (the
 * transformers.js layout), run by onnxruntime-node on the CPU — a second, independent inference
 * backend beside the native engine. Same prompt as LocalPolicy (the checkpoint's tokenizer, chat
 * template and Qwen2-VL image processor), same M-RoPE positions (transformers' get_rope_index), and
 * the same sampler: greedy, temperature, top-k, top-p with the engine's counter-based randomness
 * (native/src/sampler.cc, ported below), so a seed picks the same token from the same logits.
 *
 * Generation: the prompt is prefilled once (batch 1), its key/value cache is copied to the n rows,
 * and the n rows are decoded together (one decoder call per step, KV cache in and out); rows that
 * stopped keep stepping with the others until every row stopped or reached maxTokens.
 */
import { randomInt } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type * as OrtTypes from 'onnxruntime-node';
import type { VqaSample } from '../data/types.js';
import type { ImageInput, Prompt } from '../engine/types.js';
import { parseConfig, type EngineConfig } from '../engine/config.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { expectInteger, expectNumber, invalidParameterError } from '../util/validate.js';
import { Qwen2VLImageProcessor, type ImageSource } from '../vision/qwen2vl.js';
import { processorOptionsFrom } from '../vision/processor-config.js';
import { firstIndexOf } from './local-stream.js';
import { ropeIndex } from './onnx-rope.js';

export { ropeIndex } from './onnx-rope.js';
import type { Completion, Policy, SamplingOptions } from './types.js';

type Ort = typeof OrtTypes;
type OrtTensor = OrtTypes.Tensor;
type Session = OrtTypes.InferenceSession;

let ortModule: Ort | undefined;
/** onnxruntime-node, loaded on first use (installed with ONNXRUNTIME_NODE_INSTALL=skip: CPU provider). */
export async function loadOrt(): Promise<Ort> {
  if (!ortModule) {
    try {
      ortModule = (await import('onnxruntime-node')) as unknown as Ort;
    } catch (err) {
      throw new Error(
        `onnxruntime-node is not installed or cannot load (${(err as Error).message}); install it with ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node`,
      );
    }
  }
  return ortModule;
}

const DTYPE_SUFFIX: Record<string, string> = { fp32: '', fp16: '_fp16', int8: '_int8' };

// ---- the engine's sampler (native/src/sampler.cc), for the same tokens from the same seed ------------

const MASK64 = (1n << 64n) - 1n;
function splitmix(z: bigint): bigint {
  z = (z + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

/** Uniform in [0, 1) for (seed, sample, step): the engine's counter-based hash. */
export function uniform01(seed: number, g: number, t: number): number {
  const h = splitmix(splitmix(splitmix(BigInt(seed)) ^ BigInt(g)) ^ ((BigInt(t) * 0xd1b54a32d192ed03n) & MASK64));
  return Number(h >> 11n) * (1 / 9007199254740992);
}

export interface TokenSampling {
  temperature: number;
  /** 1 (or undefined): no nucleus filter. */
  topP?: number;
  /** 0 (or undefined): no top-k filter. */
  topK?: number;
  seed: number;
}

/**
 * One token from a row of logits, exactly as the engine's sample_token: temperature 0 is argmax
 * (lowest index on ties); otherwise logits / T, top-k, top-p, inverse-CDF with uniform01(seed, g, t).
 * Returns the token and its log-prob under the unfiltered temperature-1 distribution.
 */
export function sampleToken(
  logits: Float32Array,
  o: TokenSampling,
  g: number,
  t: number,
): { id: number; logprob: number } {
  const V = logits.length;
  let mx = -Infinity,
    arg = 0;
  for (let j = 0; j < V; j++)
    if (logits[j]! > mx) {
      mx = logits[j]!;
      arg = j;
    }
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(logits[j]! - mx);
  const lse = mx + Math.log(s);
  let tok = arg;
  const temperature = Math.fround(o.temperature);
  if (temperature > 0) {
    const invT = 1 / temperature;
    const topK = o.topK ?? 0,
      topP = Math.fround(o.topP ?? 1);
    const useK = topK > 0 && topK < V,
      useP = topP < 1;
    let cand: number[] | undefined;
    if (useK || useP) {
      cand = Array.from({ length: V }, (_, j) => j);
      cand.sort((a, b) => logits[b]! - logits[a]! || a - b);
      if (useK) cand.length = topK;
    }
    const n = cand ? cand.length : V;
    const id = (i: number) => (cand ? cand[i]! : i);
    const w = new Float64Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) {
      w[i] = Math.exp((logits[id(i)]! - mx) * invT);
      total += w[i]!;
    }
    let keep = n;
    if (useP) {
      let cum = 0;
      keep = 0;
      while (keep < n && (keep === 0 || cum < topP * total)) cum += w[keep++]!;
      total = cum;
    }
    const u = uniform01(o.seed, g, t) * total;
    let cum = 0;
    tok = id(keep - 1);
    for (let i = 0; i < keep; i++) {
      cum += w[i]!;
      if (u < cum) {
        tok = id(i);
        break;
      }
    }
  }
  return { id: tok, logprob: Math.fround(logits[tok]! - lse) };
}

// ---- the three sessions ------------------------------------------------------------------------------

export interface OnnxModelOptions {
  /** Intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
  /** Which files: fp32, fp16 or int8 (default: config.json's transformers.js_config.dtype, else fp32). */
  dtype?: 'fp32' | 'fp16' | 'int8';
  /**
   * Let onnxruntime's worker threads spin between operators (its default, fastest on an idle
   * machine). Default false here: on a shared, oversubscribed CPU spinning threads steal the cores.
   */
  spin?: boolean;
  /**
   * More onnxruntime session options, merged over these (e.g. `{ enableCpuMemArena: false, extra:
   * { session: { disable_prepacking: '1' } } }` to hold a large model once instead of twice).
   */
  sessionOptions?: OrtTypes.InferenceSession.SessionOptions;
}

/** The exported Qwen2-VL as onnxruntime sessions, with prefill / decode / full-logits helpers. */
export class OnnxModel {
  private constructor(
    readonly dir: string,
    readonly config: EngineConfig,
    readonly dtype: string,
    private readonly ort: Ort,
    private readonly vision: Session | undefined,
    private readonly embed: Session,
    private readonly decoder: Session,
  ) {}

  static async load(dir: string, options: OnnxModelOptions = {}): Promise<OnnxModel> {
    const cfgFile = path.join(dir, 'config.json');
    if (!existsSync(cfgFile)) throw new Error(`${dir}: not an exported model folder (no config.json)`);
    let raw: Record<string, any>;
    try {
      raw = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, any>;
    } catch (err) {
      throw new Error(`${cfgFile}: invalid JSON (${(err as Error).message})`);
    }
    const config = parseConfig(raw, cfgFile);
    const dtype = options.dtype ?? raw['transformers.js_config']?.dtype ?? 'fp32';
    const suffix = DTYPE_SUFFIX[dtype];
    if (suffix === undefined) throw invalidParameterError('dtype', 'fp32, fp16 or int8', dtype);
    const file = (name: string) => {
      const f = path.join(dir, 'onnx', `${name}${suffix}.onnx`);
      if (!existsSync(f))
        throw new Error(
          `${dir}: missing onnx/${name}${suffix}.onnx (export it with vqalab export onnx --dtype ${dtype})`,
        );
      return f;
    };
    const ort = await loadOrt();
    const so: OrtTypes.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
      ...options.sessionOptions,
      extra: {
        ...options.sessionOptions?.extra,
        session: {
          intra_op: { allow_spinning: options.spin ? '1' : '0' },
          inter_op: { allow_spinning: options.spin ? '1' : '0' },
          ...(options.sessionOptions?.extra as { session?: object } | undefined)?.session,
        },
      },
    };
    const vision = config.vision.depth > 0 ? await ort.InferenceSession.create(file('vision_encoder'), so) : undefined;
    const embed = await ort.InferenceSession.create(file('embed_tokens'), so);
    const decoder = await ort.InferenceSession.create(file('decoder_model_merged'), so);
    return new OnnxModel(dir, config, dtype, ort, vision, embed, decoder);
  }

  private i64(data: BigInt64Array | number[], dims: number[]): OrtTensor {
    const a = data instanceof BigInt64Array ? data : BigInt64Array.from(data.map((x) => BigInt(x)));
    return new this.ort.Tensor('int64', a, dims);
  }

  /**
   * Width of inputs_embeds: hidden, or hidden · (1 + K) with Qwen3-VL's K DeepStack slots
   * (src/export/decoder.ts).
   */
  get embedWidth(): number {
    const dims = this.decoder.inputMetadata?.find((m) => m.name === 'inputs_embeds');
    const w = dims && 'shape' in dims ? dims.shape[2] : undefined;
    return typeof w === 'number' ? w : this.config.hiddenSize;
  }

  /** inputs_embeds [1, L, W] of a prompt, image (and video) features put at its image (video) tokens. */
  async promptEmbeds(prompt: Prompt, extra: Int32Array = new Int32Array(0)): Promise<OrtTensor> {
    const H = this.embedWidth;
    const ids = new Int32Array(prompt.ids.length + extra.length);
    ids.set(prompt.ids);
    ids.set(extra, prompt.ids.length);
    const out = await this.embed.run({ input_ids: this.i64(Array.from(ids), [1, ids.length]) });
    const embeds = out.inputs_embeds!.data as Float32Array;
    if (prompt.images.length > 0) {
      if (!this.vision) throw new Error('the prompt has images but the model has no vision encoder');
      const PD =
        prompt.images[0]!.pixels.length /
        (prompt.images[0]!.gridThw[0] * prompt.images[0]!.gridThw[1] * prompt.images[0]!.gridThw[2]);
      let N = 0;
      for (const im of prompt.images) N += im.gridThw[0] * im.gridThw[1] * im.gridThw[2];
      const pixels = new Float32Array(N * PD);
      let off = 0;
      for (const im of prompt.images) {
        pixels.set(im.pixels, off);
        off += im.pixels.length;
      }
      const grid = prompt.images.flatMap((im) => im.gridThw);
      const gridName = this.vision.inputNames.includes('image_grid_thw') ? 'image_grid_thw' : 'grid_thw';
      const v = await this.vision.run({
        pixel_values: new this.ort.Tensor('float32', pixels, [N, PD]),
        [gridName]: this.i64(grid, [prompt.images.length, 3]),
      });
      const feats = v.image_features!.data as Float32Array;
      let k = 0;
      for (let i = 0; i < prompt.ids.length; i++) {
        const id = prompt.ids[i];
        if (id !== this.config.imageTokenId && id !== this.config.videoTokenId) continue;
        if ((k + 1) * H > feats.length)
          throw new Error(`the prompt has more visual tokens than its images give features (${feats.length / H})`);
        embeds.set(feats.subarray(k * H, (k + 1) * H), i * H);
        k++;
      }
      if (k * H !== feats.length)
        throw new Error(`the prompt has ${k} visual tokens but its images give ${feats.length / H} features`);
    }
    return new this.ort.Tensor('float32', embeds, [1, ids.length, H]);
  }

  private emptyPast(batch: number): Record<string, OrtTensor> {
    const feeds: Record<string, OrtTensor> = {};
    const { numKvHeads: KVH, headDim: D } = this.config;
    for (let i = 0; i < this.config.numLayers; i++) {
      feeds[`past_key_values.${i}.key`] = new this.ort.Tensor('float32', new Float32Array(0), [batch, KVH, 0, D]);
      feeds[`past_key_values.${i}.value`] = new this.ort.Tensor('float32', new Float32Array(0), [batch, KVH, 0, D]);
    }
    return feeds;
  }

  /**
   * Logits [L, V] of every position of prompt + continuation in one pass (no cache): the parity
   * check against the engine's forward(returnLogits).
   */
  async logits(prompt: Prompt, continuation: Int32Array = new Int32Array(0)): Promise<Float32Array> {
    const { pos, next } = ropeIndex(prompt.ids, prompt.images, this.config);
    const Lp = prompt.ids.length,
      L = Lp + continuation.length;
    const all = new BigInt64Array(3 * L);
    for (let a = 0; a < 3; a++) {
      all.set(pos.subarray(a * Lp, (a + 1) * Lp), a * L);
      for (let t = 0; t < continuation.length; t++) all[a * L + Lp + t] = BigInt(next + t);
    }
    const out = await this.decoder.run({
      inputs_embeds: await this.promptEmbeds(prompt, continuation),
      attention_mask: this.i64(new BigInt64Array(L).fill(1n), [1, L]),
      position_ids: this.i64(all, [3, 1, L]),
      num_logits_to_keep: this.i64([0], []),
      ...this.emptyPast(1),
    });
    return out.logits!.data as Float32Array;
  }

  /**
   * Sample n continuations of a prompt: prefill once, copy the cache to n rows, decode them together.
   * `stop` ends a row (the stop token is kept as its last token).
   */
  async generate(
    prompt: Prompt,
    o: TokenSampling & {
      n: number;
      maxTokens: number;
      stop: Set<number>;
      signal?: AbortSignal;
      onToken?: (row: number, id: number, logprob: number) => void;
    },
  ): Promise<{
    tokenIds: number[][];
    logprobs: number[][];
    finishReason: ('stop' | 'length')[];
    prefillMs: number;
    decodeMs: number;
  }> {
    const t0 = performance.now();
    const { numLayers, numKvHeads: KVH, headDim: D, vocabSize: V } = this.config;
    const { pos, next } = ropeIndex(prompt.ids, prompt.images, this.config);
    const Lp = prompt.ids.length;
    const n = o.n;
    const pre = await this.decoder.run({
      inputs_embeds: await this.promptEmbeds(prompt),
      attention_mask: this.i64(new BigInt64Array(Lp).fill(1n), [1, Lp]),
      position_ids: this.i64(pos, [3, 1, Lp]),
      num_logits_to_keep: this.i64([1], []),
      ...this.emptyPast(1),
    });
    // the prompt's cache, copied to n rows
    let past: Record<string, OrtTensor> = {};
    for (let i = 0; i < numLayers; i++) {
      for (const kv of ['key', 'value'] as const) {
        const src = pre[`present.${i}.${kv}`]!.data as Float32Array;
        const dst = new Float32Array(n * src.length);
        for (let r = 0; r < n; r++) dst.set(src, r * src.length);
        past[`past_key_values.${i}.${kv}`] = new this.ort.Tensor('float32', dst, [n, KVH, Lp, D]);
      }
    }
    const tokenIds: number[][] = Array.from({ length: n }, () => []);
    const logprobs: number[][] = Array.from({ length: n }, () => []);
    const done: boolean[] = new Array<boolean>(n).fill(false);
    const finishReason: ('stop' | 'length')[] = new Array<'stop' | 'length'>(n).fill('length');
    let logits = pre.logits!.data as Float32Array; // [1, 1, V]: the same for every row at step 0
    const t1 = performance.now();
    let rowStride = 0;
    for (let t = 0; t < o.maxTokens; t++) {
      if (o.signal?.aborted) throw o.signal.reason ?? new Error('aborted');
      const step = new Array<number>(n);
      for (let r = 0; r < n; r++) {
        if (done[r]) {
          step[r] = tokenIds[r]![tokenIds[r]!.length - 1]!;
          continue;
        }
        const row = logits.subarray(r * rowStride, r * rowStride + V);
        const s = sampleToken(row, o, r, t);
        tokenIds[r]!.push(s.id);
        logprobs[r]!.push(s.logprob);
        step[r] = s.id;
        o.onToken?.(r, s.id, s.logprob);
        if (o.stop.has(s.id)) {
          done[r] = true;
          finishReason[r] = 'stop';
        }
      }
      if (done.every(Boolean) || t + 1 === o.maxTokens) break;
      const T = Lp + t + 1;
      const emb = await this.embed.run({ input_ids: this.i64(step, [n, 1]) });
      const out = await this.decoder.run({
        inputs_embeds: new this.ort.Tensor('float32', emb.inputs_embeds!.data as Float32Array, [n, 1, this.embedWidth]),
        attention_mask: this.i64(new BigInt64Array(n * T).fill(1n), [n, T]),
        position_ids: this.i64(new BigInt64Array(3 * n).fill(BigInt(next + t)), [3, n, 1]),
        num_logits_to_keep: this.i64([1], []),
        ...past,
      });
      past = {};
      for (let i = 0; i < numLayers; i++) {
        past[`past_key_values.${i}.key`] = out[`present.${i}.key`]!;
        past[`past_key_values.${i}.value`] = out[`present.${i}.value`]!;
      }
      logits = out.logits!.data as Float32Array;
      rowStride = V;
    }
    return { tokenIds, logprobs, finishReason, prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.vision?.release(), this.embed.release(), this.decoder.release()]);
  }
}

// ---- the policy ------------------------------------------------------------------------------------

export interface OnnxPolicyOptions extends OnnxModelOptions {
  /** Policy name (default "onnx:<dir>"). */
  name?: string;
  /** System message of every prompt (default: the chat template's own). */
  systemPrompt?: string;
}

let requestCounter = 0;

export class OnnxPolicy implements Policy {
  readonly name: string;
  private readonly cache = new Map<string, ImageInput>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly model: OnnxModel,
    readonly tokenizer: VlmTokenizer,
    readonly processor: Qwen2VLImageProcessor,
    options: { name?: string; systemPrompt?: string } = {},
  ) {
    this.name = options.name ?? `onnx:${model.dir}`;
    this.systemPrompt = options.systemPrompt;
  }
  readonly systemPrompt: string | undefined;

  /** An exported folder (vqalab export onnx): sessions, its tokenizer and image processor. */
  static async load(dir: string, options: OnnxPolicyOptions = {}): Promise<OnnxPolicy> {
    const model = await OnnxModel.load(dir, options);
    try {
      return new OnnxPolicy(
        model,
        VlmTokenizer.load(dir),
        new Qwen2VLImageProcessor(processorOptionsFrom(dir)),
        options,
      );
    } catch (err) {
      await model.dispose();
      throw err;
    }
  }

  async image(src: ImageSource): Promise<ImageInput> {
    const key = typeof src === 'string' ? path.resolve(src) : undefined;
    const hit = key ? this.cache.get(key) : undefined;
    if (hit) return hit;
    const p = await this.processor.process(src);
    const img: ImageInput = { pixels: p.pixels, gridThw: p.gridThw };
    if (key) {
      if (this.cache.size >= 256) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, img);
    }
    return img;
  }

  /** The prompt LocalPolicy builds for a sample (same template, same image processing). */
  async promptFor(sample: VqaSample): Promise<Prompt> {
    const files = sample.imagePaths?.length ? sample.imagePaths : [sample.imagePath];
    const images: ImageInput[] = [];
    for (const f of files) images.push(await this.image(f));
    const messages = VlmTokenizer.vqaMessages(sample.question, files.length, this.systemPrompt);
    return this.tokenizer.buildPrompt(messages, images, { mergeSize: this.model.config.vision.spatialMergeSize });
  }

  async generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]> {
    const n = expectInteger('n', options.n, 1, 4096);
    const maxTokens = expectInteger('maxTokens', options.maxTokens, 1);
    const temperature = expectNumber('temperature', options.temperature, 0);
    const topP = options.topP === undefined ? 1 : expectNumber('topP', options.topP, 0, 1);
    const topK = options.topK === undefined ? 0 : expectInteger('topK', options.topK, 0);
    const seed =
      options.seed === undefined
        ? randomInt(0, 2 ** 47)
        : expectInteger('seed', options.seed, 0, Number.MAX_SAFE_INTEGER);
    const requestId = `onnx-${++requestCounter}`;
    const t0 = performance.now();
    // stops: the tokenizer's, the given ids, and one-token stop strings (as LocalPolicy)
    const stop = new Set<number>([...this.tokenizer.stopTokenIds, ...(options.stopTokenIds ?? [])]);
    const strings: string[] = [];
    for (const s of options.stop ?? []) {
      const enc = this.tokenizer.encode(s);
      if (enc.length === 1 && this.tokenizer.decode(enc, { skipSpecialTokens: false }) === s) stop.add(enc[0]!);
      strings.push(s);
    }
    let gen: Awaited<ReturnType<OnnxModel['generate']>>;
    let promptTokens = 0;
    try {
      const prompt = await this.promptFor(sample);
      promptTokens = prompt.ids.length;
      // one generation at a time: onnxruntime already uses every core for one
      const run = this.queue.then(() =>
        this.model.generate(prompt, {
          n,
          maxTokens,
          temperature,
          topP,
          topK,
          seed,
          stop,
          ...(options.signal ? { signal: options.signal } : {}),
        }),
      );
      this.queue = run.catch(() => undefined);
      gen = await run;
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const msg = `sample ${sample.id}: ${err instanceof Error ? err.message : String(err)}`;
      return Array.from({ length: n }, () => ({
        text: '',
        finishReason: 'error' as const,
        error: msg,
        requestId,
        latencyMs: performance.now() - t0,
      }));
    }
    const latencyMs = performance.now() - t0;
    return gen.tokenIds.map((idsAll, r) => {
      let ids = idsAll,
        lps = gen.logprobs[r]!;
      let finish = gen.finishReason[r]!;
      const stopAt = ids.findIndex((t) => stop.has(t));
      const bodyLen = stopAt >= 0 ? stopAt : ids.length;
      let text = this.tokenizer.decode(ids.slice(0, bodyLen));
      if (strings.length > 0 && firstIndexOf(text, strings) >= 0) {
        for (let k = 1; k <= bodyLen; k++) {
          const t = this.tokenizer.decode(ids.slice(0, k));
          const at = firstIndexOf(t, strings);
          if (at >= 0) {
            text = t.slice(0, at);
            ids = ids.slice(0, k);
            lps = lps.slice(0, k);
            finish = 'stop';
            break;
          }
        }
      }
      return {
        text: text.trim(),
        tokenIds: ids,
        logprobs: lps,
        finishReason: finish,
        latencyMs,
        requestId,
        attempts: 1,
        usage: { promptTokens, completionTokens: ids.length },
      };
    });
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}
