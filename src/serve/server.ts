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
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { ImageInput, Prompt, SampleStats } from '../engine/types.js';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { processorOptionsFrom } from '../vision/processor-config.js';
import {
  ContextLengthError,
  tokenBytes,
  type LocalChoice,
  type LocalGeneration,
  type LocalPolicy,
  type LocalSampling,
} from '../rollout/local.js';
import { ApiError, badRequest, sendError, sendJson } from './errors.js';
import type { MediaLimits } from './media.js';
import { Offload } from './offload.js';
import { prepareRequest, type Prepared, type PrepareLimits, type PromptBuilder } from './prepare.js';
import { DEFAULT_MAX_STOP_CHARS, DEFAULT_MAX_STOPS, type ChatRequest } from './protocol.js';
import { FairQueue, QueueFullError, type QueueStats } from './queue.js';
import { applyWeights, decodeWeights, WEIGHT_VERSION_HEADER, WeightSwitch } from './weights.js';
import { parseToolCalls } from './tools.js';

export interface ServeOptions {
  /** The model to serve. */
  policy: LocalPolicy;
  /** The name clients put in `model` (default "vqalab"). */
  modelName?: string;
  /** Interface to bind (default 127.0.0.1: loopback only). */
  host?: string;
  /** Port (default 8000; 0 = any free port). */
  port?: number;
  /** Require `Authorization: Bearer <apiKey>` on /v1 routes. */
  apiKey?: string;
  /** Local image paths (file:// or absolute) are read only under this folder; absent: refused. */
  allowedMediaRoot?: string;
  /** Largest request body (default 32 MiB). */
  maxBodyBytes?: number;
  /** Largest encoded image (default 16 MiB). */
  maxImageBytes?: number;
  /** Most pixels per image (default 4096·4096). */
  maxImagePixels?: number;
  /** Most images per request (default 8). */
  maxImages?: number;
  /** Most choices (n) per request (default 64). */
  maxN?: number;
  /**
   * Most characters of message text per request, counted before tokenising (default: the context
   * length × the longest token's characters, so only prompts that cannot fit are refused).
   */
  maxPromptChars?: number;
  /** Most stop strings per request (default 16). */
  maxStops?: number;
  /** Most characters per stop string (default 1024). */
  maxStopChars?: number;
  /**
   * Worker threads for large requests (parse, tokenise, image decode) so the event loop stays
   * responsive (default 1; 0: everything on the event loop).
   */
  workers?: number;
  /** Requests waiting for the engine before new ones get 503 (default 256). */
  maxQueue?: number;
  /**
   * Continuous batching (default true): requests share the engine's decode loop, joining it at the
   * next step. false: the earlier queue-only mode, one request on the engine at a time.
   */
  batching?: boolean;
  /** With batching: most rows (the sum of n) decoding together; more requests wait in the fair queue (default 64). */
  maxBatchRows?: number;
  /** max_tokens when a request gives none: the rest of the context, at most this (default 512). */
  defaultMaxTokens?: number;
  /** Access log and notices (default: none). */
  log?: (line: string) => void;
  /** Dispose the policy's model when the server closes (default false). */
  disposeOnClose?: boolean;
  /**
   * More routes on this server (src/gateway mounts its per-attempt URLs here): called for each
   * request before the server's own routes, with no API key check; resolves true when it answered.
   */
  routes?: (req: IncomingMessage, res: ServerResponse, url: string, api: ServeRouteApi) => boolean | Promise<boolean>;
  /**
   * Enables `PUT /admin/weights` with `Authorization: Bearer <adminKey>`: a trainer pushes its
   * weights (LoRA adapters or all) and the server switches to them between requests
   * (src/serve/weights.ts). Default: none (the route answers 404).
   */
  adminKey?: string;
  /** Largest weight push body (default 16 GiB). */
  maxWeightBytes?: number;
}

/** What a mounted route may use: the server's chat completions, with hooks. */
export interface ServeRouteApi {
  chatCompletions(req: IncomingMessage, res: ServerResponse, hooks?: ChatHooks): Promise<void>;
}

export interface ChatHooks {
  /**
   * The weight version the request is about to be sampled with (the weights cannot change until it
   * is done); throw an ApiError to refuse the request instead (src/gateway: an attempt bound to
   * another version).
   */
  checkWeightVersion?: (version: number) => void;
  /** Rewrite the request body before it is parsed and checked (may throw ApiError). */
  transformBody?: (raw: Buffer) => Buffer;
  /** The prompt the engine samples from, given the one the chat template made (ids with image pads, processed images). */
  rewritePrompt?: (prompt: Prompt) => Prompt;
  /** What the engine produced, before the reply is sent (the prompt as the engine saw it: ids with image pads, processed images). */
  onGeneration?: (r: {
    id: string;
    chat: ChatRequest;
    prompt: Prompt;
    generation: LocalGeneration;
    weightVersion: number;
  }) => void;
}

export interface ServeStats {
  requests: number;
  byStatus: Record<string, number>;
  queue: QueueStats;
  /** The engine's sampling loop (runs, joined, cancelled requests, ...). */
  engine: SampleStats | null;
  completionTokens: number;
  promptTokens: number;
}

export interface ServeHandle {
  /** Base URL for OpenAI clients, ending in /v1. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly modelName: string;
  readonly server: http.Server;
  /**
   * The weights served and their version (every reply names the version it was sampled with).
   * A trainer in this process that updates the policy's model between rollouts sets
   * `weights.version`; a trainer elsewhere pushes (PUT /admin/weights).
   */
  readonly weights: WeightSwitch;
  stats(): ServeStats;
  /** Stop accepting, refuse queued requests (503), let running ones finish, then close. */
  close(): Promise<void>;
}

const MiB = 1 << 20;

/** What the checks before queueing established: the request, images, max_tokens, the prompt ids as planned. */
type Checked = Prepared;

/** Bodies up to this size are checked and tokenised on the event loop (a few ms); larger ones in a worker. */
const INLINE_BODY_BYTES = 4096;
/** Images up to this many pixels are decoded and patched on the event loop; larger ones in a worker. */
const INLINE_IMAGE_PIXELS = 256 * 256;

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

/** One holder at a time, in arrival order. */
class Lock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

function clientKey(req: IncomingMessage, chat: ChatRequest): string {
  return chat.user ? `user:${chat.user}` : `addr:${req.socket.remoteAddress ?? '?'}`;
}

/**
 * Read the body, refusing more than `max` bytes with 413 (the rest is drained, then the connection
 * closed). The bytes are copied into one buffer as they arrive (sized from Content-Length, else
 * grown by doubling), so a large body costs many small copies spread over the event loop rather
 * than one long concatenation at the end.
 */
function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (n: number) =>
      new ApiError(
        413,
        `the request body is ${n > 0 ? `${(n / MiB).toFixed(1)} MiB` : 'too large'}, more than this server's limit of ${(max / MiB).toFixed(1)} MiB`,
        'invalid_request_error',
        null,
        'request_too_large',
        { connection: 'close' },
      );
    if (Number.isFinite(declared) && declared > max) {
      req.resume();
      return reject(tooLarge(declared));
    }
    let buf = Buffer.allocUnsafeSlow(Number.isFinite(declared) && declared > 0 ? declared : 16 * 1024);
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over || size + c.length > max) {
        over = true;
        size += c.length;
        if (size > 4 * max) req.destroy(); // a client that keeps sending after the limit is cut off
        return;
      }
      if (size + c.length > buf.length) {
        const grown = Buffer.allocUnsafeSlow(Math.min(max, Math.max(2 * buf.length, size + c.length)));
        buf.copy(grown, 0, 0, size);
        buf = grown;
      }
      c.copy(buf, size);
      size += c.length;
    });
    req.on('end', () => (over ? reject(tooLarge(size)) : resolve(buf.subarray(0, size))));
    req.on('error', reject);
  });
}

function checkKey(req: IncomingMessage, apiKey: string): void {
  const auth = req.headers.authorization ?? '';
  const m = /^Bearer\s+(.+)$/i.exec(auth);
  const ok =
    m !== null &&
    (() => {
      const a = Buffer.from(m[1]!.trim()),
        b = Buffer.from(apiKey);
      return a.length === b.length && timingSafeEqual(a, b);
    })();
  if (!ok) {
    throw new ApiError(
      401,
      m ? 'Incorrect API key provided' : 'Missing API key: send "Authorization: Bearer <key>"',
      'invalid_request_error',
      null,
      'invalid_api_key',
      { 'www-authenticate': 'Bearer' },
    );
  }
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
  const engine = new Lock();
  const engineStats = (): SampleStats | null => policy.model.sampleStats?.() ?? null;
  const created = Math.floor(Date.now() / 1000);
  const log = options.log;
  const counters = { requests: 0, byStatus: {} as Record<string, number>, promptTokens: 0, completionTokens: 0 };
  const sockets = new Set<Socket>();
  let closing = false;
  const weights = new WeightSwitch();
  const maxWeightBytes = options.maxWeightBytes ?? 16 * 1024 * MiB;

  const modelObject = () => ({
    id: modelName,
    object: 'model',
    created,
    owned_by: 'vqalab',
    max_model_len: policy.maxSequenceLength,
  });

  function tokenText(id: number, asIds: boolean): string {
    return asIds ? `token_id:${id}` : policy.tokenizer.decode([id], { skipSpecialTokens: false });
  }

  function tokenEntry(id: number, logprob: number, top: { id: number; logprob: number }[], asIds: boolean) {
    return {
      token: tokenText(id, asIds),
      logprob,
      bytes: [...tokenBytes(policy.tokenizer, id)],
      top_logprobs: top.map((t) => ({
        token: tokenText(t.id, asIds),
        logprob: t.logprob,
        bytes: [...tokenBytes(policy.tokenizer, t.id)],
      })),
    };
  }

  function logprobEntry(choice: LocalChoice, k: number, asIds: boolean) {
    return tokenEntry(choice.tokenIds[k]!, choice.logprobs[k]!, choice.topLogprobs?.[k] ?? [], asIds);
  }

  /** Admitted: decode and patch the images, then sample (joining the decode loop, or taking the engine lock in queue-only mode). */
  async function generate(
    chat: ChatRequest,
    checked: Checked,
    signal: AbortSignal,
    onToken?: LocalSampling['onToken'],
    onPrompt?: (p: Prompt) => Prompt,
    onVersion?: (version: number) => void,
  ): Promise<LocalGeneration> {
    const processed: ImageInput[] = [];
    for (const img of checked.images) {
      try {
        processed.push(
          offload && img.width * img.height > INLINE_IMAGE_PIXELS
            ? await offload.image(img.bytes)
            : await policy.image(img.bytes),
        );
      } catch (err) {
        throw badRequest(
          `${img.param}: ${(err as Error).message.replace(/^image buffer \(\d+ bytes\): /, '')}`,
          img.param,
          'invalid_image',
        );
      }
    }
    // The planned prompt ids hold when each image decoded to its planned grid (the usual case);
    // otherwise build and check the prompt again.
    const same = processed.every((img, i) => img.gridThw.every((v, k) => v === checked.grids[i]![k]));
    let prompt = same ? { ids: checked.ids, images: processed } : policy.prompt(chat.messages, processed);
    if (!same) policy.checkLength(prompt, checked.maxTokens);
    const given = onPrompt?.(prompt);
    if (given && given !== prompt) {
      prompt = given;
      policy.checkLength(prompt, checked.maxTokens);
    }
    if (signal.aborted) throw signal.reason;
    // The weights stay those of one version from here until the completion is done (a push waits).
    const call = () =>
      weights.read((version) => {
        onVersion?.(version);
        if (signal.aborted) throw signal.reason;
        return policy.complete(prompt, {
          n: chat.n,
          temperature: chat.temperature,
          topP: chat.topP,
          topK: chat.topK,
          maxTokens: checked.maxTokens,
          stop: chat.stop,
          stopTokenIds: chat.stopTokenIds,
          seed: chat.seed,
          topLogprobs: chat.topLogprobs,
          signal,
          ...(onToken ? { onToken } : {}),
        });
      });
    return batching ? call() : engine.run(call);
  }

  function replyJson(res: ServerResponse, chat: ChatRequest, id: string, gen: LocalGeneration, version: number): void {
    const completionTokens = gen.choices.reduce((a, c) => a + c.tokenIds.length, 0);
    sendJson(
      res,
      200,
      {
        id,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: modelName,
        system_fingerprint: 'vqalab',
        weight_version: version,
        choices: gen.choices.map((c, index) => {
          const calls = chat.tools ? parseToolCalls(c.text) : undefined;
          const tool = calls && calls.toolCalls.length > 0;
          return {
            index,
            message: {
              role: 'assistant',
              content: tool ? calls!.content : c.text,
              refusal: null,
              ...(tool ? { tool_calls: calls!.toolCalls } : {}),
            },
            logprobs: chat.logprobs
              ? { content: c.tokenIds.map((_t, k) => logprobEntry(c, k, chat.tokensAsIds)), refusal: null }
              : null,
            finish_reason: tool && c.finishReason === 'stop' ? 'tool_calls' : c.finishReason,
            ...(chat.returnTokenIds ? { token_ids: c.tokenIds } : {}),
          };
        }),
        usage: {
          prompt_tokens: gen.promptTokens,
          completion_tokens: completionTokens,
          total_tokens: gen.promptTokens + completionTokens,
        },
        ...(chat.returnTokenIds ? { prompt_token_ids: null } : {}),
      },
      { [WEIGHT_VERSION_HEADER]: String(version) },
    );
  }

  /** Text pieces per token whose concatenation is exactly `c.text` (a UTF-8 character split over tokens is held back until complete). */
  function pieces(c: LocalChoice): string[] {
    const out: string[] = [];
    let sent = 0;
    for (let k = 0; k < c.tokenIds.length; k++) {
      let upTo = policy.tokenizer.decode(c.tokenIds.slice(0, k + 1));
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

  const SSE_HEADERS = {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  };

  function chunkSender(res: ServerResponse, id: string, version: () => number | undefined) {
    const createdAt = Math.floor(Date.now() / 1000);
    return (choices: unknown[], extra: Record<string, unknown> = {}) => {
      if (res.destroyed) return; // the client left mid-stream
      res.write(
        `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created: createdAt, model: modelName, system_fingerprint: 'vqalab', weight_version: version() ?? null, choices, ...extra })}\n\n`,
      );
    };
  }

  function usageOf(gen: LocalGeneration) {
    const completionTokens = gen.choices.reduce((a, c) => a + c.tokenIds.length, 0);
    return {
      prompt_tokens: gen.promptTokens,
      completion_tokens: completionTokens,
      total_tokens: gen.promptTokens + completionTokens,
    };
  }

  /**
   * A stream fed token by token from the engine: each token is sent as it comes (its text piece
   * from the policy's incremental decoder, its log-prob, its id); when the request completes, the
   * text held back (a character split over tokens, a possible stop-string start) and the finish
   * chunks follow. Headers go out with the first token, so a request that fails before it still
   * gets a JSON error with its status.
   */
  function liveStream(res: ServerResponse, chat: ChatRequest, id: string, version: () => number | undefined) {
    const send = chunkSender(res, id, version);
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
            ? { content: [tokenEntry(tokenId, logprob, [], chat.tokensAsIds)], refusal: null }
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

  /** The whole completion at once, in the chunk format (used when top_logprobs needs the finished completion). */
  function replyStream(
    res: ServerResponse,
    chat: ChatRequest,
    id: string,
    gen: LocalGeneration,
    version: number,
  ): void {
    res.writeHead(200, { ...SSE_HEADERS, [WEIGHT_VERSION_HEADER]: String(version) });
    const send = chunkSender(res, id, () => version);
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
      const ps = pieces(c);
      ps.forEach((piece, k) => {
        send([
          {
            index,
            delta: { content: piece },
            logprobs: chat.logprobs ? { content: [logprobEntry(c, k, chat.tokensAsIds)], refusal: null } : null,
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

  async function chatCompletions(req: IncomingMessage, res: ServerResponse, hooks: ChatHooks = {}): Promise<void> {
    let raw = await readBody(req, maxBodyBytes);
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
    const live = chat.stream && chat.topLogprobs === 0 && !chat.tools ? liveStream(res, chat, id, () => version) : null;
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
    else if (chat.stream) replyStream(res, chat, id, gen, v);
    else replyJson(res, chat, id, gen, v);
  }

  /** PUT: take pushed weights and switch to them between requests; GET: the version served (src/serve/weights.ts). */
  async function adminWeights(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    adminKey: string,
  ): Promise<void> {
    if (method !== 'PUT' && method !== 'GET')
      throw new ApiError(
        405,
        `${method} is not allowed on /admin/weights; use PUT or GET`,
        'invalid_request_error',
        null,
        'method_not_allowed',
        { allow: 'PUT, GET' },
      );
    try {
      checkKey(req, adminKey);
    } catch (err) {
      req.resume();
      throw err;
    }
    if (method === 'GET')
      return sendJson(
        res,
        200,
        { weight_version: weights.version, requests_sampling: weights.readers },
        { [WEIGHT_VERSION_HEADER]: String(weights.version) },
      );
    if (closing) {
      req.resume();
      throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down');
    }
    const body = await readBody(req, maxWeightBytes);
    const t0 = performance.now();
    const push = decodeWeights(policy.model, body);
    const waiting = weights.readers;
    await weights.swap(push.version, () => applyWeights(policy.model, push.tensors));
    log?.(
      `weights: version ${push.version} (${push.kind}, ${push.tensors.size} tensors, ${(body.byteLength / MiB).toFixed(1)} MiB) after ${waiting} running request(s), ${(performance.now() - t0).toFixed(0)} ms`,
    );
    sendJson(
      res,
      200,
      {
        weight_version: push.version,
        kind: push.kind,
        tensors: push.tensors.size,
        bytes: body.byteLength,
        waited_for: waiting,
      },
      { [WEIGHT_VERSION_HEADER]: String(push.version) },
    );
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const allow = (methods: string) => {
      if (!methods.split(', ').includes(method))
        throw new ApiError(
          405,
          `${method} is not allowed on ${url}; use ${methods}`,
          'invalid_request_error',
          null,
          'method_not_allowed',
          { allow: methods },
        );
    };
    if (options.routes && (await options.routes(req, res, url, { chatCompletions }))) return;
    if (url === '/health') {
      allow('GET');
      return sendJson(res, 200, {
        status: closing ? 'closing' : 'ok',
        model: modelName,
        batching,
        weight_version: weights.version,
        queue: queue.stats(),
        engine: engineStats(),
      });
    }
    if (url === '/admin/weights' && options.adminKey !== undefined)
      return adminWeights(req, res, method, options.adminKey);
    if (!url.startsWith('/v1/') && url !== '/v1')
      throw new ApiError(
        404,
        `no route ${method} ${url} (this server answers /v1/models and /v1/chat/completions)`,
        'not_found_error',
        null,
        'unknown_url',
      );
    if (options.apiKey !== undefined) checkKey(req, options.apiKey);
    if (closing) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down');
    if (url === '/v1/models') {
      allow('GET');
      return sendJson(res, 200, { object: 'list', data: [modelObject()] });
    }
    if (url.startsWith('/v1/models/')) {
      allow('GET');
      const id = decodeURIComponent(url.slice('/v1/models/'.length));
      if (id !== modelName)
        throw new ApiError(404, `The model \`${id}\` does not exist`, 'not_found_error', 'model', 'model_not_found');
      return sendJson(res, 200, modelObject());
    }
    if (url === '/v1/chat/completions') {
      allow('POST');
      return chatCompletions(req, res);
    }
    throw new ApiError(
      404,
      `no route ${method} ${url} (this server answers /v1/models and /v1/chat/completions)`,
      'not_found_error',
      null,
      'unknown_url',
    );
  }

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
      if (closing) return;
      closing = true;
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
