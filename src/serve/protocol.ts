/**
 * The chat-completions request as `vqalab serve` accepts it: checked field by field, each error
 * naming the field (OpenAI's `param`), turned into the conversation for the chat template and
 * the list of image references in prompt order.
 *
 * Accepted: model, messages (system / developer / user / assistant / tool; string content or parts of
 * type text and image_url; assistant tool_calls), tools and tool_choice "auto" / "none" (Qwen's
 * tool format, src/serve/tools.ts), n, temperature, top_p, top_k, max_tokens /
 * max_completion_tokens, stop, seed, logprobs, top_logprobs, stream, stream_options.include_usage,
 * user; vLLM's stop_token_ids, return_token_ids and return_tokens_as_token_ids. Fields that would
 * change the answer but are not implemented (a forced tool_choice, functions, response_format,
 * logit_bias, penalties) are refused rather than silently ignored; harmless ones (metadata, store,
 * parallel_tool_calls, ...) are ignored.
 */
import type { ChatMessage, ContentPart } from '../text/tokenizer.js';
import { badRequest } from './errors.js';
import { parseToolChoice, parseTools, toolConversation, type ToolDef } from './tools.js';

export interface ImageRef {
  url: string;
  /** Where it was in the request, e.g. "messages[1].content[0].image_url". */
  param: string;
}

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  images: ImageRef[];
  n: number;
  temperature: number;
  topP: number;
  topK: number;
  /** undefined: the rest of the context (capped by the server's default). */
  maxTokens?: number;
  stop: string[];
  stopTokenIds: number[];
  seed?: number;
  logprobs: boolean;
  topLogprobs: number;
  stream: boolean;
  includeUsage: boolean;
  returnTokenIds: boolean;
  tokensAsIds: boolean;
  user?: string;
  /** The tools offered (tool_choice "auto"): the completion's <tool_call> blocks become tool_calls. */
  tools?: ToolDef[];
}

export interface ProtocolLimits {
  /** Most choices per request. */
  maxN: number;
  /** Most images per request. */
  maxImages: number;
  /** Most stop strings per request (default 16). */
  maxStops?: number;
  /** Most characters of one stop string (default 1024). */
  maxStopChars?: number;
}

/** Defaults of the stop-string budget. */
export const DEFAULT_MAX_STOPS = 16;
export const DEFAULT_MAX_STOP_CHARS = 1024;

const ROLES = new Set(['system', 'developer', 'user', 'assistant']);
const REFUSED: Record<string, (v: unknown) => boolean> = {
  functions: (v) => Array.isArray(v) && v.length > 0,
  function_call: (v) => v !== 'none',
  response_format: (v) => !(typeof v === 'object' && v !== null && (v as { type?: unknown }).type === 'text'),
  logit_bias: (v) => typeof v === 'object' && v !== null && Object.keys(v).length > 0,
  presence_penalty: (v) => v !== 0,
  frequency_penalty: (v) => v !== 0,
  repetition_penalty: (v) => v !== 1,
  min_tokens: (v) => v !== 0,
  best_of: (v) => v !== 1,
  echo: (v) => v !== false,
  prediction: () => true,
  audio: () => true,
  modalities: (v) => !(Array.isArray(v) && v.every((m) => m === 'text')),
};

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function num(
  body: Record<string, unknown>,
  key: string,
  def: number,
  min: number,
  max: number,
  integer = false,
): number {
  const v = body[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v))) {
    throw badRequest(
      `${key} must be ${integer ? 'an integer' : 'a number'}; got ${typeName(v)} ${JSON.stringify(v)?.slice(0, 40)}`,
      key,
      'invalid_type',
    );
  }
  if (v < min || v > max) throw badRequest(`${key} must be between ${min} and ${max}; got ${v}`, key, 'invalid_value');
  return v;
}

function bool(body: Record<string, unknown>, key: string): boolean {
  const v = body[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw badRequest(`${key} must be a boolean; got ${typeName(v)}`, key, 'invalid_type');
  return v;
}

function contentParts(content: unknown, at: string, images: ImageRef[]): string | ContentPart[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content))
    throw badRequest(
      `${at} must be a string or an array of content parts; got ${typeName(content)}`,
      at,
      'invalid_type',
    );
  const parts: ContentPart[] = [];
  content.forEach((p: unknown, j) => {
    const where = `${at}[${j}]`;
    if (typeof p !== 'object' || p === null)
      throw badRequest(`${where} must be an object {type, ...}; got ${typeName(p)}`, where, 'invalid_type');
    const part = p as Record<string, unknown>;
    if (part.type === 'text') {
      if (typeof part.text !== 'string')
        throw badRequest(`${where}.text must be a string`, `${where}.text`, 'invalid_type');
      parts.push({ type: 'text', text: part.text });
    } else if (part.type === 'image_url') {
      const iu = part.image_url;
      const url =
        typeof iu === 'string' ? iu : typeof iu === 'object' && iu !== null ? (iu as { url?: unknown }).url : undefined;
      if (typeof url !== 'string' || url === '')
        throw badRequest(
          `${where}.image_url.url must be a non-empty string (a data URL)`,
          `${where}.image_url`,
          'invalid_type',
        );
      images.push({ url, param: `${where}.image_url` });
      parts.push({ type: 'image' });
    } else {
      throw badRequest(
        `${where}.type ${JSON.stringify(part.type)} is not supported; use "text" or "image_url"`,
        `${where}.type`,
        'invalid_value',
      );
    }
  });
  return parts;
}

/** Check a parsed JSON body; throws ApiError (400) naming the field. */
export function parseChatRequest(raw: unknown, limits: ProtocolLimits): ChatRequest {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw badRequest(`the request body must be a JSON object; got ${typeName(raw)}`, null, 'invalid_body');
  const body = raw as Record<string, unknown>;
  if (typeof body.model !== 'string' || body.model === '')
    throw badRequest('you must provide a model parameter (a string)', 'model', 'missing_required_parameter');
  if (body.messages === undefined)
    throw badRequest('you must provide a messages parameter', 'messages', 'missing_required_parameter');
  if (!Array.isArray(body.messages) || body.messages.length === 0)
    throw badRequest('messages must be a non-empty array', 'messages', 'invalid_value');
  for (const [key, refused] of Object.entries(REFUSED)) {
    if (body[key] !== undefined && body[key] !== null && refused(body[key])) {
      throw badRequest(`${key} is not supported by vqalab serve`, key, 'unsupported_parameter');
    }
  }
  const images: ImageRef[] = [];
  body.messages.forEach((m: unknown, i: number) => {
    if (typeof m !== 'object' || m === null)
      throw badRequest(
        `messages[${i}] must be an object {role, content}; got ${typeName(m)}`,
        `messages[${i}]`,
        'invalid_type',
      );
  });
  const offered = body.tools === undefined || body.tools === null ? undefined : parseTools(body.tools);
  const choice = parseToolChoice(body.tool_choice);
  const tools = offered && offered.length > 0 && choice === 'auto' ? offered : undefined;
  const messages: ChatMessage[] = toolConversation(body.messages, tools, (m: unknown, i: number) => {
    const at = `messages[${i}]`;
    const msg = m as Record<string, unknown>;
    if (typeof msg.role !== 'string' || !ROLES.has(msg.role)) {
      throw badRequest(
        `${at}.role must be one of system, developer, user, assistant, tool; got ${JSON.stringify(msg.role)}`,
        `${at}.role`,
        'invalid_value',
      );
    }
    if (msg.content === undefined || msg.content === null) {
      if (msg.role === 'assistant') return { role: 'assistant', content: '' };
      throw badRequest(`${at}.content is required`, `${at}.content`, 'missing_required_parameter');
    }
    const content = contentParts(msg.content, `${at}.content`, images);
    if (msg.role !== 'user' && typeof content !== 'string' && content.some((p) => p.type === 'image')) {
      throw badRequest(`${at}: images are accepted in user messages only`, `${at}.content`, 'invalid_value');
    }
    // The template knows system/user/assistant; a developer message is the system message of newer APIs.
    return { role: msg.role === 'developer' ? 'system' : msg.role, content };
  });
  if (images.length > limits.maxImages)
    throw badRequest(
      `at most ${limits.maxImages} images per request; got ${images.length}`,
      'messages',
      'too_many_images',
    );
  let stop: string[] = [];
  if (body.stop !== undefined && body.stop !== null) {
    if (typeof body.stop === 'string') stop = [body.stop];
    else if (Array.isArray(body.stop) && body.stop.every((s) => typeof s === 'string')) stop = body.stop as string[];
    else throw badRequest('stop must be a string or an array of strings', 'stop', 'invalid_type');
    const maxStops = limits.maxStops ?? DEFAULT_MAX_STOPS,
      maxStopChars = limits.maxStopChars ?? DEFAULT_MAX_STOP_CHARS;
    if (stop.length > maxStops)
      throw badRequest(`at most ${maxStops} stop strings (--max-stops); got ${stop.length}`, 'stop', 'invalid_value');
    if (stop.some((s) => s === '')) throw badRequest('stop strings must not be empty', 'stop', 'invalid_value');
    const long = stop.findIndex((s) => s.length > maxStopChars);
    if (long >= 0)
      throw badRequest(
        `stop[${long}] has ${stop[long]!.length} characters; the limit is ${maxStopChars} (--max-stop-chars)`,
        'stop',
        'invalid_value',
      );
  }
  let stopTokenIds: number[] = [];
  if (body.stop_token_ids !== undefined && body.stop_token_ids !== null) {
    if (!Array.isArray(body.stop_token_ids) || !body.stop_token_ids.every((t) => Number.isInteger(t) && t >= 0)) {
      throw badRequest('stop_token_ids must be an array of non-negative integers', 'stop_token_ids', 'invalid_type');
    }
    stopTokenIds = body.stop_token_ids as number[];
  }
  const maxKey =
    body.max_completion_tokens !== undefined && body.max_completion_tokens !== null
      ? 'max_completion_tokens'
      : 'max_tokens';
  const maxTokens =
    body[maxKey] === undefined || body[maxKey] === null
      ? undefined
      : num(body, maxKey, 0, 1, Number.MAX_SAFE_INTEGER, true);
  const logprobs = bool(body, 'logprobs');
  const topLogprobs = num(body, 'top_logprobs', 0, 0, 20, true);
  if (topLogprobs > 0 && !logprobs)
    throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs', 'invalid_value');
  const so = body.stream_options;
  if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so)))
    throw badRequest('stream_options must be an object', 'stream_options', 'invalid_type');
  const includeUsage = so ? (so as { include_usage?: unknown }).include_usage === true : false;
  const topK = num(body, 'top_k', 0, -1, Number.MAX_SAFE_INTEGER, true);
  if (body.user !== undefined && body.user !== null && typeof body.user !== 'string')
    throw badRequest('user must be a string', 'user', 'invalid_type');
  const seed =
    body.seed === undefined || body.seed === null ? undefined : num(body, 'seed', 0, 0, Number.MAX_SAFE_INTEGER, true);
  const topP = num(body, 'top_p', 1, 0, 1);
  if (topP === 0) throw badRequest('top_p must be greater than 0', 'top_p', 'invalid_value');
  return {
    model: body.model,
    messages,
    images,
    n: num(body, 'n', 1, 1, limits.maxN, true),
    temperature: num(body, 'temperature', 1, 0, 2),
    topP,
    topK: topK < 0 ? 0 : topK,
    maxTokens,
    stop,
    stopTokenIds,
    seed,
    logprobs,
    topLogprobs,
    stream: bool(body, 'stream'),
    includeUsage,
    returnTokenIds: bool(body, 'return_token_ids'),
    tokensAsIds: bool(body, 'return_tokens_as_token_ids'),
    user: typeof body.user === 'string' ? body.user : undefined,
    ...(tools ? { tools } : {}),
  };
}
