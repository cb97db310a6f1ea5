/**
 * The native addon (native/build/Release/vqalab.node), loaded once, with hand-written types.
 * Everything heavy returns a promise and runs off the JS thread; `_`-prefixed entries are internal
 * (tests, benchmarks). The native side trusts its arguments: src/engine validates them first.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeConfig {
  text: {
    vocab: number;
    hidden: number;
    inter: number;
    layers: number;
    heads: number;
    kvHeads: number;
    headDim: number;
    eps: number;
    theta: number;
    section: [number, number, number];
    tied: boolean;
    qkvBias: boolean;
    qkNorm: boolean;
    mropeInterleaved: boolean;
  };
  vision: {
    depth: number;
    embedDim: number;
    numHeads: number;
    mlpHidden: number;
    outHidden: number;
    inChannels: number;
    patchSize: number;
    temporalPatchSize: number;
    merge: number;
    quickGelu: boolean;
    theta: number;
    act: 'quick_gelu' | 'gelu' | 'silu' | 'gelu_pytorch_tanh';
    rmsNorm: boolean;
    windowSize: number;
    fullatt: number[];
    numPos: number;
    deepstack: number[];
  };
  /** model_type: 'qwen2_vl' | 'qwen2_5_vl' | 'qwen3_vl'. */
  family: string;
  imageTokenId: number;
  videoTokenId?: number;
  tokensPerSecond?: number;
}

export interface NativePrompt {
  ids: Int32Array;
  images: {
    pixels: Float32Array;
    gridThw: [number, number, number];
    video?: boolean;
    secondPerGrid?: number;
    /** The vision feature cache's key of these pixels (imageKey, src/engine/model.ts); absent: not cached. */
    key?: number;
  }[];
}

export interface NativeLoadSpec {
  config: NativeConfig;
  files: string[];
  maxSequenceLength: number;
  threads?: number;
  lora?: { rank: number; alpha: number; targetModules: string[]; vision: boolean; seed: number };
  loraFile?: string;
  optimizerFile?: string;
  /** 'cpu' or 'cuda:N'; a build without the CUDA backend rejects 'cuda:N' with a clear error. */
  device?: string;
  /** The CUDA backend's precision: bf16 weights/activations with fp32 master (default) or fp32 throughout. */
  precision?: 'bf16' | 'fp32';
  /** CUDA backend options (validated in src/engine/cuda-options.ts; absent fields keep native's defaults). */
  cuda?: {
    offloadOptimizer?: boolean;
    bf16Moments?: boolean;
    checkpointActivations?: boolean;
    packRows?: number;
    graphs?: boolean;
    loraSingleRounding?: boolean;
    loraMergedSampling?: boolean;
    attention?: 'fused' | 'gemm';
    syncEveryOp?: boolean;
    profile?: boolean;
  };
}

/** One request of a sampling run; `id` names it in packets, sampleRunAdd and sampleRunCancel. */
export interface NativeRunRequest {
  id: number;
  prompt: NativePrompt;
  n: number;
  temperature: number;
  topP: number;
  topK: number;
  maxTokens: number;
  stopTokenIds: Int32Array;
  seed: number;
  /** Report this request's tokens as they are produced. */
  stream: boolean;
}

/** What a sampling run reports, one packet per decode step (or prefill) with something in it; `end` comes last. */
export interface NativeRunPacket {
  /** (id, row, token) triples, in row order. */
  tokens?: Int32Array;
  logprobs?: Float32Array;
  done?: { id: number; tokenIds: Int32Array[]; logprobs: Float32Array[]; stopped: boolean[] }[];
  failed?: { id: number; message: string; cancelled: boolean }[];
  end?: true;
  /** With `end`: the run failed (interrupted, out of memory); requests not yet settled fail with it. */
  error?: string;
}

export interface NativeModel {
  /** `callId` (> 0) names the call for cancel(). */
  forward(
    requests: { prompt: NativePrompt; completions: Int32Array[]; returnLogits: boolean }[],
    keep: boolean,
    callId?: number,
  ): Promise<{ logprobs: Float32Array[]; entropy: Float32Array[]; logits?: Float32Array[] }[]>;
  backward(grads: Float32Array[][], callId?: number): Promise<void>;
  sample(
    request: {
      prompt: NativePrompt;
      n: number;
      temperature: number;
      topP: number;
      topK: number;
      maxTokens: number;
      stopTokenIds: Int32Array;
      seed: number;
    },
    callId?: number,
  ): Promise<{ tokenIds: Int32Array[]; logprobs: Float32Array[]; stopped: boolean[] }>;
  /**
   * Starts a multi-prompt sampling run off the JS thread and returns its handle at once; packets reach
   * `onPacket` on the JS thread, in order. `callId` (> 0) names the run for cancel().
   */
  sampleRun(requests: NativeRunRequest[], onPacket: (p: NativeRunPacket) => void, callId?: number): unknown;
  /** Adds requests to a running run (taken at its next step); false when it has ended. */
  sampleRunAdd(handle: unknown, requests: NativeRunRequest[]): boolean;
  /** Drops request `id` at the run's next step (a `failed` packet with cancelled: true); unknown ids are ignored. */
  sampleRunCancel(handle: unknown, id: number): void;
  zeroGrad(): void;
  step(o: {
    lr: number;
    beta1: number;
    beta2: number;
    eps: number;
    weightDecay: number;
    maxGradNorm: number;
  }): Promise<{ gradNorm: number; skipped: boolean; reason?: string }>;
  saveWeights(file: string, internalNames: boolean): Promise<void>;
  saveOptimizer(file: string, internalNames: boolean): Promise<void>;
  loadOptimizer(file: string): Promise<void>;
  saveLora(file: string, internalNames: boolean): Promise<void>;
  setLoraEnabled(on: boolean): void;
  setCheckpointActivations(on: boolean): boolean;
  info(): {
    numParameters: number;
    numTrainable: number;
    internalNames: boolean;
    loraActive: boolean;
    loraEnabled: boolean;
    step: number;
    device: string;
    /** The device's training pack size in LM rows; 0 on the CPU. */
    packRows: number;
  };
  /** Asks call `callId` to stop at its next layer / decode step, whether it runs already or not yet
   *  (it rejects with "interrupted"); a finished call is not affected. */
  cancel(callId: number): void;
  dispose(): void;
  _names(): string[];
  _shape(name: string): number[];
  _get(name: string): Float32Array;
  _set(name: string, data: Float32Array): void;
  _grad(name: string): Float32Array | null;
  /** CPU: sampling runs on LoRA-merged weights W + s·B·A (the CUDA backend: its `loraMergedSampling` option). Default off. */
  _loraMergedSampling(on: boolean): void;
  /**
   * The vision feature cache (docs/engine.md): hits and misses counted since load, entries and bytes
   * held, and its bound; with `maxBytes`, the new bound first (0 turns it off and empties it).
   */
  _visionCache(maxBytes?: number): { hits: number; misses: number; entries: number; bytes: number; maxBytes: number };
  /** Data parallel (docs/multi-gpu.md): the gradients summed over the collective's ranks, in buckets of `bucketFloats`. */
  allReduceGrads(collective: NativeCollective, bucketFloats: number): Promise<void>;
  /** 16 hex digits of the trainable weights and the step count (ranks in step compare equal). */
  weightsHash(): Promise<string>;
  /** transformers' get_rope_index: [3, L] positions (axis-major) and where generation goes on (the largest + 1). */
  _ropeIndex(prompt: NativePrompt): { positions: Int32Array; next: number };
  /**
   * Tests only: attach a device that samples with `cpu` (another CPU model), after `delayMs` per
   * request, so that sampling runs take the device routing of native/src/sampler.cc on any machine.
   * With `batch` the device batches, as the CUDA backend: each group of requests a run admits goes to
   * it in one sample_many call (one delay per call; info().device counts the calls).
   */
  _attachTestDevice(cpu: NativeModel, delayMs?: number, batch?: boolean): void;
}

/** A collective between the ranks of a data-parallel run (native/src/collective.h). */
export interface NativeCollective {
  /** The sum over ranks (host arrays whatever the backend). */
  allReduce(data: Float32Array): Promise<Float32Array>;
  broadcast(data: Float32Array, root: number): Promise<Float32Array>;
  barrier(): Promise<void>;
  /** Fails the call in progress and every later one (another rank died). */
  abort(): void;
  destroy(): void;
  info(): { rank: number; size: number; backend: string };
}

export interface SafetensorsContent {
  tensors: Record<string, { dtype: string; shape: number[]; data: Float32Array }>;
  metadata: Record<string, string>;
}

export interface NativeAddon {
  loadModel(spec: NativeLoadSpec): Promise<NativeModel>;
  /** Rank 0: the 128-byte id the ranks share (cpu: a listener on `host`; nccl: ncclGetUniqueId on `device`). */
  collectiveId(backend: 'cpu', host: string): Uint8Array;
  collectiveId(backend: 'nccl', device: number): Uint8Array;
  /** Every rank, with rank 0's id: resolves once all ranks have joined (or rejects at the timeout). */
  createCollective(spec: {
    backend: 'cpu' | 'nccl';
    id: Uint8Array;
    rank: number;
    size: number;
    device?: number;
    timeoutMs: number;
  }): Promise<NativeCollective>;
  _op(
    name: string,
    inputs: Record<string, Float32Array | Int32Array>,
    dims: Record<string, number>,
  ): Record<string, Float32Array>;
  _sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
    naive?: boolean,
  ): Float32Array;
  _gemmKernel(set?: 'avx2-fma' | 'portable' | 'auto'): string;
  _threads(set?: number): number;
  _readSafetensors(file: string): SafetensorsContent;
  /** Whether this build has the CUDA backend and sees a device. */
  _cuda(): { built: boolean; available: boolean; reason?: string };
  /** The current device's memory pool peak (reset on request), pool use, free and total bytes; null without CUDA. */
  _cudaMemory(
    resetPeak?: boolean,
  ): { peakBytes: number; usedBytes: number; freeBytes: number; poolIdleBytes: number; totalBytes: number } | null;
  /** Phase times of the models loaded with `cuda.profile` since the last call, then reset; null without CUDA. */
  _cudaProfile(): string | null;
  _writeSafetensors(
    file: string,
    tensors: Record<string, { shape: number[]; data: Float32Array }>,
    metadata?: Record<string, string>,
  ): void;
}

let cached: NativeAddon | undefined;

/** The addon; throws one error listing where it looked when it is not built. */
export function native(): NativeAddon {
  if (cached) return cached;
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const candidates = [
    process.env.VQALAB_ADDON,
    path.join(root, 'native', 'build', 'Release', 'vqalab.node'),
    path.join(root, 'native', 'build', 'Debug', 'vqalab.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  const require = createRequire(import.meta.url);
  const failures: string[] = [];
  for (const c of candidates) {
    if (!existsSync(c)) {
      failures.push(`${c}: not found`);
      continue;
    }
    try {
      cached = require(c) as NativeAddon;
      return cached;
    } catch (err) {
      failures.push(`${c}: ${(err as Error).message}`);
    }
  }
  throw new Error(
    `the native engine is not built:\n  ${failures.join('\n  ')}\nPossible solutions:\n` +
      '  - run `npm install` (it builds native/ with node-gyp), or `node native/build.js`\n' +
      '  - set VQALAB_ADDON to the path of a built vqalab.node',
  );
}

/**
 * Keeps the caller's JS stack on a native failure (as sharp does): `stack` is an Error created
 * before the native call; the native message is copied onto it.
 */
export function nativeError(err: unknown, stack: Error): Error {
  const message = err instanceof Error ? err.message : String(err);
  stack.message = message;
  if (stack.stack) stack.stack = stack.stack.replace(/^Error(: .*)?/, `Error: ${message}`);
  return stack;
}
