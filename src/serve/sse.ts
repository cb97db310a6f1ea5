/**
 * Streamed replies (`stream: true`): OpenAI's chunk format over server-sent events — a role chunk,
 * one chunk per token with its log-prob, a finish chunk, an optional usage chunk, `data: [DONE]`.
 * The deltas add up to the non-streamed text.
 */
import type { ServerResponse } from 'node:http';
import type { LocalChoice, LocalGeneration } from '../rollout/local.js';
import type { ServeContext } from './context.js';
import { ApiError } from './errors.js';
import type { ChatRequest } from './protocol.js';
import { logprobEntry, tokenEntry, usageOf } from './reply.js';
import { parseToolCalls } from './tools.js';
import { WEIGHT_VERSION_HEADER } from './weights.js';

type StreamContext = Pick<ServeContext, 'policy' | 'modelName' | 'log'>;

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  connection: 'keep-alive',
  // a reverse proxy (nginx) would otherwise buffer the stream
  'x-accel-buffering': 'no',
};

/** Writes one chunk event; the weight version is read per chunk because a live stream learns it after its headers. */
function chunkSender(modelName: string, res: ServerResponse, id: string, version: () => number | undefined) {
  const createdAt = Math.floor(Date.now() / 1000);
  return (choices: unknown[], extra: Record<string, unknown> = {}) => {
    if (res.destroyed) return; // the client left mid-stream
    res.write(
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: createdAt, model: modelName, system_fingerprint: 'vqalab', weight_version: version() ?? null, choices, ...extra })}\n\n`,
    );
  };
}

/** Text pieces per token whose concatenation is exactly `c.text` (a UTF-8 character split over tokens is held back until complete). */
function pieces(ctx: StreamContext, c: LocalChoice): string[] {
  const out: string[] = [];
  let sent = 0;
  for (let k = 0; k < c.tokenIds.length; k++) {
    let upTo = ctx.policy.tokenizer.decode(c.tokenIds.slice(0, k + 1));
    if (upTo.endsWith('\uFFFD') && k + 1 < c.tokenIds.length) upTo = upTo.replace(/\uFFFD+$/, '');
    const end = Math.min(c.text.length, Math.max(sent, upTo.length));
    out.push(c.text.slice(sent, end));
    sent = end;
  }
  if (sent < c.text.length) {
    if (out.length === 0) out.push('');
    out[out.length - 1] += c.text.slice(sent);
  }
  return out;
}

/** What chatCompletions drives while the engine produces tokens (src/serve/chat.ts). */
export interface LiveStream {
  /** Whether the headers went out (after that an error can only be an error event). */
  readonly started: boolean;
  onToken(e: { choice: number; tokenId: number; logprob: number }): void;
  finish(gen: LocalGeneration): void;
  fail(err: unknown): void;
}

/**
 * A stream fed token by token from the engine: each token is sent as it comes (its text piece
 * from the policy's incremental decoder, its log-prob, its id); when the request completes, the
 * text held back (a character split over tokens, a possible stop-string start) and the finish
 * chunks follow. Headers go out with the first token, so a request that fails before it still
 * gets a JSON error with its status.
 */
export function liveStream(
  ctx: StreamContext,
  res: ServerResponse,
  chat: ChatRequest,
  id: string,
  version: () => number | undefined,
): LiveStream {
  const { policy, log } = ctx;
  const send = chunkSender(ctx.modelName, res, id, version);
  let started = false;
  // One stream per choice; the stop strings are compiled once per request and shared.
  const first = policy.textStream({ stop: chat.stop, stopTokenIds: chat.stopTokenIds });
  const texts = Array.from({ length: chat.n }, (_v, i) => (i === 0 ? first : first.sibling()));
  const role = new Array<boolean>(chat.n).fill(false);
  const sentTokens = new Array<number>(chat.n).fill(0);
  const head = () => {
    if (started) return;
    started = true;
    const v = version();
    res.writeHead(200, v === undefined ? SSE_HEADERS : { ...SSE_HEADERS, [WEIGHT_VERSION_HEADER]: String(v) });
  };
  const roleChunk = (i: number) => {
    if (role[i]) return;
    role[i] = true;
    send([{ index: i, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  };
  const tokenChunk = (i: number, piece: string, tokenId: number, logprob: number) => {
    sentTokens[i]!++;
    send([
      {
        index: i,
        delta: { content: piece },
        logprobs: chat.logprobs
          ? { content: [tokenEntry(policy.tokenizer, tokenId, logprob, [], chat.tokensAsIds)], refusal: null }
          : null,
        finish_reason: null,
        ...(chat.returnTokenIds ? { token_ids: [tokenId] } : {}),
      },
    ]);
  };
  return {
    get started() {
      return started;
    },
    onToken(e: { choice: number; tokenId: number; logprob: number }) {
      const text = texts[e.choice];
      if (!text || text.done || res.destroyed) return;
      const piece = text.push(e.tokenId);
      head();
      roleChunk(e.choice);
      tokenChunk(e.choice, piece, e.tokenId, e.logprob);
    },
    finish(gen: LocalGeneration) {
      head();
      gen.choices.forEach((c, i) => {
        roleChunk(i);
        // tokens the live stream did not send (not expected: the decoder ends where complete() does)
        for (let k = sentTokens[i]!; k < c.tokenIds.length; k++) tokenChunk(i, '', c.tokenIds[k]!, c.logprobs[k]!);
        const sent = texts[i]!.sent;
        if (!c.text.startsWith(sent))
          log?.(`stream ${id}: choice ${i}: the streamed text is not a prefix of the final text`);
        const rest = c.text.startsWith(sent) ? c.text.slice(sent.length) : '';
        if (rest) send([{ index: i, delta: { content: rest }, logprobs: null, finish_reason: null }]);
        send([{ index: i, delta: {}, logprobs: null, finish_reason: c.finishReason }]);
      });
      if (chat.includeUsage) send([], { usage: usageOf(gen) });
      if (!res.destroyed) res.end('data: [DONE]\n\n');
    },
    /** The request failed after the stream began: an error event, then the end. */
    fail(err: unknown) {
      const message =
        err instanceof ApiError
          ? err.message
          : `the engine failed: ${err instanceof Error ? err.message : String(err)}`;
      const code = err instanceof ApiError ? err.code : 'engine_error';
      send([], { error: { message, type: err instanceof ApiError ? err.type : 'server_error', param: null, code } });
      if (!res.destroyed) res.end('data: [DONE]\n\n');
    },
  };
}

/** The whole completion at once, in the chunk format (used when top_logprobs or tool calls need the finished completion). */
export function replyStream(
  ctx: StreamContext,
  res: ServerResponse,
  chat: ChatRequest,
  id: string,
  gen: LocalGeneration,
  version: number,
): void {
  res.writeHead(200, { ...SSE_HEADERS, [WEIGHT_VERSION_HEADER]: String(version) });
  const send = chunkSender(ctx.modelName, res, id, () => version);
  gen.choices.forEach((c, index) => {
    send([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    const calls = chat.tools ? parseToolCalls(c.text) : undefined;
    if (calls && calls.toolCalls.length > 0) {
      // With tool calls: the text outside them, then the calls, whole (their ids and token ids in the last chunk).
      if (calls.content) send([{ index, delta: { content: calls.content }, logprobs: null, finish_reason: null }]);
      send([
        {
          index,
          delta: { tool_calls: calls.toolCalls.map((t, k) => ({ index: k, ...t })) },
          logprobs: null,
          finish_reason: null,
          ...(chat.returnTokenIds ? { token_ids: c.tokenIds } : {}),
        },
      ]);
      send([
        {
          index,
          delta: {},
          logprobs: null,
          finish_reason: c.finishReason === 'stop' ? 'tool_calls' : c.finishReason,
        },
      ]);
      return;
    }
    const ps = pieces(ctx, c);
    ps.forEach((piece, k) => {
      send([
        {
          index,
          delta: { content: piece },
          logprobs: chat.logprobs
            ? { content: [logprobEntry(ctx.policy.tokenizer, c, k, chat.tokensAsIds)], refusal: null }
            : null,
          finish_reason: null,
          ...(chat.returnTokenIds ? { token_ids: [c.tokenIds[k]] } : {}),
        },
      ]);
    });
    send([{ index, delta: {}, logprobs: null, finish_reason: c.finishReason }]);
  });
  if (chat.includeUsage) send([], { usage: usageOf(gen) });
  if (!res.destroyed) res.end('data: [DONE]\n\n');
}
