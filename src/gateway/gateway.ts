/**
 * The training gateway: Agent Lightning's runner contract on top of `vqalab serve`.
 *
 * An agent is ordinary code that talks to an OpenAI-compatible endpoint. Each rollout attempt
 * gets its own base URL and event URL on the serve HTTP server (mounted through `serve({ routes })`):
 *
 *   POST /rollouts/{rollout}/attempts/{attempt}/v1/chat/completions   (JSON or stream: true)
 *   GET  /rollouts/{rollout}/attempts/{attempt}/v1/models
 *   POST /rollouts/{rollout}/attempts/{attempt}/events                {"event_type": "reward", "data": {"value": n}}
 *
 * Every request carries `Authorization: Bearer <AGL_KEY>`, the attempt's own key. Each chat
 * completion made under an attempt is recorded token-exactly as the engine saw and produced it:
 * the prompt ids (image pad tokens included) with the processed images, each choice's completion
 * ids (the stop token included) and its sampling log-probs, and the weight version that sampled
 * it. Events are kept in order; the attempt's reward is its last reward event. An attempt that the
 * runner closes without a reward is failed, with the agent's stderr tail as the reason.
 *
 * Hostile input gets a clear OpenAI-shaped error and leaves the gateway serving: an unknown
 * attempt (404), a missing or wrong key (401), a finished attempt (409), a body over the event
 * limit (413, connection closed), invalid JSON or a reward that is not a finite number (400;
 * JSON has no NaN, so `{"value": NaN}` is named as such).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ImageInput, Prompt } from '../engine/types.js';
import type { ChatMessage } from '../text/tokenizer.js';
import { ApiError, badRequest, sendJson } from '../serve/errors.js';
import type { ChatHooks, ServeHandle, ServeOptions, ServeRouteApi } from '../serve/server.js';
import type { ChatRequest } from '../serve/protocol.js';
import type { WeightSwitch } from '../serve/weights.js';
import type { LocalGeneration, LocalPolicy } from '../rollout/local.js';
import type { VlmTokenizer } from '../text/tokenizer.js';

const MiB = 1 << 20;

/** One choice of a recorded call, as sampled. */
export interface RecordedChoice {
  text: string;
  /** Completion ids as the engine produced them; a stop token that ended it is the last one. */
  tokenIds: Int32Array;
  /** Log-prob of each id under the sampling (temperature-1, unfiltered) policy. */
  logprobs: Float32Array;
  finishReason: 'stop' | 'length';
}

/** One chat completion made under an attempt. */
export interface RecordedCall {
  /** Position among the attempt's calls (completion order). */
  index: number;
  /** The reply's id (chatcmpl-...). */
  id: string;
  /** The conversation as the chat template saw it (images as placeholders). */
  messages: ChatMessage[];
  /** The prompt as the engine saw it: ids with each image's pad tokens, and the processed images. */
  prompt: Prompt;
  /**
   * The chat template's ids for the conversation as sent (text re-encoded). They differ from
   * `prompt.ids` where an earlier answer of the attempt came back and its sampled ids were put back.
   */
  templateIds: Int32Array;
  choices: RecordedChoice[];
  sampling: {
    n: number;
    temperature: number;
    topP: number;
    topK: number;
    maxTokens: number | undefined;
    seed: number | undefined;
    stream: boolean;
  };
  /** The weight version that sampled the call (the server's, see Gateway.weightVersion); the weights cannot change during a call. */
  weightVersion: number;
  /** ms since the epoch, when the reply was ready. */
  at: number;
}

export interface GatewayEvent {
  eventId: string;
  eventType: string;
  data: Record<string, unknown>;
  /** ms since the epoch. */
  timestamp: number;
}

export type AttemptStatus = 'running' | 'succeeded' | 'failed';

export interface AttemptRecord {
  rolloutId: string;
  attemptId: string;
  status: AttemptStatus;
  /** The task the attempt ran (the dataset row), as given to openAttempt. */
  task?: unknown;
  /**
   * The weight version the attempt is bound to (openAttempt's `weightVersion`): its calls are
   * sampled by that version or refused (409 `stale_weights`). Undefined: any version, recorded per call.
   */
  weightVersion?: number;
  calls: RecordedCall[];
  events: GatewayEvent[];
  /** The last reward event's value; undefined until one arrives. */
  reward?: number;
  /** Why the attempt failed. */
  error?: string;
  exitCode?: number | null;
  signal?: string | null;
  timedOut?: boolean;
  stdoutTail?: string;
  stderrTail?: string;
  startedAt: number;
  endedAt?: number;
}

/** What an agent process needs to reach its attempt (Agent Lightning's variable names). */
export interface AttemptEndpoint {
  rolloutId: string;
  attemptId: string;
  /** AGL_OPENAI_BASE_URL: ends in /v1. */
  baseUrl: string;
  /** AGL_EVENT_URL. */
  eventUrl: string;
  /** AGL_KEY: this attempt's bearer key. */
  key: string;
  record: AttemptRecord;
}

export interface FinishInfo {
  exitCode?: number | null;
  signal?: string | null;
  timedOut?: boolean;
  /** A failure found by the runner (spawn error, timeout), reported as the attempt's error. */
  error?: string;
  stdoutTail?: string;
  stderrTail?: string;
}

export interface GatewayOptions {
  /** Largest event body (default 1 MiB). Larger ones get 413 and their connection closed. */
  maxEventBytes?: number;
  /** Most events one attempt may post (default 1024). */
  maxEventsPerAttempt?: number;
  /** One key for every attempt instead of a fresh random key per attempt. */
  key?: string;
  /**
   * Messages with role "tool" (tool results an agent sends back) become user turns whose text is
   * wrapped in this prefix/suffix, one turn each. Default: none — the server takes tool messages
   * natively in Qwen's format (consecutive results in one user turn, each in
   * `<tool_response>\n` … `\n</tool_response>`; src/serve/tools.ts).
   */
  toolResponse?: { prefix: string; suffix: string };
  /**
   * Reproducible runs: a call that sends no `seed` gets one derived from this number, its rollout
   * and attempt ids and its position among the attempt's calls (sampling is a pure function of
   * the weights, the prompt, the options and the seed). Default: none (the server draws one).
   */
  seed?: number;
  /**
   * When a conversation sends back an answer this attempt got, verbatim, the engine continues from
   * the ids it sampled for it rather than from the text re-encoded (which can differ: a byte split
   * over tokens decodes to U+FFFD and re-encodes as other ids, BPE merges differently). The model
   * then sees its own tokens, and the attempt's calls form one sequence. Default true.
   */
  reuseSampledIds?: boolean;
  /**
   * Enables the admin routes for a runner in another process (another machine): with
   * `Authorization: Bearer <adminKey>`, POST /rollouts/{r}/attempts/{a} opens an attempt (its
   * URLs and key come back), POST …/finish closes it (exit code, stderr tail), GET …/ returns its
   * record as JSON (token ids, log-probs, image grids, weight versions, events). Default: none.
   */
  adminKey?: string;
  log?: (line: string) => void;
}

/** An attempt's record as JSON (the admin route's reply): ids and log-probs as arrays, images as their grids. */
export function attemptToJson(rec: AttemptRecord): Record<string, unknown> {
  return {
    rollout_id: rec.rolloutId,
    attempt_id: rec.attemptId,
    status: rec.status,
    reward: rec.reward ?? null,
    error: rec.error ?? null,
    weight_version: rec.weightVersion ?? null,
    exit_code: rec.exitCode ?? null,
    timed_out: rec.timedOut ?? false,
    stdout_tail: rec.stdoutTail ?? null,
    stderr_tail: rec.stderrTail ?? null,
    started_at: rec.startedAt / 1000,
    ended_at: rec.endedAt === undefined ? null : rec.endedAt / 1000,
    events: rec.events.map((e) => ({
      event_id: e.eventId,
      event_type: e.eventType,
      data: e.data,
      timestamp: e.timestamp / 1000,
    })),
    calls: rec.calls.map((c) => ({
      index: c.index,
      id: c.id,
      weight_version: c.weightVersion,
      messages: c.messages,
      sampling: c.sampling,
      prompt_ids: Array.from(c.prompt.ids),
      template_ids: Array.from(c.templateIds),
      images: c.prompt.images.map((im) => ({ grid_thw: im.gridThw })),
      choices: c.choices.map((ch) => ({
        text: ch.text,
        token_ids: Array.from(ch.tokenIds),
        logprobs: Array.from(ch.logprobs),
        finish_reason: ch.finishReason,
      })),
    })),
  };
}

/** FNV-1a over a string, as a seed below 2^47. */
function seedOf(text: string): number {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(text, 'utf8')) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return Number(h & ((1n << 47n) - 1n));
}

export interface GatewayStats {
  attemptsOpen: number;
  attemptsSucceeded: number;
  attemptsFailed: number;
  calls: number;
  events: number;
  /** Requests refused (any 4xx) on per-attempt routes. */
  refused: number;
}

const ID_RE = /^[A-Za-z0-9._~-]{1,128}$/;
const ROUTE_RE = /^\/rollouts\/([^/]+)\/attempts\/([^/]+)(\/.*)?$/;

function keyOk(req: IncomingMessage, key: string): 'missing' | 'wrong' | 'ok' {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return 'missing';
  const a = Buffer.from(m[1]!.trim()),
    b = Buffer.from(key);
  return a.length === b.length && timingSafeEqual(a, b) ? 'ok' : 'wrong';
}

/**
 * Read at most `max` bytes; more is 413. A body up to 16× the limit is read to its end first (and
 * dropped), so the client, still sending, gets the 413 rather than a reset connection; a larger
 * one is cut off.
 */
function readLimited(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (n: number) =>
      new ApiError(
        413,
        `the event body is ${n > 0 ? `${(n / MiB).toFixed(1)} MiB` : 'too large'}, more than the gateway's limit of ${(max / MiB).toFixed(2)} MiB`,
        'invalid_request_error',
        null,
        'request_too_large',
        { connection: 'close' },
      );
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > 16 * max) {
      req.resume();
      return reject(tooLarge(declared));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        if (!over) {
          over = true;
          chunks.length = 0;
        }
        if (size > 16 * max) req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => (over ? reject(tooLarge(size)) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

function tail(text: string, max = 2000): string {
  return text.length > max ? `…${text.slice(-max)}` : text;
}

export class Gateway {
  /** Pass to `serve({ routes: gateway.routes })`. */
  readonly routes: NonNullable<ServeOptions['routes']>;
  private ownVersion = 0;
  private weights: WeightSwitch | undefined;

  /**
   * The version of the weights now being served: the attached server's (`ServeHandle.weights`,
   * moved by a weight push or by a trainer in this process), recorded with every call. The
   * in-process trainer sets it after each update (no request samples then), so a recorded call can
   * be checked to come from the weights being trained.
   */
  get weightVersion(): number {
    return this.weights ? this.weights.version : this.ownVersion;
  }

  set weightVersion(v: number) {
    if (this.weights) this.weights.version = v;
    else this.ownVersion = v;
  }

  private readonly attemptsById = new Map<string, AttemptRecord & { key: string }>();
  private origin: string | undefined;
  private tokenizer: VlmTokenizer | undefined;
  private modelName = 'vqalab';
  private readonly maxEventBytes: number;
  private readonly maxEvents: number;
  private readonly toolResponse: { prefix: string; suffix: string } | undefined;
  private readonly counters = { calls: 0, events: 0, refused: 0 };
  private nextRollout = 0;

  constructor(private readonly options: GatewayOptions = {}) {
    this.maxEventBytes = options.maxEventBytes ?? MiB;
    this.maxEvents = options.maxEventsPerAttempt ?? 1024;
    this.toolResponse = options.toolResponse;
    this.routes = (req, res, url, api) => this.route(req, res, url, api);
  }

  /**
   * Learn the server's address (for the URLs given to agents), its model name and the policy's
   * tokenizer (to put sampled ids back, see `reuseSampledIds`).
   */
  attach(
    handle: Pick<ServeHandle, 'url' | 'modelName'> & Partial<Pick<ServeHandle, 'weights'>>,
    policy?: Pick<LocalPolicy, 'tokenizer'>,
  ): this {
    this.origin = handle.url.replace(/\/v1$/, '');
    this.modelName = handle.modelName;
    if (handle.weights) {
      if (this.ownVersion !== 0 && handle.weights.version === 0) handle.weights.version = this.ownVersion;
      this.weights = handle.weights;
    }
    if (policy) this.tokenizer = policy.tokenizer;
    return this;
  }

  private static keyOf(rolloutId: string, attemptId: string): string {
    return `${rolloutId}\u0000${attemptId}`;
  }

  /**
   * Open an attempt: its URLs and key for the agent's environment. Ids default to fresh ones.
   * `weightVersion` binds it to the weights of that version: a call made when the server serves
   * another one is refused (409 `stale_weights`) rather than sampled off-policy.
   */
  openAttempt(
    o: { rolloutId?: string; attemptId?: string; task?: unknown; weightVersion?: number } = {},
  ): AttemptEndpoint {
    if (!this.origin) throw new Error('Gateway.openAttempt: attach(serveHandle) first, so the gateway knows its URL');
    const rolloutId = o.rolloutId ?? `ro-${(this.nextRollout++).toString(36)}-${randomBytes(4).toString('hex')}`;
    const attemptId = o.attemptId ?? `at-${randomBytes(6).toString('hex')}`;
    for (const [name, v] of [
      ['rolloutId', rolloutId],
      ['attemptId', attemptId],
    ] as const) {
      if (!ID_RE.test(v))
        throw new TypeError(`Expected ${name} of 1-128 characters [A-Za-z0-9._~-] but received ${JSON.stringify(v)}`);
    }
    const k = Gateway.keyOf(rolloutId, attemptId);
    if (this.attemptsById.has(k)) throw new Error(`attempt ${attemptId} of rollout ${rolloutId} already exists`);
    if (o.weightVersion !== undefined && !(Number.isInteger(o.weightVersion) && o.weightVersion >= 0)) {
      throw new TypeError(`Expected weightVersion (an integer >= 0) but received ${JSON.stringify(o.weightVersion)}`);
    }
    const key = this.options.key ?? `agl-${randomBytes(24).toString('base64url')}`;
    const record: AttemptRecord & { key: string } = {
      rolloutId,
      attemptId,
      status: 'running',
      task: o.task,
      ...(o.weightVersion !== undefined ? { weightVersion: o.weightVersion } : {}),
      calls: [],
      events: [],
      startedAt: Date.now(),
      key,
    };
    Object.defineProperty(record, 'key', { enumerable: false }); // never serialised with the record
    this.attemptsById.set(k, record);
    const base = `${this.origin}/rollouts/${rolloutId}/attempts/${attemptId}`;
    return { rolloutId, attemptId, baseUrl: `${base}/v1`, eventUrl: `${base}/events`, key, record };
  }

  /** The record of an attempt (undefined when unknown or released). */
  attempt(rolloutId: string, attemptId: string): AttemptRecord | undefined {
    return this.attemptsById.get(Gateway.keyOf(rolloutId, attemptId));
  }

  /** Every attempt held, in opening order. */
  attempts(): AttemptRecord[] {
    return [...this.attemptsById.values()];
  }

  /**
   * Close an attempt after its agent exited: succeeded when it posted a reward and exited with 0;
   * otherwise failed, with the reason (no reward, exit code, timeout) and the stderr tail.
   */
  finishAttempt(rolloutId: string, attemptId: string, info: FinishInfo = {}): AttemptRecord {
    const rec = this.attemptsById.get(Gateway.keyOf(rolloutId, attemptId));
    if (!rec) throw new Error(`unknown attempt ${attemptId} of rollout ${rolloutId}`);
    if (rec.status !== 'running') return rec;
    rec.exitCode = info.exitCode ?? null;
    rec.signal = info.signal ?? null;
    rec.timedOut = info.timedOut ?? false;
    if (info.stdoutTail !== undefined) rec.stdoutTail = tail(info.stdoutTail);
    if (info.stderrTail !== undefined) rec.stderrTail = tail(info.stderrTail);
    rec.endedAt = Date.now();
    const how = info.timedOut
      ? 'was stopped after its timeout'
      : info.signal
        ? `was killed by ${info.signal}`
        : `exited with code ${info.exitCode ?? '?'}`;
    const stderr = rec.stderrTail?.trim() ? `; stderr tail:\n${rec.stderrTail.trim()}` : '; its stderr was empty';
    if (info.error) {
      rec.status = 'failed';
      rec.error = `${info.error}${stderr}`;
    } else if (rec.reward === undefined) {
      rec.status = 'failed';
      rec.error = `the agent ${how} without posting a reward (${rec.calls.length} call${rec.calls.length === 1 ? '' : 's'} recorded)${stderr}`;
    } else if (info.timedOut || info.signal || info.exitCode !== 0) {
      rec.status = 'failed';
      rec.error = `the agent posted a reward but ${how}${stderr}`;
    } else {
      rec.status = 'succeeded';
    }
    return rec;
  }

  /** Forget a rollout's attempts (after training on them) so memory stays bounded. */
  release(rolloutId: string): void {
    for (const [k, r] of this.attemptsById)
      if (r.rolloutId === rolloutId && r.status !== 'running') this.attemptsById.delete(k);
  }

  stats(): GatewayStats {
    let open = 0,
      ok = 0,
      failed = 0;
    for (const r of this.attemptsById.values()) {
      if (r.status === 'running') open++;
      else if (r.status === 'succeeded') ok++;
      else failed++;
    }
    return { attemptsOpen: open, attemptsSucceeded: ok, attemptsFailed: failed, ...this.counters };
  }

  // ───────────────────────── routes ─────────────────────────

  private async route(req: IncomingMessage, res: ServerResponse, url: string, api: ServeRouteApi): Promise<boolean> {
    if (!url.startsWith('/rollouts/') && url !== '/rollouts') return false;
    try {
      await this.routeAttempt(req, res, url, api);
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) this.counters.refused++;
      throw err;
    }
    return true;
  }

  private async routeAttempt(
    req: IncomingMessage,
    res: ServerResponse,
    url: string,
    api: ServeRouteApi,
  ): Promise<void> {
    const m = ROUTE_RE.exec(url);
    const method = req.method ?? 'GET';
    if (!m) {
      throw new ApiError(
        404,
        `no route ${method} ${url}; per-attempt routes are /rollouts/{rollout}/attempts/{attempt}/v1/chat/completions, /v1/models and /events`,
        'not_found_error',
        null,
        'unknown_url',
      );
    }
    let rolloutId: string, attemptId: string;
    try {
      rolloutId = decodeURIComponent(m[1]!);
      attemptId = decodeURIComponent(m[2]!);
    } catch {
      throw new ApiError(
        404,
        `no route ${method} ${url}: the rollout or attempt id is not valid percent-encoding`,
        'not_found_error',
        null,
        'unknown_url',
      );
    }
    const rest = m[3] ?? '';
    if (this.options.adminKey !== undefined && keyOk(req, this.options.adminKey) === 'ok')
      return this.admin(req, res, method, url, rolloutId, attemptId, rest);
    const rec = this.attemptsById.get(Gateway.keyOf(rolloutId, attemptId));
    if (!rec) {
      throw new ApiError(
        404,
        `unknown attempt ${JSON.stringify(attemptId)} of rollout ${JSON.stringify(rolloutId)}: it was never opened on this gateway, or it was released`,
        'not_found_error',
        null,
        'attempt_not_found',
      );
    }
    const auth = keyOk(req, rec.key);
    if (auth !== 'ok') {
      throw new ApiError(
        401,
        auth === 'missing'
          ? 'Missing key: send "Authorization: Bearer $AGL_KEY"'
          : `Incorrect key for attempt ${attemptId} of rollout ${rolloutId}: send this attempt's AGL_KEY`,
        'authentication_error',
        null,
        'invalid_api_key',
        { 'www-authenticate': 'Bearer' },
      );
    }
    const allow = (methods: string) => {
      if (method !== methods)
        throw new ApiError(
          405,
          `${method} is not allowed on ${url}; use ${methods}`,
          'invalid_request_error',
          null,
          'method_not_allowed',
          { allow: methods },
        );
    };
    const finished = () =>
      new ApiError(
        409,
        `attempt ${attemptId} of rollout ${rolloutId} is finished (${rec.status}); it takes no more calls or events`,
        'invalid_request_error',
        null,
        'attempt_finished',
      );
    if (rest === '/events') {
      allow('POST');
      if (rec.status !== 'running') {
        req.resume();
        throw finished();
      }
      return this.event(req, res, rec);
    }
    if (rest === '/v1/chat/completions') {
      allow('POST');
      if (rec.status !== 'running') {
        req.resume();
        throw finished();
      }
      return api.chatCompletions(req, res, this.hooks(rec));
    }
    if (rest === '/v1/models') {
      allow('GET');
      return sendJson(res, 200, {
        object: 'list',
        data: [{ id: this.modelName, object: 'model', created: Math.floor(rec.startedAt / 1000), owned_by: 'vqalab' }],
      });
    }
    throw new ApiError(
      404,
      `no route ${method} ${url}; this attempt answers ${url.slice(0, url.length - rest.length)}/v1/chat/completions, /v1/models and /events`,
      'not_found_error',
      null,
      'unknown_url',
    );
  }

  private async admin(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    url: string,
    rolloutId: string,
    attemptId: string,
    rest: string,
  ): Promise<void> {
    const body = async (): Promise<Record<string, unknown>> => {
      const raw = (await readLimited(req, this.maxEventBytes)).toString('utf8');
      if (raw.trim() === '') return {};
      let v: unknown;
      try {
        v = JSON.parse(raw);
      } catch (err) {
        throw badRequest(`the body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v))
        throw badRequest(`the body must be a JSON object; got ${typeName(v)}`, null, 'invalid_body');
      return v as Record<string, unknown>;
    };
    const rec = () => {
      const r = this.attemptsById.get(Gateway.keyOf(rolloutId, attemptId));
      if (!r)
        throw new ApiError(
          404,
          `unknown attempt ${JSON.stringify(attemptId)} of rollout ${JSON.stringify(rolloutId)}`,
          'not_found_error',
          null,
          'attempt_not_found',
        );
      return r;
    };
    if (rest === '' && method === 'POST') {
      const b = await body();
      if (this.attemptsById.has(Gateway.keyOf(rolloutId, attemptId))) {
        throw new ApiError(
          409,
          `attempt ${attemptId} of rollout ${rolloutId} already exists`,
          'invalid_request_error',
          null,
          'attempt_exists',
        );
      }
      let ep: AttemptEndpoint;
      try {
        ep = this.openAttempt({
          rolloutId,
          attemptId,
          task: b.task,
          ...(b.weight_version !== undefined && b.weight_version !== null
            ? { weightVersion: b.weight_version as number }
            : {}),
        });
      } catch (err) {
        throw badRequest((err as Error).message, null, 'invalid_value');
      }
      return sendJson(res, 201, {
        rollout_id: ep.rolloutId,
        attempt_id: ep.attemptId,
        base_url: ep.baseUrl,
        event_url: ep.eventUrl,
        key: ep.key,
        weight_version: ep.record.weightVersion ?? null,
        serving_version: this.weightVersion,
      });
    }
    if (rest === '' && method === 'GET') return sendJson(res, 200, attemptToJson(rec()));
    if (rest === '/finish' && method === 'POST') {
      const b = await body();
      const r = rec();
      const str = (k: string) => (typeof b[k] === 'string' ? (b[k] as string) : undefined);
      const done = this.finishAttempt(r.rolloutId, r.attemptId, {
        exitCode: typeof b.exit_code === 'number' ? b.exit_code : null,
        signal: str('signal') ?? null,
        timedOut: b.timed_out === true,
        error: str('error'),
        stdoutTail: str('stdout_tail'),
        stderrTail: str('stderr_tail'),
      });
      return sendJson(res, 200, attemptToJson(done));
    }
    throw new ApiError(
      404,
      `no admin route ${method} ${url}; use POST or GET /rollouts/{r}/attempts/{a}, POST …/finish`,
      'not_found_error',
      null,
      'unknown_url',
    );
  }

  /** The serve hooks of one request of an attempt: any model name, tool results as observations, sampled ids put back, record the generation. */
  private hooks(rec: AttemptRecord): ChatHooks {
    let templateIds: Int32Array | undefined;
    return {
      transformBody: (raw) => this.rewriteBody(rec, raw),
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
        return this.options.reuseSampledIds === false ? prompt : this.sampledIdsBack(rec, prompt);
      },
      onGeneration: ({ id, chat, prompt, generation, weightVersion }) =>
        this.record(rec, id, chat, prompt, templateIds ?? prompt.ids, generation, weightVersion),
    };
  }

  /**
   * The most recent call whose conversation this one continues with that call's first answer sent
   * back verbatim: its template ids, then the answer's text re-encoded, start the new template
   * ids. Those are replaced by the call's prompt as sampled and the answer's sampled ids (without
   * a final stop token: the template's own end-of-turn follows).
   */
  private sampledIdsBack(rec: AttemptRecord, prompt: Prompt): Prompt {
    const tok = this.tokenizer;
    if (!tok) return prompt;
    const q = prompt.ids;
    for (let k = rec.calls.length - 1; k >= 0; k--) {
      const call = rec.calls[k]!,
        choice = call.choices[0];
      if (!choice) continue;
      const t = call.templateIds;
      if (q.length <= t.length) continue;
      let same = true;
      for (let i = 0; i < t.length && same; i++) same = q[i] === t[i];
      if (!same) continue;
      const body =
        choice.finishReason === 'stop' &&
        choice.tokenIds.length > 0 &&
        tok.stopTokenIds.includes(choice.tokenIds[choice.tokenIds.length - 1]!)
          ? choice.tokenIds.subarray(0, choice.tokenIds.length - 1)
          : choice.tokenIds;
      // Only an answer whose ids decode to exactly the text sent: no stop string cut from it, no
      // special token in it (an image pad the model sampled would become an image slot).
      if (tok.decode(Array.from(body), { skipSpecialTokens: false }) !== choice.text) continue;
      const enc = tok.encode(choice.text);
      if (q.length < t.length + enc.length) continue;
      for (let i = 0; i < enc.length && same; i++) same = q[t.length + i] === enc[i];
      if (!same) continue;
      const ids = new Int32Array(call.prompt.ids.length + body.length + q.length - t.length - enc.length);
      ids.set(call.prompt.ids, 0);
      ids.set(body, call.prompt.ids.length);
      ids.set(q.subarray(t.length + enc.length), call.prompt.ids.length + body.length);
      return { ids, images: prompt.images };
    }
    return prompt;
  }

  /**
   * The request as the server checks it: JSON (else a clear 400), any `model` name taken as the
   * served model (agents send "auto" or their own), tool results as observations, a seed when asked.
   */
  private rewriteBody(rec: AttemptRecord, raw: Buffer): Buffer {
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return raw; // the server names the problem
    const b = this.withSeed(rec, this.toolMessages(body)) as Record<string, unknown>;
    return Buffer.from(
      JSON.stringify(typeof b.model === 'string' && b.model !== '' ? { ...b, model: this.modelName } : b),
      'utf8',
    );
  }

  /**
   * With the `toolResponse` option: tool results (role "tool") become user turns wrapped in its
   * prefix and suffix. Without it the server renders tools, tool calls and tool results itself
   * (Qwen's format, src/serve/tools.ts).
   */
  private toolMessages(body: unknown): unknown {
    if (!this.toolResponse || typeof body !== 'object' || body === null || Array.isArray(body)) return body;
    const b = body as Record<string, unknown>;
    if (
      !Array.isArray(b.messages) ||
      !b.messages.some((m) => typeof m === 'object' && m !== null && (m as { role?: unknown }).role === 'tool')
    )
      return body;
    const { prefix, suffix } = this.toolResponse;
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

  private withSeed(rec: AttemptRecord, body: unknown): unknown {
    if (this.options.seed === undefined || typeof body !== 'object' || body === null || Array.isArray(body))
      return body;
    const b = body as Record<string, unknown>;
    if (b.seed !== undefined && b.seed !== null) return body;
    return { ...b, seed: seedOf(`${this.options.seed}/${rec.rolloutId}/${rec.attemptId}/${rec.calls.length}`) };
  }

  private record(
    rec: AttemptRecord,
    id: string,
    chat: ChatRequest,
    prompt: Prompt,
    templateIds: Int32Array,
    gen: LocalGeneration,
    weightVersion: number,
  ): void {
    if (rec.status !== 'running') {
      this.options.log?.(`gateway: a call of attempt ${rec.attemptId} completed after it finished; not recorded`);
      return;
    }
    const images: ImageInput[] = prompt.images.slice();
    rec.calls.push({
      index: rec.calls.length,
      id,
      messages: chat.messages,
      prompt: { ids: Int32Array.from(prompt.ids), images },
      templateIds: Int32Array.from(templateIds),
      choices: gen.choices.map((c) => ({
        text: c.text,
        tokenIds: Int32Array.from(c.tokenIds),
        logprobs: Float32Array.from(c.logprobs),
        finishReason: c.finishReason,
      })),
      sampling: {
        n: chat.n,
        temperature: chat.temperature,
        topP: chat.topP,
        topK: chat.topK,
        maxTokens: chat.maxTokens,
        seed: chat.seed,
        stream: chat.stream,
      },
      weightVersion,
      at: Date.now(),
    });
    this.counters.calls++;
  }

  private async event(req: IncomingMessage, res: ServerResponse, rec: AttemptRecord): Promise<void> {
    const raw = await readLimited(req, this.maxEventBytes);
    const text = raw.toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      const bad = /(?<![A-Za-z"])(-?Infinity|NaN)(?![A-Za-z"])/.exec(text);
      if (bad)
        throw badRequest(
          `the event body has ${bad[1]}, which is not JSON; a reward must be a finite number`,
          'data.value',
          'invalid_reward',
        );
      throw badRequest(`the event body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw badRequest(
        `the event must be a JSON object {"event_type", "data"}; got ${typeName(body)}`,
        null,
        'invalid_body',
      );
    const ev = body as Record<string, unknown>;
    if (typeof ev.event_type !== 'string' || ev.event_type === '' || ev.event_type.length > 128) {
      throw badRequest(
        `event_type must be a non-empty string of at most 128 characters (e.g. "reward"); got ${ev.event_type === undefined ? 'nothing' : typeName(ev.event_type)}`,
        'event_type',
        ev.event_type === undefined ? 'missing_required_parameter' : 'invalid_type',
      );
    }
    const data = ev.data === undefined || ev.data === null ? {} : ev.data;
    if (typeof data !== 'object' || Array.isArray(data))
      throw badRequest(`data must be an object; got ${typeName(data)}`, 'data', 'invalid_type');
    const d = data as Record<string, unknown>;
    if (ev.event_type === 'reward') {
      const v = d.value;
      if (v === undefined)
        throw badRequest(
          'a reward event needs data.value (a finite number)',
          'data.value',
          'missing_required_parameter',
        );
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw badRequest(
          `data.value must be a finite number; got ${typeName(v)} ${JSON.stringify(v)?.slice(0, 40)}`,
          'data.value',
          'invalid_reward',
        );
      }
    }
    if (rec.events.length >= this.maxEvents)
      throw badRequest(
        `attempt ${rec.attemptId} already posted ${this.maxEvents} events, the most one attempt may`,
        null,
        'too_many_events',
      );
    const event: GatewayEvent = {
      eventId: `ev-${randomBytes(8).toString('hex')}`,
      eventType: ev.event_type,
      data: d,
      timestamp: Date.now(),
    };
    rec.events.push(event);
    if (event.eventType === 'reward') rec.reward = d.value as number;
    this.counters.events++;
    sendJson(res, 200, {
      event_id: event.eventId,
      rollout_id: rec.rolloutId,
      attempt_id: rec.attemptId,
      event_type: event.eventType,
      timestamp: event.timestamp / 1000,
    });
  }
}
