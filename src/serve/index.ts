/** `vqalab serve`: an OpenAI-compatible HTTP server over the native engine (see docs/rollout.md). */
export { serve, type ServeOptions, type ServeHandle, type ServeStats } from './server.js';
export { ApiError, type ApiErrorType } from './errors.js';
export { FairQueue, QueueFullError, type QueueStats } from './queue.js';
export { parseChatRequest, type ChatRequest, type ImageRef } from './protocol.js';
export { decodeDataUrl, loadImagePart, type MediaLimits } from './media.js';
export {
  WeightSwitch,
  pushWeights,
  encodeWeights,
  decodeWeights,
  applyWeights,
  WEIGHT_VERSION_HEADER,
  type WeightKind,
  type PushTarget,
  type PushResult,
} from './weights.js';
