/**
 * POST /v1/chat/completions: body → checks (src/serve/prepare.ts, before it queues, so bad
 * requests fail at once) → the fair queue → generate (src/serve/generate.ts) → the reply as JSON
 * (reply.ts) or server-sent events (sse.ts). A client that disconnects cancels its rows.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Prompt } from '../engine/types.js';
import { ContextLengthError, type LocalGeneration } from '../rollout/local.js';
import { readBody } from './body.js';
import type { ServeContext } from './context.js';
import { ApiError, badRequest } from './errors.js';
import type { Generate } from './generate.js';
import type { ChatHooks } from './options.js';
import { prepareRequest } from './prepare.js';
import type { ChatRequest } from './protocol.js';
import { QueueFullError } from './queue.js';
import { replyJson } from './reply.js';
import { liveStream, replyStream } from './sse.js';

/** Bodies up to this size are checked and tokenised on the event loop (a few ms); larger ones in a worker. */
const INLINE_BODY_BYTES = 4096;

/** The fair queue's client: the request's `user`, else its address. */
function clientKey(req: IncomingMessage, chat: ChatRequest): string {
  return chat.user ? `user:${chat.user}` : `addr:${req.socket.remoteAddress ?? '?'}`;
}

export type ChatCompletions = (req: IncomingMessage, res: ServerResponse, hooks?: ChatHooks) => Promise<void>;

export function chatCompletionsRoute(ctx: ServeContext, generate: Generate): ChatCompletions {
  const { offload, limits, builder, queue, batching, log, counters, weights } = ctx;
  return async function chatCompletions(req, res, hooks = {}) {
    let raw = await readBody(req, ctx.maxBodyBytes);
    if (hooks.transformBody) raw = hooks.transformBody(raw);
    // Every budget is checked before the work it bounds (src/serve/prepare.ts); a large body is
    // parsed and tokenised in a worker thread.
    const checked =
      offload && raw.length > INLINE_BODY_BYTES
        ? await offload.prepare(raw)
        : await prepareRequest(raw, limits, builder);
    const chat = checked.chat;
    const gone = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) gone.abort(new Error('the client closed the connection'));
    };
    res.on('close', onClose);
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    // top_logprobs come from a forward pass over the finished completion: such streams are sent whole.
    let version: number | undefined;
    // With tools offered, the reply is known once the completion is (its <tool_call> blocks become tool_calls): sent whole.
    const live =
      chat.stream && chat.topLogprobs === 0 && !chat.tools ? liveStream(ctx, res, chat, id, () => version) : null;
    let gen: LocalGeneration;
    let prompt: Prompt | undefined;
    const onVersion = (v: number) => {
      hooks.checkWeightVersion?.(v);
      version = v;
    };
    try {
      gen = await queue.submit(
        clientKey(req, chat),
        () =>
          generate(
            chat,
            checked,
            gone.signal,
            live?.onToken,
            (p) => (prompt = hooks.rewritePrompt?.(p) ?? p),
            onVersion,
          ),
        gone.signal,
        batching ? chat.n : 1,
      );
    } catch (err) {
      if (gone.signal.aborted) return; // the client left; its rows were cancelled
      if (live?.started) {
        log?.(
          `error: ${req.method} ${req.url}: after the stream began: ${err instanceof Error ? err.message : String(err)}`,
        );
        live.fail(err);
        return;
      }
      if (err instanceof QueueFullError)
        throw new ApiError(503, err.message, 'server_error', null, 'server_overloaded', { 'retry-after': '1' });
      if (err instanceof ApiError) throw err;
      if (err instanceof ContextLengthError) throw badRequest(err.message, 'messages', 'context_length_exceeded');
      if (err instanceof RangeError && /top_logprobs/.test(err.message))
        throw badRequest(err.message, 'top_logprobs', 'invalid_value');
      throw err;
    } finally {
      res.off('close', onClose);
    }
    if (res.destroyed) return;
    counters.promptTokens += gen.promptTokens;
    counters.completionTokens += gen.choices.reduce((a, c) => a + c.tokenIds.length, 0);
    const v = version ?? weights.version;
    if (prompt) hooks.onGeneration?.({ id, chat, prompt, generation: gen, weightVersion: v });
    if (live) live.finish(gen);
    else if (chat.stream) replyStream(ctx, res, chat, id, gen, v);
    else replyJson(ctx, res, chat, id, gen, v);
  };
}
