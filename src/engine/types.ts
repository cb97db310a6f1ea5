/**
 * The engine contract between the TypeScript runtime and the native engine (native/, CPU and CUDA).
 * TypeScript never holds big tensors: it passes token ids, pixel patches and per-token scalars, and
 * gets back token ids, log-probs and statistics.
 *
 * Loss functions live in TypeScript (src/grpo/loss.ts): the engine computes per-token log-probs of
 * given completions (`forward`), and `backward` takes dL/d(logprob) for every completion token and
 * accumulates parameter gradients for d(Σ w_t · logp_t). Every GRPO variant (PPO clip, dual clip,
 * KL k1/k2/k3, aggregations) and SFT cross-entropy (w_t = −1/N) reduce to that, so the native side
 * stays one well-tested backward pass.
 *
 * Implemented by the native CPU engine (native/, src/engine/model.ts: `loadModel`); the CUDA backend
 * (issue 10) implements the same contract. This file is kept true to the implementation.
 */
import type { EngineConfig } from './config.js';

export type { EngineConfig };

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

export interface LoraConfig {
  rank: number;
  alpha: number;
  /** Module names as in PEFT's target_modules, e.g. ["q_proj", "k_proj", "v_proj", "o_proj"]. */
  targetModules: string[];
  /**
   * Also adapt the vision tower's matching modules. The vision tower's linear modules are named
   * qkv, proj (attention) and fc1, fc2 (MLP); the language model's q_proj, k_proj, v_proj, o_proj,
   * gate_proj, up_proj, down_proj. A name that matches no module of the chosen towers is an error.
   */
  vision: boolean;
  /** Seed of the adapters' initialisation (A ~ PEFT's kaiming-uniform, B = 0); default 0. */
  seed?: number;
}

export interface LoadOptions {
  device?: Device;
  /** CPU worker threads (one pool per process: the last load sets it); default VQALAB_THREADS or all cores. */
  threads?: number;
  /** Longest prompt + completion accepted; longer requests fail before compute. Default: max_position_embeddings. */
  maxSequenceLength?: number;
  /** Train LoRA adapters on a frozen base instead of all weights. */
  lora?: LoraConfig;
  /** With `lora`: start from this PEFT adapter folder (adapter_model.safetensors) instead of a fresh init. */
  adapter?: string;
  /** Resume AdamW from optimizer.safetensors in the model folder (written by save(dir, {optimizer: true})). */
  loadOptimizer?: boolean;
  /** Options of the CUDA backend (device 'cuda'): validated always, used with a CUDA device (docs/cuda.md). */
  cuda?: CudaOptions;
}

/**
 * Options of the CUDA backend (docs/cuda.md, "Options"), one set per model. An absent field takes its
 * VQALAB_CUDA_* variable when set (the GPU scripts' fallback), else the default below.
 */
export interface CudaOptions {
  /** bf16 weights and activations with an fp32 residual stream and fp32 master weights, or fp32 throughout (parity checks). Default 'bf16'. */
  precision?: 'bf16' | 'fp32';
  /** Keep AdamW's fp32 master weights and moments in pinned host memory and stream them through the step. Default false. */
  offloadOptimizer?: boolean;
  /** Store AdamW's moments in bf16 (fp32 arithmetic): half their memory. Default false. */
  bf16Moments?: boolean;
  /** Activation checkpointing: keep each layer's input only and recompute the layer in backward. Default false. */
  checkpointActivations?: boolean;
  /** Requests of one forward call are packed into one sequence up to this many LM rows. Default: 4096 on a GPU with at least 40 GiB, else 2048. */
  packRows?: number;
  /** Replay each decode step of a batched sample as a CUDA graph. Default true. */
  graphs?: boolean;
  /** bf16 with LoRA: true sums base and adapter products in fp32 and rounds once (closer to fp32, ~10 % slower LoRA steps); false rounds after each, as PEFT does in bf16. Default false. */
  loraSingleRounding?: boolean;
  /** LoRA: sampling runs on merged weights W + s·B·A (made once per sampling call, freed after it) instead of adding the adapters in every GEMM. Default true. */
  loraMergedSampling?: boolean;
  /** bf16 attention: the fused (flash) kernels, or the cuBLASLt tile path (what fp32 always takes). Default 'fused'. */
  attention?: 'fused' | 'gemm';
  /** Debug: synchronise after every op, so an asynchronous fault names the op that caused it (slow). Default false. */
  syncEveryOp?: boolean;
  /** Record the time of the model's phases (CUDA events); the addon's `_cudaProfile()` reports and resets them. Default false. */
  profile?: boolean;
}

/** One image, already processed by src/vision (Qwen2-VL patches in transformers' order). */
export interface ImageInput {
  /** [nPatches, 1176] row-major, nPatches = t·h·w of gridThw. */
  pixels: Float32Array;
  gridThw: [number, number, number];
  /**
   * A video (src/vision/video.ts): its tokens are video_token_id (Qwen3-VL: one run per temporal
   * patch, each after its timestamp text); M-RoPE time positions follow the temporal patches.
   */
  video?: boolean;
  /**
   * Video: seconds one temporal patch spans (temporal_patch_size / the sampled fps); Qwen2.5-VL's time
   * positions step by tokens_per_second · int(secondPerGrid), as transformers 5. Default 1.
   */
  secondPerGrid?: number;
  /** Video, Qwen3-VL: each temporal patch's time in seconds; the prompt builder writes them as text (the engine ignores them). */
  timestamps?: number[];
}

/**
 * A prompt: token ids with each image's pad tokens already expanded (t·h·w / merge² image_token_id
 * tokens per image, one contiguous run each), plus the images in order.
 */
export interface Prompt {
  ids: Int32Array;
  images: ImageInput[];
}

export interface ForwardRequest {
  prompt: Prompt;
  /** The group's completions (token ids, no prompt); the prompt is computed once for all of them. */
  completions: Int32Array[];
  /**
   * Keep activations so that the next `backward` can run (training); default false. A forward
   * without it leaves the activations kept by an earlier forward alone (e.g. old log-probs between).
   */
  keepForBackward?: boolean;
  /** Also return the full-vocabulary logits of each prompt+completion sequence (parity tests). */
  returnLogits?: boolean;
}

export interface ForwardResult {
  /** Per completion, log p(token_t | prefix, tokens_<t) for each of its tokens. */
  logprobs: Float32Array[];
  /** Per completion, the entropy of the next-token distribution at each of its tokens. */
  entropy: Float32Array[];
  /** Per completion, [promptLen + completionLen, vocab] logits, only with returnLogits. */
  logits?: Float32Array[];
}

export interface SampleRequest {
  prompt: Prompt;
  n: number;
  /** 0 = greedy argmax. */
  temperature: number;
  topP?: number;
  topK?: number;
  maxTokens: number;
  stopTokenIds?: number[];
  /** Sampling is a pure function of (weights, prompt, options, seed). */
  seed: number;
  /**
   * Aborting drops this request at the next decode step (its rows leave the batch; other requests
   * go on); the call rejects with the signal's reason.
   */
  signal?: AbortSignal;
  /**
   * Streaming: called on the JS thread with each token as it is produced (all tokens of one decode
   * step arrive together, before the call settles). A callback that throws ends its request with
   * that error. Without it, tokens arrive only with the result.
   */
  onToken?: (event: TokenEvent) => void;
}

/** One sampled token, as it is produced. */
export interface TokenEvent {
  /** The request's position in sampleBatch's list (0 for sample). */
  request: number;
  /** Which of the request's n samples. */
  row: number;
  tokenId: number;
  /** Log-prob under the temperature-1, unfiltered policy (as SampleResult.logprobs). */
  logprob: number;
}

/** Counters of a model's sampling loop (continuous batching). */
export interface SampleStats {
  /** Native sampling runs started (each a batched decode loop). */
  runs: number;
  /** Requests submitted (sample counts 1, sampleBatch its length). */
  requests: number;
  /** Requests that joined a run already going on. */
  joined: number;
  completed: number;
  cancelled: number;
  failed: number;
  /** Most requests in one run at a time. */
  maxConcurrent: number;
  /** Tokens streamed to onToken callbacks. */
  tokens: number;
}

/** Per-call options of forward and backward. */
export interface CallOptions {
  /** Aborting stops the call at its next layer and rejects it with the signal's reason. An interrupted
   *  backward leaves partial gradients: call zeroGrad before the next one. */
  signal?: AbortSignal;
}

export interface SampleResult {
  /** The sampled tokens; a stop token that ended a completion is included (its last token). */
  tokenIds: Int32Array[];
  /** Log-prob of each sampled token under the (temperature-1, unfiltered) policy. */
  logprobs: Float32Array[];
  finishReason: ('stop' | 'length')[];
}

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Applied only to ≥2-D weights (not biases, norms). */
  weightDecay: number;
  /** Clip the global gradient norm to this value; 0 disables. */
  maxGradNorm: number;
}

export interface StepResult {
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** True when a NaN/Inf gradient made the engine skip the update (weights untouched). */
  skipped: boolean;
  reason?: string;
}

export interface DeviceMemory {
  peakMiB: number;
  usedMiB: number;
  /** Free on the device plus held idle by the engine's pool. */
  availableMiB: number;
  totalMiB: number;
}

export interface EngineModel {
  readonly device: Device;
  /** The model's config.json, normalised. */
  readonly config: EngineConfig;
  /** Tensor names of the loaded checkpoint: published (model.layers.*, visual.*) or transformers 5's internal ones. */
  readonly namingScheme: 'published' | 'internal';
  readonly maxSequenceLength: number;
  /** Parameter count: all, and those being trained (LoRA: the adapters only). */
  readonly numParameters: { total: number; trainable: number };
  forward(requests: ForwardRequest[], options?: CallOptions): Promise<ForwardResult[]>;
  /**
   * dL/dlogp per request, per completion, per token; consumes the activations of the last forward
   * (which needs keepForBackward). Gradients accumulate (sum) until zeroGrad.
   */
  backward(gradLogprobs: Float32Array[][], options?: CallOptions): Promise<void>;
  /**
   * Samples n completions of a prompt. Concurrent calls are decoded together (continuous
   * batching: a call made while sampling runs joins at the next decode step); the result does not
   * depend on that.
   */
  sample(request: SampleRequest): Promise<SampleResult>;
  /**
   * Several prompts (each with its own n, options, seed, stop ids, max tokens) in one batched decode
   * loop: each prompt's prefix is prefilled once, the rows of every prompt step together, finished
   * rows leave. Each result is bit-identical to `sample` of that request alone. Rejects when any
   * request fails (use concurrent `sample` calls to settle requests one by one); `options.signal`
   * cancels them all. Implemented by the native engine.
   */
  sampleBatch?(requests: SampleRequest[], options?: CallOptions): Promise<SampleResult[]>;
  /** Counters of the sampling loop (the native engine). */
  sampleStats?(): SampleStats;
  /**
   * GPU memory of the model's device, MiB: the engine pool's peak since the last reset (`resetPeak`
   * starts a new window after reading), what its allocations use now, what a new allocation can
   * still get (the device's free memory plus what the pool keeps for reuse) and the device's total.
   * Undefined on the CPU.
   */
  deviceMemory?(resetPeak?: boolean): DeviceMemory | undefined;
  /**
   * Keep only each layer's input in training forwards and recompute the rest in the backward (less
   * memory, one more forward of compute). Returns whether the device took it: false on the CPU.
   */
  setCheckpointActivations?(on: boolean): boolean;
  /**
   * Most tokens one training forward pack of the device holds (its activations live together; a
   * larger call is split into packs at request boundaries and keeps them all until the backward).
   * The trainer sizes its micro-batches to it. Undefined on the CPU (no limit).
   */
  readonly packRows?: number;
  zeroGrad(): void;
  step(options: AdamWOptions): Promise<StepResult>;
  /**
   * Hugging Face checkpoint folder: config.json (the loaded one, unchanged), model.safetensors (F32, in
   * the loaded naming scheme unless `naming` says otherwise), the tokenizer/processor files of the
   * source folder, and optimizer.safetensors (AdamW moments + step) with `optimizer`. With LoRA the
   * base weights are saved (unmerged); use saveAdapter for the adapters.
   */
  save(dir: string, options?: { optimizer?: boolean; naming?: 'published' | 'internal' }): Promise<void>;
  /** PEFT adapter folder (adapter_config.json + adapter_model.safetensors); LoRA models only. */
  saveAdapter(dir: string): Promise<void>;
  /** Disable LoRA for reference log-probs against the base (β with LoRA, no second copy). */
  setLoraEnabled(enabled: boolean): void;
  /** Number of optimizer steps taken (skipped steps not counted). */
  readonly stepCount: number;
  dispose(): void;
}
