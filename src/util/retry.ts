/**
 * The one retry policy for HTTP clients (the request scheduler of src/rollout/runner.ts and the
 * LLM judge of src/reward/judge.ts): which failures are worth another attempt, how long to wait
 * (jittered exponential backoff, or exactly what the server asked for in Retry-After /
 * retry-after-ms), a cancellable sleep, and a FIFO semaphore for the number of requests in flight.
 */

/** Delay asked for by Retry-After / retry-after-ms headers, in ms (undefined when none). */
export function retryAfterMs(headers: Headers | undefined | null, now = Date.now()): number | undefined {
  if (!headers) return undefined;
  const ms = headers.get('retry-after-ms');
  if (ms !== null && ms.trim() !== '' && Number.isFinite(Number(ms))) return Math.max(0, Number(ms));
  const ra = headers.get('retry-after');
  if (ra === null || ra.trim() === '') return undefined;
  if (/^\s*\d+(\.\d+)?\s*$/.test(ra)) return Math.max(0, Number(ra) * 1000);
  const date = Date.parse(ra);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** HTTP statuses worth another attempt: 408, 409, 429 and 5xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

/**
 * The wait before retry number `retry` (1 = the first retry): `backoffMs · 2^(retry−1)`, capped at
 * `maxBackoffMs`, times a jitter in [½, 1].
 */
export function backoffDelayMs(retry: number, backoffMs: number, maxBackoffMs: number): number {
  const exp = Math.min(maxBackoffMs, backoffMs * 2 ** (retry - 1));
  return exp * (0.5 + Math.random() / 2);
}

/** What a cancelled wait rejects with; by default the signal's own reason. */
export type AbortReason = (signal: AbortSignal) => unknown;
const signalReason: AbortReason = (signal) => signal.reason;

/** Resolves after `ms`, or rejects with `reason(signal)` when the signal aborts first. */
export function sleep(ms: number, signal?: AbortSignal, reason: AbortReason = signalReason): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(reason(signal));
    const onAbort = () => {
      clearTimeout(t);
      reject(reason(signal!));
    };
    const t = setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A FIFO counting semaphore whose waiters can give up on abort. */
export class Semaphore {
  private active = 0;
  private readonly waiters: { grant: () => void; reject: (e: unknown) => void }[] = [];
  constructor(
    readonly size: number,
    private readonly reason: AbortReason = signalReason,
  ) {}

  get inFlight(): number {
    return this.active;
  }

  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(this.reason(signal));
    if (this.active < this.size) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const w = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          this.active++;
          resolve();
        },
        reject,
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(this.reason(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  release(): void {
    this.active--;
    this.waiters.shift()?.grant();
  }

  /** Run `f` holding one slot. */
  async run<T>(f: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await f();
    } finally {
      this.release();
    }
  }
}
