/**
 * The serve hooks of one chat request of an attempt: the body rewritten as the gateway promises
 * (any model name, tool results as observations, a reproducible seed), the prompt with the
 * attempt's sampled ids put back, the weight version checked, and the generation recorded
 * (src/gateway/recording.ts). The server itself stays unaware of attempts.
 */
import type { ChatHooks } from '../serve/server.js';
import { ApiError, badRequest } from '../serve/errors.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import type { AttemptRecord } from './records.js';
import { recordCall, sampledIdsBack } from './recording.js';
import { typeName } from './request.js';

/** What the hooks need of the gateway; tokenizer and model name are read per call (attach may come later). */
export interface ChatContext {
  tokenizer(): VlmTokenizer | undefined;
  modelName(): string;
  /** GatewayOptions.seed, .reuseSampledIds, .toolResponse, .log. */
  seed: number | undefined;
  reuseSampledIds: boolean | undefined;
  toolResponse: { prefix: string; suffix: string } | undefined;
  log: ((line: string) => void) | undefined;
  /** Counts a recorded call (GatewayStats.calls). */
  countCall(): void;
}

/** The serve hooks of one request of an attempt: any model name, tool results as observations, sampled ids put back, record the generation. */
export function chatHooks(ctx: ChatContext, rec: AttemptRecord): ChatHooks {
  let templateIds: Int32Array | undefined;
  return {
    transformBody: (raw) => rewriteBody(ctx, rec, raw),
    checkWeightVersion: (version) => {
      if (rec.weightVersion !== undefined && version !== rec.weightVersion) {
        throw new ApiError(
          409,
          `attempt ${rec.attemptId} of rollout ${rec.rolloutId} is bound to weight version ${rec.weightVersion}, but the server now serves version ${version}: ` +
            'its samples would not come from the weights being trained (stale), so the call is refused',
          'invalid_request_error',
          null,
          'stale_weights',
        );
      }
    },
    rewritePrompt: (prompt) => {
      templateIds = prompt.ids;
      return ctx.reuseSampledIds === false ? prompt : sampledIdsBack(ctx.tokenizer(), rec, prompt);
    },
    onGeneration: ({ id, chat, prompt, generation, weightVersion }) =>
      recordCall(ctx, rec, id, chat, prompt, templateIds ?? prompt.ids, generation, weightVersion),
  };
}

/**
 * The request as the server checks it: JSON (else a clear 400), any `model` name taken as the
 * served model (agents send "auto" or their own), tool results as observations, a seed when asked.
 */
function rewriteBody(ctx: ChatContext, rec: AttemptRecord, raw: Buffer): Buffer {
  let body: unknown;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return raw; // the server names the problem
  const b = withSeed(ctx.seed, rec, toolMessages(ctx.toolResponse, body)) as Record<string, unknown>;
  return Buffer.from(
    JSON.stringify(typeof b.model === 'string' && b.model !== '' ? { ...b, model: ctx.modelName() } : b),
    'utf8',
  );
}

/**
 * With the `toolResponse` option: tool results (role "tool") become user turns wrapped in its
 * prefix and suffix. Without it the server renders tools, tool calls and tool results itself
 * (Qwen's format, src/serve/tools.ts).
 */
function toolMessages(toolResponse: ChatContext['toolResponse'], body: unknown): unknown {
  if (!toolResponse || typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const b = body as Record<string, unknown>;
  if (
    !Array.isArray(b.messages) ||
    !b.messages.some((m) => typeof m === 'object' && m !== null && (m as { role?: unknown }).role === 'tool')
  )
    return body;
  const { prefix, suffix } = toolResponse;
  const messages = b.messages.map((m: unknown, i: number) => {
    if (typeof m !== 'object' || m === null || (m as { role?: unknown }).role !== 'tool') return m;
    const c = (m as { content?: unknown }).content;
    const text =
      typeof c === 'string'
        ? c
        : Array.isArray(c) &&
            c.every(
              (p) =>
                typeof p === 'object' &&
                p !== null &&
                (p as { type?: unknown }).type === 'text' &&
                typeof (p as { text?: unknown }).text === 'string',
            )
          ? c.map((p) => (p as { text: string }).text).join('')
          : undefined;
    if (text === undefined)
      throw badRequest(
        `messages[${i}].content of a tool message must be a string or text parts; got ${typeName(c)}`,
        `messages[${i}].content`,
        'invalid_type',
      );
    return { role: 'user', content: `${prefix}${text}${suffix}` };
  });
  return { ...b, messages };
}

/** FNV-1a over a string, as a seed below 2^47. */
function seedOf(text: string): number {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(text, 'utf8')) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return Number(h & ((1n << 47n) - 1n));
}

function withSeed(seed: number | undefined, rec: AttemptRecord, body: unknown): unknown {
  if (seed === undefined || typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const b = body as Record<string, unknown>;
  if (b.seed !== undefined && b.seed !== null) return body;
  return { ...b, seed: seedOf(`${seed}/${rec.rolloutId}/${rec.attemptId}/${rec.calls.length}`) };
}
