/**
 * LocalPolicy: the {@link Policy} over the native engine, the checkpoint's tokenizer and chat
 * template, and the Qwen2-VL image processor — the same prompt the trainer builds (one user turn:
 * the image(s), then the question), sampled by `EngineModel.sample` (prefix computed once for the
 * n completions). `vqalab serve` answers its requests with the lower-level {@link LocalPolicy.complete}.
 *
 * Stops: the tokenizer's stop ids (generation_config.json's eos_token_id), any `stopTokenIds`
 * given, and stop strings. A stop string that is one token is also handed to the engine as a stop
 * id (generation ends there); every stop string is then looked for in the decoded text: the text
 * is cut before it and the token ids / log-probs after the token that completed it are dropped.
 */
import { randomInt } from 'node:crypto';
import path from 'node:path';
import type { VqaSample } from '../data/types.js';
import type { EngineModel, ImageInput, LoadOptions, Prompt, SampleRequest, TokenEvent } from '../engine/types.js';
import { resolveModelFolder } from '../engine/folder.js';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { CHAR_TO_BYTE } from '../text/byte-level.js';
import { loadModel } from '../engine/model.js';
import { VlmTokenizer, type ChatMessage } from '../text/tokenizer.js';
import { checkTokenizerFamily } from '../text/family.js';
import { describeValue, expectInteger, expectNumber, invalidParameterError } from '../util/validate.js';
import { processorOptionsFrom, videoProcessorOptionsFrom } from '../vision/processor-config.js';
import { Qwen2VLImageProcessor, type ImageSource } from '../vision/qwen2vl.js';
import { sampleVisuals, videoProcessorFor, visualKinds, type VideoProcessor } from '../vision/video.js';
import { ChoiceTextStream, firstIndexOf } from './local-stream.js';
import { abortReason } from './runner.js';
import type { Completion, Policy, SamplingOptions } from './types.js';

/**
 * Sampling for one prompt on the engine: the engine's own options (SampleRequest: n, temperature,
 * topP, topK, maxTokens, extra stop ids, cancellation) with what the policy adds above the engine.
 */
export interface LocalSampling
  extends Pick<SampleRequest, 'n' | 'temperature' | 'topP' | 'topK' | 'maxTokens' | 'stopTokenIds' | 'signal'> {
  /** Stop strings, looked for in the decoded text (a one-token string also stops the engine early). */
  stop?: string[];
  /** Random when absent. */
  seed?: number;
  /** Top alternatives per generated token (0: none). Needs a forward pass with full logits. */
  topLogprobs?: number;
  /**
   * Each token as the engine produces it (`choice`: which of the n). These are raw engine tokens:
   * stop strings are applied to the returned choices only; {@link LocalPolicy.textStream} turns the
   * tokens into text pieces that add up to each choice's final text.
   */
  onToken?: (e: { choice: number; tokenId: number; logprob: number }) => void;
}

/** One completion of {@link LocalPolicy.complete}. */
export interface LocalChoice {
  /** The decoded text, up to (not including) the stop token or string; not trimmed. */
  text: string;
  /** Generated ids; a stop token that ended it is the last one. */
  tokenIds: number[];
  /** Log-prob of each id under the temperature-1, unfiltered policy. */
  logprobs: number[];
  finishReason: 'stop' | 'length';
  topLogprobs?: { id: number; logprob: number }[][];
}

export interface LocalGeneration {
  choices: LocalChoice[];
  promptTokens: number;
  /** Milliseconds the engine took. */
  engineMs: number;
}

/** A prompt that cannot fit the model's context: the server answers 400 context_length_exceeded. */
export class ContextLengthError extends RangeError {
  constructor(
    message: string,
    readonly promptTokens: number,
    readonly maxTokens: number,
    readonly limit: number,
  ) {
    super(message);
    this.name = 'ContextLengthError';
  }
}

export interface LocalPolicyOptions {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  /** Default: the checkpoint's preprocessor_config.json, else Qwen2-VL's defaults. */
  processor?: Qwen2VLImageProcessor;
  /** Samples with `videoPaths`: default the model family's video processor with the image processor's patch settings. */
  videoProcessor?: VideoProcessor;
  /** Policy name (default "local:<tokenizer folder>"). */
  name?: string;
  /** System message of every prompt (default: the chat template's own). */
  systemPrompt?: string;
  /** Processed images kept by path (default 256; 0 disables). */
  imageCacheSize?: number;
}

export interface LoadLocalPolicyOptions extends Omit<LocalPolicyOptions, 'model' | 'tokenizer' | 'processor'> {
  threads?: number;
  maxSequenceLength?: number;
  /** Load options passed to the engine as they are (LoRA, device). */
  load?: LoadOptions;
}

/** The bytes of one token as the model produced it (byte-level BPE), falling back to its decoded text. */
export function tokenBytes(tokenizer: VlmTokenizer, id: number): Uint8Array {
  const piece = tokenizer.idToToken(id);
  if (piece === undefined) return new Uint8Array(0);
  const bytes: number[] = [];
  for (const ch of piece) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) return new Uint8Array(Buffer.from(piece, 'utf8')); // a special or added token, spelled as it is
    bytes.push(b);
  }
  return Uint8Array.from(bytes);
}

let requestCounter = 0;

export class LocalPolicy implements Policy {
  readonly name: string;
  readonly model: EngineModel;
  readonly tokenizer: VlmTokenizer;
  readonly processor: Qwen2VLImageProcessor;
  readonly videoProcessor: VideoProcessor;
  readonly systemPrompt: string | undefined;
  private readonly mergeSize: number;
  private readonly cache = new Map<string, ImageInput>();
  private readonly cacheSize: number;
  private readonly stopSet: Set<number>;

  constructor(options: LocalPolicyOptions) {
    if (options === null || typeof options !== 'object')
      throw invalidParameterError('options', 'an object {model, tokenizer}', options);
    if (!options.model || typeof options.model.sample !== 'function')
      throw invalidParameterError('options.model', 'an EngineModel', options.model);
    if (!(options.tokenizer instanceof VlmTokenizer))
      throw invalidParameterError('options.tokenizer', 'a VlmTokenizer', options.tokenizer);
    this.model = options.model;
    this.tokenizer = options.tokenizer;
    this.processor = options.processor ?? new Qwen2VLImageProcessor(processorOptionsFrom(options.tokenizer.source));
    this.videoProcessor =
      options.videoProcessor ??
      videoProcessorFor(
        this.model.config?.modelType ?? 'qwen2_vl',
        processorOptionsFrom(options.tokenizer.source),
        videoProcessorOptionsFrom(options.tokenizer.source),
      );
    this.name = options.name ?? `local:${options.tokenizer.source}`;
    this.systemPrompt = options.systemPrompt;
    this.mergeSize = this.model.config?.vision?.spatialMergeSize ?? 2;
    this.cacheSize =
      options.imageCacheSize === undefined ? 256 : expectInteger('imageCacheSize', options.imageCacheSize, 0);
    if (this.model.config) checkTokenizerFamily(this.tokenizer, this.model.config.modelType);
    if (this.model.config && this.tokenizer.vocabSize > this.model.config.vocabSize) {
      throw new Error(
        `${this.tokenizer.source}: the tokenizer has ${this.tokenizer.vocabSize} ids but the model's vocab_size is ${this.model.config.vocabSize}`,
      );
    }
    this.stopSet = new Set(this.tokenizer.stopTokenIds);
  }

  /** Load a folder (see {@link resolveModelFolder}; default: the embedded tiny model) on the CPU engine. */
  static async load(dir: string = DEFAULT_MODEL_DIR, options: LoadLocalPolicyOptions = {}): Promise<LocalPolicy> {
    const r = resolveModelFolder(dir);
    const load: LoadOptions = { ...options.load };
    if (options.threads !== undefined) load.threads = options.threads;
    if (options.maxSequenceLength !== undefined) load.maxSequenceLength = options.maxSequenceLength;
    if (r.lora) {
      load.lora = r.lora;
      load.adapter = r.adapterDir;
    }
    const model = await loadModel(r.modelDir, load);
    try {
      const tokenizer = VlmTokenizer.load(r.tokenizerDir);
      return new LocalPolicy({
        model,
        tokenizer,
        processor: new Qwen2VLImageProcessor(processorOptionsFrom(r.tokenizerDir)),
        name: options.name ?? `local:${dir === DEFAULT_MODEL_DIR ? 'default' : dir}`,
        systemPrompt: options.systemPrompt,
        imageCacheSize: options.imageCacheSize,
      });
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /** Largest prompt + completion the engine accepts. */
  get maxSequenceLength(): number {
    return this.model.maxSequenceLength;
  }

  /** Process one image (a path, encoded bytes or decoded RGB); paths are cached. */
  async image(src: ImageSource): Promise<ImageInput> {
    const key = typeof src === 'string' ? path.resolve(src) : undefined;
    const hit = key ? this.cache.get(key) : undefined;
    if (hit) return hit;
    const p = await this.processor.process(src);
    const img: ImageInput = { pixels: p.pixels, gridThw: p.gridThw };
    if (key && this.cacheSize > 0) {
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, img);
    }
    return img;
  }

  /** Process one video (a folder of frames; `fps`: its frame rate when the folder has no video.json); cached by folder. */
  async video(dir: string, fps?: number): Promise<ImageInput> {
    const key = `video:${path.resolve(dir)}:${fps ?? ''}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const v = await this.videoProcessor.processFolder(dir, fps);
    const img: ImageInput = {
      pixels: v.pixels,
      gridThw: v.gridThw,
      video: true,
      secondPerGrid: v.secondPerGrid,
      ...(v.timestamps ? { timestamps: v.timestamps } : {}),
    };
    if (this.cacheSize > 0) {
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, img);
    }
    return img;
  }

  /** The engine prompt of a conversation whose image parts are `images`, in order. */
  prompt(messages: readonly ChatMessage[], images: readonly ImageInput[]): Prompt {
    return this.tokenizer.buildPrompt(messages, images, { mergeSize: this.mergeSize });
  }

  /** The VQA conversation of a sample (what the trainer asks). */
  messagesFor(sample: VqaSample): ChatMessage[] {
    return VlmTokenizer.vqaMessages(sample.question, visualKinds(sample), this.systemPrompt);
  }

  /**
   * Incremental text of one choice of a request made with these options: feed it the tokens of
   * `onToken`; its pieces add up to that choice's final `text` from {@link complete}.
   */
  textStream(o: Pick<LocalSampling, 'stop' | 'stopTokenIds'>): ChoiceTextStream {
    const { ids, strings } = this.stops(o);
    return new ChoiceTextStream(this.tokenizer, ids, strings);
  }

  /** Stop ids for a request: the tokenizer's, the given ones, and one-token stop strings. */
  private stops(o: Pick<LocalSampling, 'stop' | 'stopTokenIds'>): { ids: Set<number>; strings: string[] } {
    const ids = new Set(this.stopSet);
    for (const id of o.stopTokenIds ?? []) ids.add(id);
    const strings: string[] = [];
    for (const s of o.stop ?? []) {
      // A one-token stop string also stops the engine early; every stop string is looked for in
      // the text too, since the model may spell it with other tokens.
      // (Only a short string can be one token: a long one is not tokenised at all.)
      const enc = s.length <= 256 ? this.tokenizer.encode(s) : [];
      if (enc.length === 1 && this.tokenizer.decode(enc, { skipSpecialTokens: false }) === s) ids.add(enc[0]!);
      strings.push(s);
    }
    return { ids, strings };
  }

  /** Check that prompt + maxTokens fits the context; throws {@link ContextLengthError}. */
  checkLength(prompt: Prompt, maxTokens: number): void {
    const limit = this.maxSequenceLength;
    if (prompt.ids.length >= limit) {
      throw new ContextLengthError(
        `this model's maximum context length is ${limit} tokens, but the prompt has ${prompt.ids.length} tokens (images included); shorten it`,
        prompt.ids.length,
        maxTokens,
        limit,
      );
    }
    if (prompt.ids.length + maxTokens > limit) {
      throw new ContextLengthError(
        `this model's maximum context length is ${limit} tokens; the prompt has ${prompt.ids.length} and max_tokens asks for ${maxTokens} more ` +
          `(${prompt.ids.length + maxTokens}); lower max_tokens to ${limit - prompt.ids.length} or less`,
        prompt.ids.length,
        maxTokens,
        limit,
      );
    }
  }

  /**
   * Sample n completions of a prompt on the engine (the prompt is computed once). Concurrent calls
   * share the engine's decode loop (continuous batching); each result is the same as alone.
   */
  async complete(prompt: Prompt, o: LocalSampling): Promise<LocalGeneration> {
    const n = expectInteger('n', o.n, 1, 4096);
    const maxTokens = expectInteger('maxTokens', o.maxTokens, 1);
    const temperature = expectNumber('temperature', o.temperature, 0);
    const topLogprobs = o.topLogprobs === undefined ? 0 : expectInteger('topLogprobs', o.topLogprobs, 0, 20);
    const seed =
      o.seed === undefined ? randomInt(0, 2 ** 47) : expectInteger('seed', o.seed, 0, Number.MAX_SAFE_INTEGER);
    this.checkLength(prompt, maxTokens);
    const { ids: stopIds, strings } = this.stops(o);
    const t0 = performance.now();
    if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
      throw invalidParameterError('signal', 'AbortSignal', o.signal);
    if (o.onToken !== undefined && typeof o.onToken !== 'function')
      throw invalidParameterError('onToken', 'function', o.onToken);
    const onToken = o.onToken;
    const res = await this.model.sample({
      prompt,
      n,
      temperature,
      topP: o.topP,
      topK: o.topK || undefined,
      maxTokens,
      stopTokenIds: [...stopIds],
      seed,
      ...(o.signal ? { signal: o.signal } : {}),
      ...(onToken
        ? { onToken: (e: TokenEvent) => onToken({ choice: e.row, tokenId: e.tokenId, logprob: e.logprob }) }
        : {}),
    });
    const matcher = new ChoiceTextStream(this.tokenizer, new Set(), strings);
    const choices: LocalChoice[] = res.tokenIds.map((idsArr, i) => {
      let ids = Array.from(idsArr);
      let lps = Array.from(res.logprobs[i]!);
      let finish: 'stop' | 'length' = res.finishReason[i]!;
      const stopAt = ids.findIndex((t) => stopIds.has(t));
      if (stopAt >= 0) {
        ids = ids.slice(0, stopAt + 1);
        lps = lps.slice(0, stopAt + 1);
        finish = 'stop';
      }
      const bodyLen = stopAt >= 0 ? stopAt : ids.length;
      let text = this.tokenizer.decode(ids.slice(0, bodyLen));
      if (strings.length > 0 && firstIndexOf(text, strings) >= 0) {
        // The shortest prefix of tokens whose text already holds a stop string (one incremental pass).
        const scan = matcher.sibling();
        for (let k = 1; k <= bodyLen; k++) {
          scan.push(ids[k - 1]!);
          if (scan.done) {
            text = scan.sent;
            ids = ids.slice(0, k);
            lps = lps.slice(0, k);
            finish = 'stop';
            break;
          }
        }
      }
      return { text, tokenIds: ids, logprobs: lps, finishReason: finish };
    });
    if (topLogprobs > 0) {
      if (o.signal?.aborted) throw abortReason(o.signal);
      await this.addTopLogprobs(prompt, choices, topLogprobs);
    }
    return { choices, promptTokens: prompt.ids.length, engineMs: performance.now() - t0 };
  }

  /** Most floats of logits one top_logprobs request may ask the engine for (256 MiB). */
  static readonly TOP_LOGPROBS_MAX_FLOATS = 64 * 1024 * 1024;

  private async addTopLogprobs(prompt: Prompt, choices: LocalChoice[], k: number): Promise<void> {
    const vocab = this.model.config.vocabSize;
    const floats = choices.reduce((a, c) => a + (prompt.ids.length + c.tokenIds.length) * vocab, 0);
    if (floats > LocalPolicy.TOP_LOGPROBS_MAX_FLOATS) {
      throw new RangeError(
        `top_logprobs needs the full logits (${floats.toLocaleString('en-US')} floats for this request, vocabulary ${vocab}); ` +
          `the limit is ${LocalPolicy.TOP_LOGPROBS_MAX_FLOATS.toLocaleString('en-US')}: ask for fewer tokens or omit top_logprobs`,
      );
    }
    const withTokens = choices.filter((c) => c.tokenIds.length > 0);
    if (withTokens.length === 0) return;
    const [res] = await this.model.forward([
      { prompt, completions: withTokens.map((c) => Int32Array.from(c.tokenIds)), returnLogits: true },
    ]);
    withTokens.forEach((c, j) => {
      const logits = res!.logits![j]!;
      c.topLogprobs = c.tokenIds.map((_t, pos) => {
        const row = logits.subarray((prompt.ids.length + pos - 1) * vocab, (prompt.ids.length + pos) * vocab);
        let max = -Infinity;
        for (const v of row) if (v > max) max = v;
        let sum = 0;
        for (const v of row) sum += Math.exp(v - max);
        const lse = max + Math.log(sum);
        const top: { id: number; logprob: number }[] = [];
        for (let id = 0; id < vocab; id++) {
          const lp = row[id]! - lse;
          if (top.length < k || lp > top[top.length - 1]!.logprob) {
            top.push({ id, logprob: lp });
            top.sort((a, b) => b.logprob - a.logprob);
            if (top.length > k) top.pop();
          }
        }
        return top;
      });
    });
  }

  /** Policy.generate: per-sample failures (unreadable image, too long) come back as error completions. */
  async generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]> {
    if (sample === null || typeof sample !== 'object') throw invalidParameterError('sample', 'a VqaSample', sample);
    if (options === null || typeof options !== 'object')
      throw invalidParameterError('options', 'SamplingOptions', options);
    const n = expectInteger('options.n', options.n, 1, 4096);
    if (options.signal?.aborted) throw abortReason(options.signal);
    const requestId = `local-${++requestCounter}`;
    const t0 = performance.now();
    let gen: LocalGeneration;
    try {
      const visuals = sampleVisuals(sample);
      const images: ImageInput[] = [];
      for (const f of visuals.images) images.push(await this.image(f));
      for (const d of visuals.videos) images.push(await this.video(d, sample.videoFps));
      const prompt = this.prompt(this.messagesFor(sample), images);
      gen = await this.complete(prompt, {
        n,
        temperature: options.temperature,
        topP: options.topP,
        topK: options.topK,
        maxTokens: options.maxTokens,
        stopTokenIds: options.stopTokenIds,
        stop: options.stop,
        seed: options.seed,
        topLogprobs: options.topLogprobs,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      if (options.signal?.aborted) throw abortReason(options.signal); // cancelled: not a sample's failure
      if (err instanceof TypeError && /^Expected /.test(err.message)) throw err; // a caller's bug, not a sample's
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
    return gen.choices.map((c) => {
      const out: Completion = {
        text: c.text.trim(),
        tokenIds: c.tokenIds,
        logprobs: c.logprobs,
        finishReason: c.finishReason,
        latencyMs,
        requestId,
        attempts: 1,
        usage: { promptTokens: gen.promptTokens, completionTokens: c.tokenIds.length },
      };
      if (c.topLogprobs)
        out.topLogprobs = c.topLogprobs.map((row) =>
          row.map((e) => ({ token: this.tokenizer.decode([e.id], { skipSpecialTokens: false }), logprob: e.logprob })),
        );
      return out;
    });
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** For error messages: what was passed where a policy was expected. */
export function describePolicy(p: unknown): string {
  return p && typeof p === 'object' && typeof (p as Policy).name === 'string' ? (p as Policy).name : describeValue(p);
}
