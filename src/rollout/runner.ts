/**
 * Runners: the machinery between a batch of prompts and a server that can fail.
 *
 * - {@link RequestScheduler}: the per-endpoint gate every request of a policy goes through. It
 *   holds at most `concurrency` requests in flight, spaces them by a token-bucket rate limit,
 *   gives each attempt a timeout, retries timeouts, connection failures and 408/409/429/5xx with
 *   jittered exponential backoff (or exactly the server's Retry-After / retry-after-ms), pauses
 *   every request of the endpoint while a 429 asks it to, and stops at once on an AbortSignal.
 *   A slot is released while a request sleeps before its retry, so a failing request never blocks
 *   healthy ones.
 * - {@link runPool}: K workers (the seed's `--n-runners`) over a list of items; a failing item is
 *   recorded as that item's error, never the batch's.
 * - {@link rollout}: `runPool` over `policy.generate`, one result per sample.
 */
import OpenAI from 'openai';
import type { VqaSample } from '../data/types.js';
import { backoffDelayMs, isRetryableStatus, retryAfterMs, Semaphore, sleep as sleepOrAbort } from '../util/retry.js';
import { describeValue, expectInteger, expectNumber } from '../util/validate.js';
import type { Completion, Policy, SamplingOptions } from './types.js';

export interface RetryOptions {
  /** Retries after the first attempt (default 3). */
  maxRetries?: number;
  /** First backoff delay in ms, doubled per retry, with jitter in [½, 1] (default 500). */
  backoffMs?: number;
  /** Longest backoff; a Retry-After longer than this fails the request instead of waiting (default 30000). */
  maxBackoffMs?: number;
  /** Milliseconds one attempt may take before it is abandoned (and retried); default 60000. */
  timeoutMs?: number;
}

export interface SchedulerOptions extends RetryOptions {
  /** Requests in flight at once (default 8). */
  concurrency?: number;
  /** Requests started per second, on average (default: unlimited). */
  requestsPerSecond?: number;
  /** Requests that may start back to back before the rate applies (default max(1, requestsPerSecond)). */
  burst?: number;
}

/** Why a request failed, for the error recorded on a sample. */
export type RequestErrorKind = 'timeout' | 'http' | 'connection' | 'malformed' | 'cancelled' | 'other';

/** A request that failed for good (after its retries, or at once when not retryable). */
export class RequestError extends Error {
  constructor(
    message: string,
    readonly kind: RequestErrorKind,
    readonly attempts: number,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'RequestError';
  }
}

/** A reply the caller could not use (thrown by a request function to get it retried). */
export class MalformedReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedReplyError';
  }
}

/** Counters of one scheduler since it was made. */
export interface SchedulerStats {
  /** Attempts started (first tries and retries). */
  attempts: number;
  retries: number;
  /** Requests that succeeded / failed for good / were cancelled. */
  succeeded: number;
  failed: number;
  cancelled: number;
  timeouts: number;
  /** 429 replies seen. */
  rateLimited: number;
  /** Most requests in flight at once so far. */
  maxInFlight: number;
  /** Delays slept before retries, ms. */
  retryDelaysMs: number[];
}

/** What one successful request gives back. */
export interface Attempted<T> {
  value: T;
  /** Attempts it took (1 = no retry). */
  attempts: number;
  /** Milliseconds of the successful attempt (queueing and earlier attempts excluded). */
  latencyMs: number;
  /** Milliseconds from the call to the result (queueing, backoff and retries included). */
  totalMs: number;
}

export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error
    ? r
    : new RequestError(`cancelled${r === undefined ? '' : `: ${String(r)}`}`, 'cancelled', 0);
}

/** Resolves after `ms`, or rejects with the signal's reason (a {@link RequestError} "cancelled" when it is no Error). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return sleepOrAbort(ms, signal, abortReason);
}

class TimeoutMarker extends Error {
  constructor(ms: number) {
    super(`timed out after ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** HTTP status of an error from the `openai` package or one carrying `status`. */
function statusOf(err: unknown): number | undefined {
  if (err instanceof OpenAI.APIError) return err.status;
  const s = (err as { status?: unknown })?.status;
  return typeof s === 'number' ? s : undefined;
}

/** True for failures worth another attempt: timeouts, dropped connections, 408/409/429/5xx, malformed replies. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof TimeoutMarker || err instanceof MalformedReplyError) return true;
  if (err instanceof OpenAI.APIUserAbortError) return false;
  if (err instanceof OpenAI.APIConnectionError) return true;
  const s = statusOf(err);
  if (s !== undefined) return isRetryableStatus(s);
  return err instanceof OpenAI.APIError; // an API error without a status: the connection broke
}

function kindOf(err: unknown): RequestErrorKind {
  if (err instanceof TimeoutMarker || err instanceof OpenAI.APIConnectionTimeoutError) return 'timeout';
  if (err instanceof MalformedReplyError) return 'malformed';
  if (err instanceof OpenAI.APIConnectionError) return 'connection';
  if (statusOf(err) !== undefined) return 'http';
  return 'other';
}

/** One line for a failure: "HTTP 400: messages[0] ...", "timed out after 5000 ms", ... */
export function describeFailure(err: unknown): string {
  if (err instanceof TimeoutMarker) return err.message;
  if (err instanceof OpenAI.APIConnectionTimeoutError) return 'timed out';
  if (err instanceof OpenAI.APIConnectionError)
    return `connection failed (${(err.cause as Error | undefined)?.message ?? err.message})`;
  if (err instanceof OpenAI.APIError && err.status !== undefined) {
    const body = err.error as { message?: unknown } | undefined;
    const msg = typeof body?.message === 'string' ? body.message : err.message;
    return `HTTP ${err.status}${msg ? `: ${msg.replace(/^\d{3}\s+/, '').slice(0, 300)}` : ''}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}

function headersOf(err: unknown): Headers | undefined {
  const h = (err as { headers?: unknown })?.headers;
  return h instanceof Headers ? h : undefined;
}

/**
 * The gate for one endpoint: concurrency, rate, timeouts, retries, Retry-After, cancellation.
 * Share one scheduler among everything that talks to the same server.
 */
export class RequestScheduler {
  readonly concurrency: number;
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly maxRetries: number;
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  readonly timeoutMs: number;
  private readonly slots: Semaphore;
  private tokens: number;
  private refilledAt = performance.now();
  private rateChain: Promise<void> = Promise.resolve();
  /** performance.now() before which no attempt starts (a 429 asked everyone to wait). */
  private pausedUntil = 0;
  private readonly counters: SchedulerStats = {
    attempts: 0,
    retries: 0,
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    timeouts: 0,
    rateLimited: 0,
    maxInFlight: 0,
    retryDelaysMs: [],
  };

  constructor(options: SchedulerOptions = {}) {
    if (options === null || typeof options !== 'object')
      throw new TypeError(`Expected an options object for options but received ${describeValue(options)}`);
    this.concurrency =
      options.concurrency === undefined ? 8 : expectInteger('concurrency', options.concurrency, 1, 100_000);
    this.requestsPerSecond =
      options.requestsPerSecond === undefined
        ? Infinity
        : expectNumber('requestsPerSecond', options.requestsPerSecond, Number.MIN_VALUE);
    this.burst =
      options.burst === undefined
        ? Math.max(1, Number.isFinite(this.requestsPerSecond) ? this.requestsPerSecond : 1)
        : expectNumber('burst', options.burst, 1);
    this.maxRetries = options.maxRetries === undefined ? 3 : expectInteger('maxRetries', options.maxRetries, 0, 1000);
    this.backoffMs = options.backoffMs === undefined ? 500 : expectNumber('backoffMs', options.backoffMs, 0);
    this.maxBackoffMs =
      options.maxBackoffMs === undefined ? 30_000 : expectNumber('maxBackoffMs', options.maxBackoffMs, 0);
    this.timeoutMs = options.timeoutMs === undefined ? 60_000 : expectNumber('timeoutMs', options.timeoutMs, 1);
    this.slots = new Semaphore(this.concurrency, abortReason);
    this.tokens = this.burst;
  }

  stats(): SchedulerStats {
    return { ...this.counters, retryDelaysMs: [...this.counters.retryDelaysMs] };
  }

  /** Requests in flight now. */
  get inFlight(): number {
    return this.slots.inFlight;
  }

  /** Waits for a rate token (FIFO among waiters). */
  private takeToken(signal?: AbortSignal): Promise<void> {
    if (!Number.isFinite(this.requestsPerSecond)) return Promise.resolve();
    const turn = this.rateChain.then(async () => {
      for (;;) {
        const now = performance.now();
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) / 1000) * this.requestsPerSecond);
        this.refilledAt = now;
        if (this.tokens >= 1) {
          this.tokens -= 1;
          return;
        }
        await sleep(((1 - this.tokens) / this.requestsPerSecond) * 1000, signal);
      }
    });
    this.rateChain = turn.catch(() => undefined);
    return turn;
  }

  /**
   * Run `request` (given an AbortSignal that fires on timeout or cancellation) under the limits,
   * retrying what can be retried. Rejects with a {@link RequestError} (or the abort reason).
   */
  async run<T>(
    request: (signal: AbortSignal) => Promise<T>,
    options: { signal?: AbortSignal; timeoutMs?: number; maxRetries?: number } = {},
  ): Promise<Attempted<T>> {
    const signal = options.signal;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const maxRetries = options.maxRetries ?? this.maxRetries;
    const t0 = performance.now();
    let last: unknown;
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      try {
        if (attempt > 0) {
          const asked = retryAfterMs(headersOf(last));
          if (asked !== undefined && asked > this.maxBackoffMs) {
            throw new RequestError(
              `${describeFailure(last)}; the server asked to retry after ${Math.round(asked)} ms, more than maxBackoffMs ${this.maxBackoffMs}`,
              kindOf(last),
              attempt,
              statusOf(last),
              { cause: last },
            );
          }
          const delay = asked ?? backoffDelayMs(attempt, this.backoffMs, this.maxBackoffMs);
          this.counters.retries++;
          this.counters.retryDelaysMs.push(Math.round(delay));
          await sleep(delay, signal);
        }
        await this.slots.acquire(signal);
      } catch (err) {
        if (err instanceof RequestError) {
          this.counters.failed++;
          throw err;
        }
        this.counters.cancelled++;
        throw err;
      }
      try {
        const pause = this.pausedUntil - performance.now();
        if (pause > 0) await sleep(pause, signal);
        await this.takeToken(signal);
      } catch (err) {
        this.slots.release();
        this.counters.cancelled++;
        throw err;
      }
      this.counters.attempts++;
      this.counters.maxInFlight = Math.max(this.counters.maxInFlight, this.slots.inFlight);
      const controller = new AbortController();
      const onAbort = () => controller.abort(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const timer = setTimeout(() => controller.abort(new TimeoutMarker(timeoutMs)), timeoutMs);
      const started = performance.now();
      try {
        const value = await request(controller.signal);
        this.counters.succeeded++;
        const end = performance.now();
        return { value, attempts: attempt + 1, latencyMs: end - started, totalMs: end - t0 };
      } catch (err) {
        if (signal?.aborted) {
          this.counters.cancelled++;
          throw abortReason(signal);
        }
        // The abort we caused for a timeout surfaces as the client's abort error: name it a timeout.
        last =
          controller.signal.aborted && controller.signal.reason instanceof TimeoutMarker
            ? controller.signal.reason
            : err;
        if (kindOf(last) === 'timeout') this.counters.timeouts++;
        if (statusOf(last) === 429) {
          this.counters.rateLimited++;
          const asked = retryAfterMs(headersOf(last));
          if (asked !== undefined && asked <= this.maxBackoffMs)
            this.pausedUntil = Math.max(this.pausedUntil, performance.now() + asked);
        }
        if (!isRetryable(last)) {
          this.counters.failed++;
          throw new RequestError(describeFailure(last), kindOf(last), attempt + 1, statusOf(last), { cause: last });
        }
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.slots.release();
      }
    }
    this.counters.failed++;
    throw new RequestError(
      `gave up after ${maxRetries + 1} attempt(s): ${describeFailure(last)}`,
      kindOf(last),
      maxRetries + 1,
      statusOf(last),
      { cause: last },
    );
  }
}

/** One item's outcome in a pool. */
export type PoolResult<R> = { ok: true; value: R; ms: number } | { ok: false; error: Error; ms: number };

export interface PoolOptions<T, R> {
  /** Workers running at once (the seed's --n-runners; default 4). */
  concurrency?: number;
  /** Stop starting items; items not started get a `cancelled` error. In-flight items see the signal through `worker`. */
  signal?: AbortSignal;
  /** Called as each item finishes (in completion order). */
  onResult?: (result: PoolResult<R>, item: T, index: number) => void;
}

/**
 * Run `worker` over `items` with at most `concurrency` at once. Never rejects: each item gets
 * its value or its error, in input order.
 */
export async function runPool<T, R>(
  items: readonly T[],
  worker: (item: T, index: number, signal: AbortSignal | undefined) => Promise<R>,
  options: PoolOptions<T, R> = {},
): Promise<PoolResult<R>[]> {
  if (!Array.isArray(items)) throw new TypeError(`Expected an array for items but received ${describeValue(items)}`);
  const concurrency =
    options.concurrency === undefined ? 4 : expectInteger('concurrency', options.concurrency, 1, 100_000);
  const results: PoolResult<R>[] = new Array(items.length);
  let next = 0;
  const one = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      const t0 = performance.now();
      let r: PoolResult<R>;
      if (options.signal?.aborted) {
        r = { ok: false, error: new RequestError('cancelled before it started', 'cancelled', 0), ms: 0 };
      } else {
        try {
          r = { ok: true, value: await worker(items[i]!, i, options.signal), ms: performance.now() - t0 };
        } catch (err) {
          r = { ok: false, error: err instanceof Error ? err : new Error(String(err)), ms: performance.now() - t0 };
        }
      }
      results[i] = r;
      try {
        options.onResult?.(r, items[i]!, i);
      } catch (err) {
        process.emitWarning(`runPool onResult failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, one));
  return results;
}

/** One sample's rollout. */
export interface RolloutResult {
  sample: VqaSample;
  /** The completions; when the whole call failed, one completion with finishReason 'error'. */
  completions: Completion[];
  /** Wall time of the generate call, ms. */
  ms: number;
  /** Set when generate threw (cancellation included). */
  error?: string;
}

export interface RolloutOptions {
  /** Samples generated at once (default 4). A policy may limit its requests further (OpenAIPolicy's scheduler). */
  nRunners?: number;
  signal?: AbortSignal;
  onResult?: (result: RolloutResult, index: number) => void;
}

/**
 * Generate completions for every sample with K runners. One failing sample (or request) is
 * recorded on that sample; the batch always completes (cancelled samples say so).
 */
export async function rollout(
  policy: Policy,
  samples: readonly VqaSample[],
  sampling: Omit<SamplingOptions, 'signal'>,
  options: RolloutOptions = {},
): Promise<RolloutResult[]> {
  if (!policy || typeof policy.generate !== 'function')
    throw new TypeError(`Expected a Policy for policy but received ${describeValue(policy)}`);
  const toResult = (r: PoolResult<Completion[]>, sample: VqaSample): RolloutResult =>
    r.ok
      ? { sample, completions: r.value, ms: r.ms }
      : {
          sample,
          completions: [{ text: '', finishReason: 'error', error: r.error.message }],
          ms: r.ms,
          error: r.error.message,
        };
  const pooled = await runPool(samples, (sample, _i, signal) => policy.generate(sample, { ...sampling, signal }), {
    concurrency: options.nRunners ?? 4,
    signal: options.signal,
    onResult: (r, sample, i) => options.onResult?.(toResult(r, sample), i),
  });
  return pooled.map((r, i) => toResult(r, samples[i]!));
}
