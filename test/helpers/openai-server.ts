/**
 * A real HTTP server on loopback that speaks the OpenAI chat-completions API, scriptable per test.
 * For testing anything that talks to an OpenAI-compatible endpoint (the LLM judge, the rollout
 * layer's OpenAIPolicy) without a network or a model.
 *
 * It answers `POST /v1/chat/completions` (JSON, or server-sent events when the request has
 * `stream: true`) and `GET /v1/models`, records every request, and takes its replies from a queue
 * of scripted {@link Reply}s (one per request, in order), then from a handler function, then from
 * `defaultReply`. With none of these it answers 500 "no reply scripted", so a test that forgets to
 * script fails loudly. Replies can be good answers (one per choice when the request asks for `n`),
 * HTTP errors (429 with Retry-After, 500, …), malformed bodies, slow or hanging responses, dropped
 * connections, or streams cut short.
 *
 * @example
 * const server = await startOpenAIServer();
 * server.enqueue({ status: 429, headers: { 'retry-after-ms': '50' } }, { content: 'Score: 8' });
 * const client = new OpenAI({ baseURL: server.url, apiKey: 'test' });
 * // ... run the code under test ...
 * assert.equal(server.requests.length, 2);
 * assert.equal(server.requests[1].body.model, 'judge');
 * await server.close();
 *
 * No side effects on import (the test runner loads every file under dist/test/).
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A request as the server received it. */
export interface RecordedRequest {
  /** 0-based arrival order. */
  index: number;
  method: string;
  /** Path without the query, e.g. "/v1/chat/completions". */
  path: string;
  headers: IncomingHttpHeaders;
  /** The JSON body, parsed (undefined when empty; the raw text when it is not JSON). */
  body: any;
  /** The raw body text. */
  rawBody: string;
  /** Arrival time (ms, performance.now()). */
  receivedAt: number;
}

/** A per-token log-probability, as the chat API reports it. */
export interface TokenLogprob {
  token: string;
  logprob: number;
}

/** A successful chat completion. */
export interface ChatReply {
  /** The assistant message; an array gives one per choice (else the same text for each of `n`). */
  content: string | null | (string | null)[];
  /** Per choice or for all (default "stop"). */
  finishReason?: string | string[];
  /** Per choice: token log-probs, returned when the request asks for `logprobs`. */
  logprobs?: TokenLogprob[][];
  /** Usage to report (default: rough counts from the text lengths). */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** Model name to report (default: the requested one). */
  model?: string;
  /** Wait this long before answering (ms). */
  delayMs?: number;
  /** Extra response headers. */
  headers?: Record<string, string>;
  /** Streaming only: characters per content chunk (default 4), wait between chunks, drop the connection after this many chunks. */
  chunkSize?: number;
  chunkDelayMs?: number;
  cutAfterChunks?: number;
}

/** An HTTP error response. */
export interface ErrorReply {
  status: number;
  /** OpenAI-style error object (default: a message naming the status). */
  error?: { message: string; type?: string; code?: string | null };
  /** A body to send instead of the error object (string sent as is). */
  body?: unknown;
  headers?: Record<string, string>;
  delayMs?: number;
}

/** A body sent verbatim (malformed JSON, wrong shapes, HTML from a proxy, …). */
export interface RawReply {
  raw: string;
  status?: number;
  contentType?: string;
  headers?: Record<string, string>;
  delayMs?: number;
}

/** Accept the request and never answer (until the client gives up or the server closes). */
export interface HangReply {
  hang: true;
}

/** Drop the connection without a response (after `delayMs`). */
export interface DropReply {
  drop: true;
  delayMs?: number;
}

export type Reply = ChatReply | ErrorReply | RawReply | HangReply | DropReply;

/** Computes a reply from the request (may be async). */
export type ReplyHandler = (request: RecordedRequest) => Reply | Promise<Reply>;

export interface OpenAIServerOptions {
  /** Replies for the first requests, in order. */
  replies?: (Reply | ReplyHandler)[];
  /** Used when the queue is empty. */
  handler?: ReplyHandler;
  /** Used when the queue is empty and there is no handler. */
  defaultReply?: Reply;
  /** Models listed by GET /v1/models (default ["test-model"]). */
  models?: string[];
  /** Port (default 0: any free port). Always binds 127.0.0.1. */
  port?: number;
}

export interface OpenAIServer {
  /** Base URL for an OpenAI client, ending in /v1, e.g. "http://127.0.0.1:41234/v1". */
  readonly url: string;
  readonly port: number;
  /** Every request received, in arrival order. */
  readonly requests: RecordedRequest[];
  /** Chat-completion requests only. */
  chatRequests(): RecordedRequest[];
  /** Append scripted replies to the queue. */
  enqueue(...replies: (Reply | ReplyHandler)[]): void;
  /** Replies still queued. */
  pending(): number;
  setHandler(handler: ReplyHandler | undefined): void;
  /** Forget recorded requests and queued replies. */
  reset(): void;
  /** Resolves when at least `n` requests have arrived (rejects after `timeoutMs`, default 5000). */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  /** Stop listening and drop open connections (hanging requests included). */
  close(): Promise<void>;
}

function roughTokens(text: string): number {
  return text.length === 0 ? 0 : Math.max(1, Math.ceil(text.length / 4));
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Start the server on 127.0.0.1. Close it in the test's `after`/`finally`. */
export async function startOpenAIServer(options: OpenAIServerOptions = {}): Promise<OpenAIServer> {
  const queue: (Reply | ReplyHandler)[] = [...(options.replies ?? [])];
  let handler = options.handler;
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const waiters: { n: number; resolve: () => void }[] = [];
  let counter = 0;
  const models = options.models ?? ['test-model'];

  async function chat(req: RecordedRequest, res: ServerResponse): Promise<void> {
    const next = queue.shift() ?? handler ?? options.defaultReply;
    const reply = typeof next === 'function' ? await next(req) : next;
    if (!reply) {
      sendJson(res, 500, {
        error: {
          message: `openai-server: no reply scripted for request #${req.index}`,
          type: 'server_error',
          code: null,
        },
      });
      return;
    }
    if ('hang' in reply) return; // the socket stays open until the client or close() ends it
    if ('delayMs' in reply && reply.delayMs) await wait(reply.delayMs);
    if ('drop' in reply) {
      res.socket?.destroy();
      return;
    }
    if ('raw' in reply) {
      res.writeHead(reply.status ?? 200, { 'content-type': reply.contentType ?? 'application/json', ...reply.headers });
      res.end(reply.raw);
      return;
    }
    if ('status' in reply) {
      const body =
        reply.body !== undefined
          ? reply.body
          : {
              error: {
                message: `scripted error ${reply.status}`,
                type: reply.status === 429 ? 'rate_limit_exceeded' : 'server_error',
                code: null,
                ...reply.error,
              },
            };
      if (typeof body === 'string') {
        res.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers });
        res.end(body);
      } else sendJson(res, reply.status, body, reply.headers);
      return;
    }
    const body = (req.body ?? {}) as {
      model?: string;
      n?: number;
      stream?: boolean;
      logprobs?: boolean;
      stream_options?: { include_usage?: boolean };
      messages?: { content?: unknown }[];
    };
    const n = Array.isArray(reply.content) ? reply.content.length : Math.max(1, Number(body.n ?? 1));
    const contents = Array.isArray(reply.content)
      ? reply.content
      : Array.from({ length: n }, () => reply.content as string | null);
    const finish = (i: number) =>
      (Array.isArray(reply.finishReason) ? reply.finishReason[i] : reply.finishReason) ?? 'stop';
    const model = reply.model ?? body.model ?? models[0]!;
    const id = `chatcmpl-test-${req.index}`;
    const created = Math.floor(Date.now() / 1000);
    const promptText = JSON.stringify(body.messages ?? []);
    const usage = reply.usage ?? {
      prompt_tokens: roughTokens(promptText),
      completion_tokens: contents.reduce((s, c) => s + roughTokens(c ?? ''), 0),
    };
    const logprobsOf = (i: number) =>
      body.logprobs && reply.logprobs?.[i]
        ? {
            content: reply.logprobs[i]!.map((t) => ({
              token: t.token,
              logprob: t.logprob,
              bytes: [...Buffer.from(t.token)],
              top_logprobs: [],
            })),
            refusal: null,
          }
        : null;

    if (!body.stream) {
      sendJson(
        res,
        200,
        {
          id,
          object: 'chat.completion',
          created,
          model,
          choices: contents.map((content, i) => ({
            index: i,
            message: { role: 'assistant', content, refusal: null },
            finish_reason: finish(i),
            logprobs: logprobsOf(i),
          })),
          usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
        },
        reply.headers,
      );
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      ...reply.headers,
    });
    const size = Math.max(1, reply.chunkSize ?? 4);
    let sent = 0;
    const event = async (data: unknown) => {
      if (reply.cutAfterChunks !== undefined && sent >= reply.cutAfterChunks) throw new Error('cut');
      res.write(`data: ${JSON.stringify(data)}\n\n`);
      sent++;
      if (reply.chunkDelayMs) await wait(reply.chunkDelayMs);
    };
    const chunk = (
      i: number,
      delta: Record<string, unknown>,
      finishReason: string | null,
      logprobs: unknown = null,
    ) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index: i, delta, finish_reason: finishReason, logprobs }],
    });
    try {
      for (let i = 0; i < contents.length; i++) {
        await event(chunk(i, { role: 'assistant', content: '' }, null));
        const text = contents[i] ?? '';
        const lp = logprobsOf(i);
        if (lp) {
          // One chunk per token, each with its log-prob, when the request asked for them.
          for (const t of lp.content)
            await event(chunk(i, { content: t.token }, null, { content: [t], refusal: null }));
        } else {
          for (let k = 0; k < text.length; k += size) await event(chunk(i, { content: text.slice(k, k + size) }, null));
        }
        await event(chunk(i, {}, finish(i)));
      }
      if (body.stream_options?.include_usage) {
        await event({
          id,
          object: 'chat.completion.chunk',
          created,
          model,
          choices: [],
          usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
        });
      }
      res.end('data: [DONE]\n\n');
    } catch {
      res.socket?.destroy();
    }
  }

  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = rawBody ? JSON.parse(rawBody) : undefined;
      } catch {
        body = rawBody;
      }
      const recorded: RecordedRequest = {
        index: counter++,
        method: req.method ?? 'GET',
        path: (req.url ?? '/').split('?')[0]!,
        headers: req.headers,
        body,
        rawBody,
        receivedAt: performance.now(),
      };
      requests.push(recorded);
      for (const w of [...waiters])
        if (requests.length >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      const route = recorded.path.replace(/\/+$/, '');
      let work: Promise<void>;
      if (req.method === 'POST' && (route === '/v1/chat/completions' || route === '/chat/completions'))
        work = chat(recorded, res);
      else if (req.method === 'GET' && (route === '/v1/models' || route === '/models')) {
        work = Promise.resolve(
          sendJson(res, 200, {
            object: 'list',
            data: models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'vqalab-test' })),
          }),
        );
      } else {
        work = Promise.resolve(
          sendJson(res, 404, {
            error: {
              message: `openai-server: no route ${req.method} ${recorded.path}`,
              type: 'invalid_request_error',
              code: null,
            },
          }),
        );
      }
      work.catch((err: unknown) => {
        if (!res.headersSent)
          sendJson(res, 500, {
            error: { message: `openai-server: ${(err as Error).message}`, type: 'server_error', code: null },
          });
        else res.socket?.destroy();
      });
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    port,
    requests,
    chatRequests: () => requests.filter((r) => r.path.endsWith('/chat/completions')),
    enqueue: (...replies) => {
      queue.push(...replies);
    },
    pending: () => queue.length,
    setHandler: (h) => {
      handler = h;
    },
    reset: () => {
      requests.length = 0;
      queue.length = 0;
      counter = 0;
    },
    waitForRequests: (n, timeoutMs = 5000) =>
      new Promise<void>((resolve, reject) => {
        if (requests.length >= n) return resolve();
        const t = setTimeout(
          () => reject(new Error(`openai-server: ${requests.length} of ${n} requests after ${timeoutMs} ms`)),
          timeoutMs,
        );
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
