/**
 * Everything `vqalab serve` does to a request before it queues, as one function that runs on the
 * event loop (small requests) or in a worker thread (src/serve/offload.ts), with every budget
 * checked before the work it bounds:
 *
 *   body bytes (src/serve/body.ts, while reading) → JSON → fields (protocol.ts: n, stop strings
 *   by count and length, ...) → the model name → stop_token_ids inside the vocabulary → prompt
 *   characters (before tokenising) → each image's bytes and pixels from its header (before any
 *   decode; media.ts) → the prompt ids, from the chat template → the prompt length against the context.
 *
 * Errors are {@link ApiError}s (400 naming the field, 404 for an unknown model, 413 ...).
 */
import type { ImageInput } from '../engine/types.js';
import type { ChatMessage } from '../text/tokenizer.js';
import { ApiError, badRequest } from './errors.js';
import { loadImagePart, type CheckedImage, type MediaLimits } from './media.js';
import { parseChatRequest, type ChatRequest, type ProtocolLimits } from './protocol.js';

export interface PrepareLimits extends ProtocolLimits {
  media: MediaLimits;
  /** Most characters of message text in one request, counted before tokenising. */
  maxPromptChars: number;
  modelName: string;
  vocabSize: number;
  maxSequenceLength: number;
  defaultMaxTokens: number;
}

/** The tokenizer and image planner (the policy's on the event loop, a copy in a worker). */
export interface PromptBuilder {
  plan(height: number, width: number): [number, number, number];
  prompt(messages: readonly ChatMessage[], planned: readonly ImageInput[]): Int32Array;
}

export interface Prepared {
  chat: ChatRequest;
  images: CheckedImage[];
  ids: Int32Array;
  grids: [number, number, number][];
  maxTokens: number;
}

/** Characters of text in the messages (what the tokenizer would read, template aside). */
export function promptChars(messages: readonly ChatMessage[]): number {
  let n = 0;
  for (const m of messages) {
    if (typeof m.content === 'string') n += m.content.length;
    else for (const p of m.content) if (p.type === 'text') n += p.text.length;
  }
  return n;
}

/** The checks of the module comment, on the raw body; the images' URLs are dropped from the result (their bytes are kept). */
export async function prepareRequest(
  raw: Uint8Array,
  limits: PrepareLimits,
  builder: PromptBuilder,
): Promise<Prepared> {
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('utf8'));
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
  }
  const chat = parseChatRequest(body, limits);
  if (chat.model !== limits.modelName) {
    throw new ApiError(
      404,
      `The model \`${chat.model}\` does not exist; this server serves "${limits.modelName}" (GET /v1/models)`,
      'not_found_error',
      'model',
      'model_not_found',
    );
  }
  const badStop = chat.stopTokenIds.findIndex((t) => t >= limits.vocabSize);
  if (badStop >= 0) {
    throw badRequest(
      `stop_token_ids[${badStop}] is ${chat.stopTokenIds[badStop]}, outside this model's vocabulary (ids 0 to ${limits.vocabSize - 1})`,
      'stop_token_ids',
      'invalid_value',
    );
  }
  const chars = promptChars(chat.messages);
  if (chars > limits.maxPromptChars) {
    throw badRequest(
      `the messages hold ${chars.toLocaleString('en-US')} characters of text, more than this server's limit of ` +
        `${limits.maxPromptChars.toLocaleString('en-US')} (--max-prompt-chars); no prompt that long fits the context of ${limits.maxSequenceLength} tokens`,
      'messages',
      'context_length_exceeded',
    );
  }
  const images: CheckedImage[] = [];
  const planned: ImageInput[] = [];
  for (const ref of chat.images) {
    const img = await loadImagePart(ref.url, ref.param, limits.media);
    try {
      planned.push({ pixels: new Float32Array(0), gridThw: builder.plan(img.height, img.width) });
    } catch (err) {
      throw badRequest(`${ref.param}: ${(err as Error).message}`, ref.param, 'invalid_image');
    }
    images.push(img);
    ref.url = ''; // the bytes are kept; the (maybe large) data URL is not needed again
  }
  let ids: Int32Array;
  try {
    ids = builder.prompt(chat.messages, planned);
  } catch (err) {
    throw badRequest(`cannot build the prompt: ${(err as Error).message}`, 'messages', 'invalid_messages');
  }
  const promptTokens = ids.length;
  const limit = limits.maxSequenceLength;
  const room = limit - promptTokens;
  const maxTokens = chat.maxTokens ?? Math.max(1, Math.min(limits.defaultMaxTokens, room));
  const param = chat.maxTokens !== undefined && room > 0 ? 'max_tokens' : 'messages';
  if (promptTokens >= limit) {
    throw badRequest(
      `this model's maximum context length is ${limit} tokens, but the prompt has ${promptTokens} tokens (images included); shorten it`,
      param,
      'context_length_exceeded',
    );
  }
  if (promptTokens + maxTokens > limit) {
    throw badRequest(
      `this model's maximum context length is ${limit} tokens; the prompt has ${promptTokens} and max_tokens asks for ${maxTokens} more ` +
        `(${promptTokens + maxTokens}); lower max_tokens to ${limit - promptTokens} or less`,
      param,
      'context_length_exceeded',
    );
  }
  return { chat, images, ids, grids: planned.map((p) => p.gridThw), maxTokens };
}

/** An ApiError as plain data (to cross a worker boundary) and back. */
export function errorToData(err: unknown): Record<string, unknown> {
  if (err instanceof ApiError)
    return {
      api: true,
      status: err.status,
      message: err.message,
      type: err.type,
      param: err.param,
      code: err.code,
      headers: err.headers,
    };
  return {
    api: false,
    message: err instanceof Error ? err.message : String(err),
    stack: err instanceof Error ? err.stack : undefined,
  };
}

export function errorFromData(d: Record<string, unknown>): Error {
  if (d.api)
    return new ApiError(
      d.status as number,
      d.message as string,
      d.type as ApiError['type'],
      d.param as string | null,
      d.code as string | null,
      d.headers as Record<string, string>,
    );
  const e = new Error(d.message as string);
  if (typeof d.stack === 'string') e.stack = d.stack;
  return e;
}
