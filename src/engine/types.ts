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
 * Status: a proposal written before the engine; the engine's implementation is the final word and
 * keeps this file true.
 */

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

export interface LoraConfig {
  rank: number;
  alpha: number;
  /** Module names as in PEFT's target_modules, e.g. ["q_proj", "k_proj", "v_proj", "o_proj"]. */
  targetModules: string[];
  /** Also adapt the vision tower's matching modules. */
  vision: boolean;
}

export interface LoadOptions {
  device?: Device;
  /** CPU worker threads; default: all cores. */
  threads?: number;
  /** Longest prompt + completion accepted; longer requests fail before compute. */
  maxSequenceLength?: number;
  /** Train LoRA adapters on a frozen base instead of all weights. */
  lora?: LoraConfig;
}

/** One image, already processed by src/vision (Qwen2-VL patches in transformers' order). */
export interface ImageInput {
  /** [nPatches, 1176] row-major, nPatches = t·h·w of gridThw. */
  pixels: Float32Array;
  gridThw: [number, number, number];
}

/** A prompt: token ids with each image's pad tokens already expanded, plus the images in order. */
export interface Prompt {
  ids: Int32Array;
  images: ImageInput[];
}

export interface ForwardRequest {
  prompt: Prompt;
  /** The group's completions (token ids, no prompt); the prompt is computed once for all of them. */
  completions: Int32Array[];
  /** Keep activations so that the next `backward` can run (training); default false. */
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
}

export interface SampleResult {
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

export interface EngineModel {
  readonly device: Device;
  /** Parameter count: all, and those being trained (LoRA: the adapters only). */
  readonly numParameters: { total: number; trainable: number };
  forward(requests: ForwardRequest[]): Promise<ForwardResult[]>;
  /** dL/dlogp per request, per completion, per token; consumes the activations of the last forward. */
  backward(gradLogprobs: Float32Array[][]): Promise<void>;
  sample(request: SampleRequest): Promise<SampleResult>;
  zeroGrad(): void;
  step(options: AdamWOptions): Promise<StepResult>;
  /** Hugging Face checkpoint folder (config.json + model.safetensors), plus optimizer state if asked. */
  save(dir: string, options?: { optimizer?: boolean }): Promise<void>;
  /** PEFT adapter folder (adapter_config.json + adapter_model.safetensors); LoRA models only. */
  saveAdapter(dir: string): Promise<void>;
  /** Disable LoRA for reference log-probs against the base (β with LoRA, no second copy). */
  setLoraEnabled(enabled: boolean): void;
  dispose(): void;
}
