/**
 * loadModel(): a Qwen2-VL checkpoint folder on the native CPU engine, behind the EngineModel contract.
 * Arguments are checked here; calls to one model run one at a time (a promise queue), each native
 * call off the JS thread; native failures keep the caller's stack.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expectBoolean, expectInteger, expectOneOf, expectString, invalidParameterError } from '../util/validate.js';
import { writeFileAtomic } from '../util/fs.js';
import { SafetensorsFile, serializeSafetensors } from '../util/safetensors.js';
import {
  checkAdamW,
  checkForwardRequests,
  checkGradients,
  checkLora,
  checkSampleRequest,
  type CheckedSampleRequest,
} from './check.js';
import { readConfig, toNativeConfig, type EngineConfig } from './config.js';
import { checkModelBudget } from './config-check.js';
import { checkCudaOptions, cudaOptionsWithEnv } from './cuda-options.js';
import { native, nativeError, type NativeModel, type NativePrompt } from './native.js';
import { SampleLoop, type LoopRequest } from './sampling.js';
import type {
  AdamWOptions,
  CallOptions,
  Device,
  DeviceMemory,
  EngineModel,
  ForwardRequest,
  ForwardResult,
  LoadOptions,
  LoraConfig,
  Prompt,
  SampleRequest,
  SampleResult,
  SampleStats,
  StepResult,
} from './types.js';

/** Files copied along when a checkpoint is saved into a new folder (tokenizer, processor, generation). */
const AUXILIARY_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'vocab.json',
  'merges.txt',
  'special_tokens_map.json',
  'added_tokens.json',
  'preprocessor_config.json',
  'video_preprocessor_config.json',
  'chat_template.json',
  'chat_template.jinja',
  'generation_config.json',
];

/** The safetensors files of a checkpoint folder: model.safetensors, or the shards listed by its index. */
export function weightFiles(dir: string): string[] {
  const single = path.join(dir, 'model.safetensors');
  const index = path.join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    let map: unknown;
    try {
      map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch (err) {
      throw new Error(`${index}: invalid JSON (${(err as Error).message})`);
    }
    if (map === null || typeof map !== 'object') throw new Error(`${index}: missing weight_map`);
    const files = [...new Set(Object.values(map as Record<string, unknown>))];
    for (const f of files) {
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\'))
        throw new Error(`${index}: bad shard name ${JSON.stringify(f)}`);
      if (!existsSync(path.join(dir, f)))
        throw new Error(`${index}: shard ${f} is listed but ${path.join(dir, f)} does not exist`);
    }
    return files.sort().map((f) => path.join(dir, f as string));
  }
  if (existsSync(single)) return [single];
  throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json`);
}

// The vision feature cache's key of a pixel array (docs/engine.md, "Vision feature cache"): one number
// per Float32Array, minted the first time the engine is given it. A processed image is a new array
// (whatever its path, bytes, size or processor settings), so the key names exactly those pixels; a
// caller that writes into an array it gave before breaks that, and the engine's check of a few pixel
// values per entry turns most such reuse into a miss.
const pixelKeys = new WeakMap<Float32Array, number>();
let nextPixelKey = 1;
function imageKey(pixels: Float32Array): number | undefined {
  if (pixels.length === 0) return undefined;
  let k = pixelKeys.get(pixels);
  if (k === undefined) {
    k = nextPixelKey++;
    pixelKeys.set(pixels, k);
  }
  return k;
}

function toNativePrompt(p: Prompt): NativePrompt {
  return {
    ids: p.ids,
    images: p.images.map((im) => ({
      pixels: im.pixels,
      gridThw: im.gridThw,
      key: imageKey(im.pixels),
      ...(im.video ? { video: true, secondPerGrid: im.secondPerGrid ?? 1 } : {}),
    })),
  };
}

/** A model on the native engine, CPU or CUDA (its `device`): the one EngineModel of the addon. */
class NativeEngineModel implements EngineModel {
  readonly device: Device;
  readonly numParameters: { total: number; trainable: number };
  readonly namingScheme: 'published' | 'internal';
  readonly packRows?: number;
  private queue: Promise<unknown> = Promise.resolve();
  private lastForward: number[][] | null = null;
  private calls = 0;
  /** Calls queued and not yet started (the sampling loop does not let new requests overtake them). */
  private queued = 0;
  private disposed = false;
  private readonly loop: SampleLoop;

  constructor(
    private readonly nm: NativeModel,
    readonly config: EngineConfig,
    readonly maxSequenceLength: number,
    private readonly sourceDir: string,
    private readonly configText: string,
    private readonly lora: Required<LoraConfig> | null,
    device: Device = 'cpu',
  ) {
    this.device = device;
    const info = nm.info();
    this.numParameters = { total: info.numParameters, trainable: info.numTrainable };
    this.namingScheme = info.internalNames ? 'internal' : 'published';
    // Fixed when the device is attached (at load): no limit on the CPU.
    if (device !== 'cpu' && info.packRows > 0) this.packRows = info.packRows;
    this.loop = new SampleLoop({
      nm,
      schedule: (fn) => {
        this.run(new Error(), fn).catch((err: unknown) => this.loop.abandon(err));
      },
      waitingCalls: () => this.queued,
    });
  }

  get stepCount(): number {
    return this.nm.info().step;
  }

  /**
   * Runs `fn` after every earlier call of this model has settled; rethrows with the caller's stack.
   * With a signal: an abort before the call starts rejects at once; an abort during it cancels the
   * native work at its next layer / decode step; either way the call rejects with the signal's reason.
   */
  private run<T>(stack: Error, fn: (callId: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.disposed) return Promise.reject(nativeError(new Error('this model was disposed'), stack));
    const reason = () => (signal!.reason instanceof Error ? signal!.reason : new Error('interrupted'));
    const callId = ++this.calls;
    this.queued++;
    let started = false;
    const guarded = async () => {
      if (!started) {
        started = true;
        this.queued--;
      }
      if (signal?.aborted) throw reason();
      const onAbort = () => this.nm.cancel(callId);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        const out = await fn(callId);
        if (signal?.aborted) throw reason();
        return out;
      } catch (err) {
        if (signal?.aborted) throw reason();
        throw err;
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    };
    const next = this.queue.then(guarded, guarded);
    this.queue = next.catch(() => undefined);
    return next.catch((err: unknown) => {
      if (signal?.aborted && err === signal.reason) throw err;
      throw nativeError(err, stack);
    });
  }

  private static signalOf(name: string, options: CallOptions | undefined): AbortSignal | undefined {
    if (options === undefined) return undefined;
    if (options === null || typeof options !== 'object') throw invalidParameterError(name, 'object', options);
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
      throw invalidParameterError(`${name}.signal`, 'AbortSignal', options.signal);
    }
    return options.signal;
  }

  forward(requests: ForwardRequest[], options?: CallOptions): Promise<ForwardResult[]> {
    const stack = new Error();
    let reqs: ForwardRequest[];
    let signal: AbortSignal | undefined;
    try {
      signal = NativeEngineModel.signalOf('options', options);
      reqs = checkForwardRequests(requests, this.config, this.maxSequenceLength);
      if (reqs.some((r) => r.keepForBackward) && !reqs.every((r) => r.keepForBackward)) {
        throw invalidParameterError(
          'requests[*].keepForBackward',
          'the same value for every request of one call',
          requests.map((r) => r.keepForBackward),
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const keep = reqs.some((r) => r.keepForBackward);
    return this.run(
      stack,
      async (callId) => {
        const out = await this.nm.forward(
          reqs.map((r) => ({
            prompt: toNativePrompt(r.prompt),
            completions: r.completions,
            returnLogits: r.returnLogits ?? false,
          })),
          keep,
          callId,
        );
        if (keep) this.lastForward = reqs.map((r) => r.completions.map((c) => c.length));
        return out.map((o) =>
          o.logits
            ? { logprobs: o.logprobs, entropy: o.entropy, logits: o.logits }
            : { logprobs: o.logprobs, entropy: o.entropy },
        );
      },
      signal,
    );
  }

  backward(gradLogprobs: Float32Array[][], options?: CallOptions): Promise<void> {
    const stack = new Error();
    let signal: AbortSignal | undefined;
    try {
      signal = NativeEngineModel.signalOf('options', options);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.run(
      stack,
      async (callId) => {
        if (!this.lastForward)
          throw new Error('backward needs a forward with keepForBackward: true first (each forward is consumed once)');
        const grads = checkGradients(gradLogprobs, this.lastForward);
        this.lastForward = null;
        await this.nm.backward(grads, callId);
      },
      signal,
    );
  }

  private static loopRequest(r: CheckedSampleRequest, index: number, stack: Error): LoopRequest {
    return {
      native: {
        prompt: toNativePrompt(r.prompt),
        n: r.n,
        temperature: r.temperature,
        topP: r.topP,
        topK: r.topK,
        maxTokens: r.maxTokens,
        stopTokenIds: Int32Array.from(r.stopTokenIds),
        seed: r.seed,
        stream: r.onToken !== undefined,
      },
      index,
      stack,
      ...(r.onToken ? { onToken: r.onToken } : {}),
      ...(r.signal ? { signal: r.signal } : {}),
    };
  }

  sample(request: SampleRequest): Promise<SampleResult> {
    const stack = new Error();
    let r: CheckedSampleRequest;
    try {
      r = checkSampleRequest(request, this.config, this.maxSequenceLength);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.disposed) return Promise.reject(nativeError(new Error('this model was disposed'), stack));
    return this.loop.submit([NativeEngineModel.loopRequest(r, 0, stack)])[0]!;
  }

  sampleBatch(requests: SampleRequest[], options?: CallOptions): Promise<SampleResult[]> {
    const stack = new Error();
    let rs: CheckedSampleRequest[];
    let signal: AbortSignal | undefined;
    try {
      signal = NativeEngineModel.signalOf('options', options);
      if (!Array.isArray(requests) || requests.length === 0)
        throw invalidParameterError('requests', 'non-empty array of sampling requests', requests);
      rs = requests.map((q, i) => checkSampleRequest(q, this.config, this.maxSequenceLength, `requests[${i}]`));
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.disposed) return Promise.reject(nativeError(new Error('this model was disposed'), stack));
    if (signal?.aborted)
      return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error('interrupted'));
    // One controller per batch: options.signal and each request's own signal both cancel.
    const loopReqs = rs.map((r, i) => {
      const lr = NativeEngineModel.loopRequest(r, i, stack);
      if (signal) lr.signal = r.signal ? AbortSignal.any([r.signal, signal]) : signal;
      return lr;
    });
    return Promise.all(this.loop.submit(loopReqs));
  }

  sampleStats(): SampleStats {
    return this.loop.stats();
  }

  deviceMemory(resetPeak = false): DeviceMemory | undefined {
    if (this.device === 'cpu') return undefined;
    const m = native()._cudaMemory(resetPeak);
    if (!m) return undefined;
    const mib = (b: number) => Math.round(b / (1024 * 1024));
    return {
      peakMiB: mib(m.peakBytes),
      usedMiB: mib(m.usedBytes),
      availableMiB: mib(m.freeBytes + m.poolIdleBytes),
      totalMiB: mib(m.totalBytes),
    };
  }

  zeroGrad(): void {
    if (this.disposed) throw new Error('this model was disposed');
    this.nm.zeroGrad();
  }

  step(options: AdamWOptions): Promise<StepResult> {
    const stack = new Error();
    let o: AdamWOptions;
    try {
      o = checkAdamW(options);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.run(stack, () => this.nm.step(o));
  }

  save(dir: string, options: { optimizer?: boolean; naming?: 'published' | 'internal' } = {}): Promise<void> {
    const stack = new Error();
    let optimizer: boolean, naming: 'published' | 'internal';
    try {
      expectString('dir', dir, { nonEmpty: true });
      optimizer = options.optimizer === undefined ? false : expectBoolean('options.optimizer', options.optimizer);
      naming =
        options.naming === undefined
          ? this.namingScheme
          : expectOneOf('options.naming', options.naming, ['published', 'internal'] as const);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.run(stack, async () => {
      mkdirSync(dir, { recursive: true });
      const internal = naming === 'internal';
      await this.nm.saveWeights(path.join(dir, 'model.safetensors'), internal);
      if (optimizer) {
        const file = path.join(dir, 'optimizer.safetensors');
        // Before the first optimizer update there are no moments: an empty state (step 0) that
        // loadModel({ loadOptimizer }) reads as a fresh optimizer — the same AdamW state.
        if (this.nm.info().step === 0)
          await writeFileAtomic(file, serializeSafetensors(new Map(), EMPTY_OPTIMIZER_METADATA));
        else await this.nm.saveOptimizer(file, internal);
      }
      await writeFileAtomic(path.join(dir, 'config.json'), this.configText);
      if (path.resolve(dir) !== path.resolve(this.sourceDir)) {
        for (const f of AUXILIARY_FILES) {
          const src = path.join(this.sourceDir, f);
          if (existsSync(src)) copyFileSync(src, path.join(dir, f));
        }
      }
    });
  }

  saveAdapter(dir: string): Promise<void> {
    const stack = new Error();
    try {
      expectString('dir', dir, { nonEmpty: true });
    } catch (err) {
      return Promise.reject(err);
    }
    const lora = this.lora;
    if (!lora)
      return Promise.reject(nativeError(new Error('saveAdapter needs a model loaded with options.lora'), stack));
    return this.run(stack, async () => {
      mkdirSync(dir, { recursive: true });
      // PEFT (0.21, on transformers 5) names adapters by the model's internal module paths
      // (base_model.model.model.language_model.layers.*), whatever the checkpoint's own names.
      await this.nm.saveLora(path.join(dir, 'adapter_model.safetensors'), true);
      const adapterConfig = {
        peft_type: 'LORA',
        task_type: 'CAUSAL_LM',
        base_model_name_or_path: path.resolve(this.sourceDir),
        r: lora.rank,
        lora_alpha: lora.alpha,
        lora_dropout: 0.0,
        // the language model's and the vision tower's module names are disjoint, so the list is exact
        target_modules: lora.targetModules,
        bias: 'none',
        fan_in_fan_out: false,
        inference_mode: true,
        init_lora_weights: true,
        use_rslora: false,
        use_dora: false,
        modules_to_save: null,
        vqalab: { vision: lora.vision, targetModules: lora.targetModules, seed: lora.seed },
      };
      await writeFileAtomic(path.join(dir, 'adapter_config.json'), JSON.stringify(adapterConfig, null, 2) + '\n');
    });
  }

  setLoraEnabled(enabled: boolean): void {
    expectBoolean('enabled', enabled);
    if (this.disposed) throw new Error('this model was disposed');
    if (!this.lora) throw new Error('setLoraEnabled needs a model loaded with options.lora');
    this.nm.setLoraEnabled(enabled);
  }

  setCheckpointActivations(on: boolean): boolean {
    expectBoolean('on', on);
    if (this.disposed) throw new Error('this model was disposed');
    return this.nm.setCheckpointActivations(on);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.nm.dispose();
  }

  /** Internal (tests, parity): the native handle. */
  get _native(): NativeModel {
    return this.nm;
  }

  /**
   * Internal (weight push, src/serve/weights.ts): runs `fn` on the native handle once every earlier
   * call of this model has settled, in the model's call order, so tensors are read or replaced
   * between calls, never during one.
   */
  _withNative<T>(fn: (nm: NativeModel) => T | Promise<T>): Promise<T> {
    return this.run(new Error(), async () => fn(this.nm));
  }
}

/** Metadata of the optimizer state saved before any update (no tensors). */
const EMPTY_OPTIMIZER_METADATA = { step: '0', optimizer: 'adamw', state: 'empty' };

/** An optimizer.safetensors written before any update: no tensors, step 0. */
async function isEmptyOptimizer(file: string): Promise<boolean> {
  const f = await SafetensorsFile.open(file);
  try {
    return f.metadata.state === 'empty' && f.metadata.step === '0' && f.names().length === 0;
  } finally {
    await f.close();
  }
}

/** Loads a Qwen2-VL checkpoint folder (config.json + model.safetensors[.index.json]) on the CPU engine. */
export async function loadModel(
  dir: string,
  options: LoadOptions = {},
): Promise<
  EngineModel & Required<Pick<EngineModel, 'sampleBatch' | 'sampleStats'>> & { readonly _native: NativeModel }
> {
  const stack = new Error();
  expectString('dir', dir, { nonEmpty: true });
  if (options === null || typeof options !== 'object') throw invalidParameterError('options', 'object', options);
  const device = options.device ?? 'cpu';
  if (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device)) {
    throw invalidParameterError('options.device', "'cpu', 'cuda' or 'cuda:N'", device);
  }
  // 'cuda' is cuda:0
  const nativeDevice = device === 'cuda' ? 'cuda:0' : device;
  const threads =
    options.threads === undefined ? undefined : expectInteger('options.threads', options.threads, 1, 1024);
  const lora = options.lora === undefined ? null : checkLora(options.lora);
  const adapter =
    options.adapter === undefined ? undefined : expectString('options.adapter', options.adapter, { nonEmpty: true });
  if (adapter !== undefined && !lora)
    throw invalidParameterError('options.lora', 'a LoRA config (options.adapter needs one)', options.lora);
  const loadOpt =
    options.loadOptimizer === undefined ? false : expectBoolean('options.loadOptimizer', options.loadOptimizer);
  // the CUDA options, with their VQALAB_CUDA_* fallbacks on a CUDA device (cuda-options.ts)
  const given = options.cuda === undefined ? {} : checkCudaOptions(options.cuda);
  const { precision = 'bf16', ...cuda } = nativeDevice === 'cpu' ? given : cudaOptionsWithEnv(given);

  const configFile = path.join(dir, 'config.json');
  const config = readConfig(configFile);
  const maxSeq =
    options.maxSequenceLength === undefined
      ? config.maxPositionEmbeddings
      : expectInteger('options.maxSequenceLength', options.maxSequenceLength, 1);
  const files = weightFiles(dir);
  checkModelBudget(config, configFile, files, maxSeq); // before the engine allocates anything
  const configText = readFileSync(configFile, 'utf8');
  let loraFile: string | undefined;
  if (adapter !== undefined) {
    loraFile = path.join(adapter, 'adapter_model.safetensors');
    if (!existsSync(loraFile)) throw new Error(`${adapter}: no adapter_model.safetensors`);
  }
  let optimizerFile: string | undefined;
  if (loadOpt) {
    optimizerFile = path.join(dir, 'optimizer.safetensors');
    if (!existsSync(optimizerFile)) throw new Error(`${dir}: no optimizer.safetensors (save with { optimizer: true })`);
    if (await isEmptyOptimizer(optimizerFile)) optimizerFile = undefined; // saved before any update: a fresh optimizer
  }
  let nm: NativeModel;
  try {
    nm = await native().loadModel({
      config: toNativeConfig(config),
      files,
      maxSequenceLength: maxSeq,
      device: nativeDevice,
      precision,
      ...(threads !== undefined ? { threads } : {}),
      ...(lora ? { lora } : {}),
      ...(loraFile ? { loraFile } : {}),
      ...(optimizerFile ? { optimizerFile } : {}),
      cuda,
    });
  } catch (err) {
    throw nativeError(err, stack);
  }
  return new NativeEngineModel(nm, config, maxSeq, dir, configText, lora, device as Device);
}
