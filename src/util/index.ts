/** Helpers every layer may use (docs/architecture.md, layer 0). */
export * as validate from './validate.js';
export * as safetensors from './safetensors.js';
export { UsageError } from './errors.js';
export { Rng, mulberry32, permutation, type RngState } from './rng.js';
export { retryAfterMs, backoffDelayMs, isRetryableStatus, sleep, Semaphore } from './retry.js';
export type {
  ChatClient,
  ChatChoiceTokens,
  ChatCompletionRequest,
  ChatContentPart,
  ChatMessage,
  ChatRequestOptions,
} from './chat-client.js';
export {
  interruptSignal,
  interruptible,
  onInterrupt,
  isInterrupted,
  throwIfInterrupted,
  InterruptedError,
} from './interrupt.js';
export { withAtomicOutput, writeFileAtomic } from './fs.js';
export { vqalabVersion } from './package.js';
