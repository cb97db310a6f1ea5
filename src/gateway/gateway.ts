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
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, sendJson } from '../serve/errors.js';
import type { ServeHandle, ServeOptions, ServeRouteApi } from '../serve/server.js';
import type { WeightSwitch } from '../serve/weights.js';
import type { LocalPolicy } from '../rollout/local.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { adminRoute } from './admin.js';
import { type ChatContext, chatHooks } from './chat.js';
import { acceptEvent } from './events.js';
import {
  type AttemptEndpoint,
  type AttemptRecord,
  type FinishInfo,
  type GatewayStats,
  finishRecord,
} from './records.js';
import { keyOk, MiB } from './request.js';

// The record types lived here before the split; they stay importable from this module.
export type {
  AttemptEndpoint,
  AttemptRecord,
  AttemptStatus,
  FinishInfo,
  GatewayEvent,
  GatewayStats,
  RecordedCall,
  RecordedChoice,
} from './records.js';
export { attemptToJson } from './records.js';

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

const ID_RE = /^[A-Za-z0-9._~-]{1,128}$/;
const ROUTE_RE = /^\/rollouts\/([^/]+)\/attempts\/([^/]+)(\/.*)?$/;

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
  private readonly counters = { calls: 0, events: 0, refused: 0 };
  private nextRollout = 0;
  /** What the per-request chat hooks read of this gateway (src/gateway/chat.ts). */
  private readonly chat: ChatContext;

  constructor(private readonly options: GatewayOptions = {}) {
    this.maxEventBytes = options.maxEventBytes ?? MiB;
    this.maxEvents = options.maxEventsPerAttempt ?? 1024;
    this.chat = {
      tokenizer: () => this.tokenizer,
      modelName: () => this.modelName,
      seed: options.seed,
      reuseSampledIds: options.reuseSampledIds,
      toolResponse: options.toolResponse,
      log: options.log,
      countCall: () => {
        this.counters.calls++;
      },
    };
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
    return finishRecord(rec, info);
  }

  /** Forget a rollout's finished attempts (or one of them) after training on them, so memory stays bounded. */
  release(rolloutId: string, attemptId?: string): void {
    for (const [k, r] of this.attemptsById)
      if (r.rolloutId === rolloutId && (attemptId === undefined || r.attemptId === attemptId) && r.status !== 'running')
        this.attemptsById.delete(k);
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
      return adminRoute(this, this.maxEventBytes, req, res, method, url, rolloutId, attemptId, rest);
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
      return api.chatCompletions(req, res, chatHooks(this.chat, rec));
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

  /** An agent's event, checked (src/gateway/events.ts) and appended; the reply names it. */
  private async event(req: IncomingMessage, res: ServerResponse, rec: AttemptRecord): Promise<void> {
    const event = await acceptEvent(req, rec, { maxEventBytes: this.maxEventBytes, maxEvents: this.maxEvents });
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
