/**
 * `vqalab serve`: an OpenAI-compatible HTTP server (node:http) over the native engine.
 *
 *   GET  /v1/models, /v1/models/{id}
 *   POST /v1/chat/completions   (JSON, or server-sent events with stream: true)
 *   GET  /health                (no auth; for load balancers and scripts that wait for start-up)
 *   PUT  /admin/weights         (with `adminKey`: a trainer pushes its weights, src/serve/weights.ts)
 *
 * A request goes: body (size-capped) → JSON → checked fields (src/serve/protocol.ts) → image
 * headers checked (src/serve/media.ts: size, pixel and path limits) → prompt length from the
 * processor's plan, checked against the context — all before it queues, so bad requests fail at
 * once — then the fair queue (src/serve/queue.ts), which admits requests while the batch has
 * room (rows) → its images decoded and patched → its n completions join the engine's running
 * decode loop at the next step (continuous batching, src/engine/sampling.ts) → the reply. Heavy
 * work runs in the engine's native threads and libvips'; the event loop parses, routes and formats.
 * Errors come back in OpenAI's JSON shape with the status a client expects, and one bad request
 * never affects another. `batching: false` keeps the earlier queue-only mode (one request on the
 * engine at a time), for comparison.
 *
 * Streaming sends OpenAI's chunk format (role chunk, one chunk per token with its log-prob,
 * finish chunk, optional usage chunk, `data: [DONE]`) as the engine produces the tokens; the
 * deltas add up to the non-streamed text. A client that disconnects cancels its rows.
 *
 * This file reads the options, builds the shared parts and owns the HTTP server's life (listen,
 * access log, errors, close). The rest, one job a file: routes.ts (routing, /health, /v1/models),
 * chat.ts (/v1/chat/completions), generate.ts (images → prompt → engine), reply.ts (JSON replies),
 * sse.ts (streamed replies), admin.ts (/admin/weights), body.ts (size-capped bodies), auth.ts
 * (bearer keys), options.ts (the public types), context.ts (what the parts share).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { SampleStats } from '../engine/types.js';
import { processorOptionsFrom } from '../vision/processor-config.js';
import type { LocalPolicy } from '../rollout/local.js';
import { chatCompletionsRoute } from './chat.js';
import type { ServeContext } from './context.js';
import { ApiError, sendError } from './errors.js';
import { generator } from './generate.js';
import type { MediaLimits } from './media.js';
import { Offload } from './offload.js';
import type { PrepareLimits, PromptBuilder } from './prepare.js';
import { DEFAULT_MAX_STOP_CHARS, DEFAULT_MAX_STOPS } from './protocol.js';
import { FairQueue } from './queue.js';
import { router } from './routes.js';
import { WeightSwitch } from './weights.js';
import type { ServeHandle, ServeOptions } from './options.js';

// The public types live in options.ts (the modules below share them); src/gateway and src/index.ts import them from here.
export type { ChatHooks, ServeRouteApi, ServeStats } from './options.js';
export type { ServeHandle, ServeOptions };

const MiB = 1 << 20;

/** Characters in the longest token (a byte-level token is at least one byte, a character at most its bytes). */
function longestTokenChars(policy: LocalPolicy): number {
  let longest = 1;
  const tok = policy.tokenizer;
  for (let id = 0; id < tok.vocabSize; id++) {
    const piece = tok.idToToken(id);
    if (piece !== undefined && piece.length > longest) longest = piece.length;
  }
  return longest;
}

export async function serve(options: ServeOptions): Promise<ServeHandle> {
  const policy = options.policy;
  if (!policy || typeof policy.complete !== 'function')
    throw new TypeError('serve needs options.policy: a LocalPolicy');
  const modelName = options.modelName ?? 'vqalab';
  const host = options.host ?? '127.0.0.1';
  const maxBodyBytes = options.maxBodyBytes ?? 32 * MiB;
  const media: MediaLimits = {
    allowedMediaRoot: options.allowedMediaRoot,
    maxImageBytes: options.maxImageBytes ?? 16 * MiB,
    maxImagePixels: options.maxImagePixels ?? 4096 * 4096,
  };
  const defaultMaxTokens = options.defaultMaxTokens ?? 512;
  const limits: PrepareLimits = {
    maxN: options.maxN ?? 64,
    maxImages: options.maxImages ?? 8,
    maxStops: options.maxStops ?? DEFAULT_MAX_STOPS,
    maxStopChars: options.maxStopChars ?? DEFAULT_MAX_STOP_CHARS,
    maxPromptChars: options.maxPromptChars ?? policy.maxSequenceLength * longestTokenChars(policy),
    media,
    modelName,
    vocabSize: policy.model.config?.vocabSize ?? policy.tokenizer.vocabSize,
    maxSequenceLength: policy.maxSequenceLength,
    defaultMaxTokens,
  };
  const builder: PromptBuilder = {
    plan: (h, w) => policy.processor.plan(h, w).gridThw,
    prompt: (messages, planned) => policy.prompt(messages, planned).ids,
  };
  // Large requests are taken apart in worker threads holding a copy of the tokenizer and image
  // processor (loaded from the policy's tokenizer folder; a tokenizer built in memory: no workers).
  const workers = options.workers ?? 1;
  const tokenizerDir = policy.tokenizer.source;
  const offload =
    workers > 0 && existsSync(path.join(tokenizerDir, 'tokenizer.json'))
      ? new Offload(
          {
            tokenizerDir,
            mergeSize: policy.model.config?.vision?.spatialMergeSize ?? 2,
            processorOptions: processorOptionsFrom(tokenizerDir),
            limits,
          },
          workers,
        )
      : null;
  // Continuous batching: the queue admits requests while their rows fit the batch's row budget;
  // each then prepares its images and joins the engine's decode loop. Queue-only mode: two jobs at
  // a time, one on the engine (the lock), the next preparing its images meanwhile (in libvips).
  const batching = options.batching ?? true;
  const maxBatchRows = options.maxBatchRows ?? 64;
  const queue = new FairQueue(options.maxQueue ?? 256, batching ? maxBatchRows : 2);
  const engineStats = (): SampleStats | null => policy.model.sampleStats?.() ?? null;
  const log = options.log;
  const counters = { requests: 0, byStatus: {} as Record<string, number>, promptTokens: 0, completionTokens: 0 };
  const sockets = new Set<Socket>();
  const weights = new WeightSwitch();
  const maxWeightBytes = options.maxWeightBytes ?? 16 * 1024 * MiB;

  const ctx: ServeContext = {
    policy,
    modelName,
    log,
    weights,
    queue,
    offload,
    batching,
    limits,
    builder,
    maxBodyBytes,
    maxWeightBytes,
    counters,
    closing: false,
  };
  const chatCompletions = chatCompletionsRoute(ctx, generator(ctx));
  const handle = router(ctx, options, chatCompletions, engineStats);

  const server = http.createServer((req, res) => {
    const t0 = performance.now();
    counters.requests++;
    // A client that disconnects mid-reply must not take the server down with a stream error.
    res.on('error', (err) => log?.(`response error: ${req.method} ${req.url}: ${err.message}`));
    req.on('error', (err) => log?.(`request error: ${req.method} ${req.url}: ${err.message}`));
    res.on('finish', () => {
      counters.byStatus[res.statusCode] = (counters.byStatus[res.statusCode] ?? 0) + 1;
      log?.(`${req.method} ${req.url} ${res.statusCode} ${(performance.now() - t0).toFixed(0)}ms`);
    });
    handle(req, res).catch((err: unknown) => {
      if (err instanceof ApiError) {
        if (err.status === 413 || err.headers.connection === 'close') res.shouldKeepAlive = false;
        return sendError(res, err);
      }
      log?.(`error: ${req.method} ${req.url}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendError(
        res,
        new ApiError(
          500,
          `the engine failed: ${err instanceof Error ? err.message : String(err)}`,
          'server_error',
          null,
          'engine_error',
        ),
      );
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable)
      socket.end(
        'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n' +
          JSON.stringify({
            error: {
              message: `malformed HTTP request: ${(err as Error).message}`,
              type: 'invalid_request_error',
              param: null,
              code: 'bad_http',
            },
          }),
      );
    else socket.destroy();
  });
  server.keepAliveTimeout = 30_000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 8000, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    // A server that never listened must not leave its request workers keeping the process alive.
    await offload?.close();
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost === '0.0.0.0' ? '127.0.0.1' : shownHost}:${port}/v1`,
    host,
    port,
    modelName,
    server,
    weights,
    stats: () => ({ ...counters, byStatus: { ...counters.byStatus }, queue: queue.stats(), engine: engineStats() }),
    close: async () => {
      if (ctx.closing) return;
      ctx.closing = true;
      queue.close(new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down'));
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await queue.idle();
      // Give replies written after the last engine call a moment to flush, then drop what is left.
      await new Promise((r) => setTimeout(r, 20));
      for (const s of sockets) s.destroy();
      await done;
      await offload?.close();
      if (options.disposeOnClose) policy.dispose();
    },
  };
}
