/**
 * The shared sampling loop of one model (continuous batching).
 *
 * Every `sample` / `sampleBatch` request of a model goes through one SampleLoop. When no native
 * sampling run is going on, the requests wait for the model's call queue and then start a run
 * together (one batched decode loop, native/src/sampler.h). While a run goes on, a new request
 * joins it: the native side takes it at the next decode step, prefills its prompt, and decodes its
 * rows with the others. It does not join when another engine call (a forward, a step) is queued
 * behind the run: it waits behind that call instead, so a stream of sampling requests cannot starve
 * training calls. A request settles as soon as its own rows are done, not when the run ends.
 *
 * Results do not depend on what else runs (tested bit for bit): batching only changes when a
 * request's rows are computed, not what they compute.
 *
 * Native events come through a ThreadSafeFunction, one packet per decode step that has something
 * to report (tokens of streaming requests, finished or failed requests), then a last `end` packet.
 * A request's AbortSignal drops it from the run at the next step (its rows leave; the others go on).
 */
import type { NativeModel, NativeRunPacket, NativeRunRequest } from './native.js';
import { nativeError } from './native.js';
import type { SampleResult, SampleStats, TokenEvent } from './types.js';

/** A checked request on its way to the native loop. */
export interface LoopRequest {
  native: Omit<NativeRunRequest, 'id'>;
  /** Index reported in TokenEvent.request (the position in sampleBatch's list; 0 for sample). */
  index: number;
  onToken?: (e: TokenEvent) => void;
  signal?: AbortSignal;
  /** Holds the caller's stack for native errors. */
  stack: Error;
}

interface Pending extends LoopRequest {
  id: number;
  resolve: (r: SampleResult) => void;
  reject: (e: unknown) => void;
  run?: Run;
  onAbort?: () => void;
  cancelReason?: unknown;
  settled: boolean;
}

interface Run {
  handle: unknown;
  requests: Map<number, Pending>;
  /** False once an add was refused or the run ended. */
  open: boolean;
  /**
   * Settlements held back until the run's end packet: those that left the run with no request.
   * The native run still holds the model until just before its end packet, so a caller that awaits
   * its result and then makes a synchronous call (zeroGrad, setLoraEnabled) must not be resumed
   * earlier — it would find the model busy.
   */
  held: (() => void)[];
}

export interface LoopHost {
  nm: NativeModel;
  /** Queue `fn` as one engine call of the model (after the calls queued before it). */
  schedule(fn: (callId: number) => Promise<void>): void;
  /** Engine calls queued and not yet started. */
  waitingCalls(): number;
}

/** Counters of a loop that has sampled nothing. */
export function noSamples(): SampleStats {
  return { runs: 0, requests: 0, joined: 0, completed: 0, cancelled: 0, failed: 0, maxConcurrent: 0, tokens: 0 };
}

const reasonOf = (signal: AbortSignal): unknown =>
  signal.reason instanceof Error ? signal.reason : new Error('interrupted');

export class SampleLoop {
  private current: Run | null = null;
  private waiting: Pending[] = [];
  private scheduled = false;
  private nextId = 1;
  private readonly counts: SampleStats = noSamples();

  constructor(private readonly host: LoopHost) {}

  stats(): SampleStats {
    return { ...this.counts };
  }

  /** Queue requests (together: they enter the same run); one promise per request. */
  submit(reqs: LoopRequest[]): Promise<SampleResult>[] {
    const pending: Pending[] = [];
    const promises = reqs.map(
      (r) =>
        new Promise<SampleResult>((resolve, reject) => {
          const id = this.nextId;
          this.nextId = this.nextId >= 0x7ffffff0 ? 1 : this.nextId + 1;
          pending.push({ ...r, id, resolve, reject, settled: false });
        }),
    );
    const live: Pending[] = [];
    for (const p of pending) {
      if (p.signal?.aborted) {
        this.settle(p, false, reasonOf(p.signal));
        continue;
      }
      if (p.signal) {
        p.onAbort = () => this.cancel(p, reasonOf(p.signal!));
        p.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      live.push(p);
    }
    this.counts.requests += live.length;
    if (live.length === 0) return promises;
    const run = this.current;
    if (run?.open && this.waiting.length === 0 && this.host.waitingCalls() === 0) {
      let added = false;
      try {
        added = this.host.nm.sampleRunAdd(
          run.handle,
          live.map((p) => ({ ...p.native, id: p.id })),
        );
      } catch (err) {
        for (const p of live) this.settle(p, false, nativeError(err, p.stack));
        return promises;
      }
      if (added) {
        for (const p of live) {
          p.run = run;
          run.requests.set(p.id, p);
        }
        this.counts.joined += live.length;
        this.counts.maxConcurrent = Math.max(this.counts.maxConcurrent, run.requests.size);
        return promises;
      }
      run.open = false; // the run is ending: start another
    }
    this.waiting.push(...live);
    this.ensureScheduled();
    return promises;
  }

  /** The engine call that would start a run failed before it began (the model was disposed). */
  abandon(err: unknown): void {
    this.scheduled = false;
    for (const p of this.waiting.splice(0)) this.settle(p, false, nativeError(err, p.stack));
  }

  private ensureScheduled(): void {
    if (this.scheduled || this.waiting.length === 0) return;
    this.scheduled = true;
    this.host.schedule((callId) => this.start(callId));
  }

  /** One engine call: a native run with every waiting request; resolves when the run has ended. */
  private start(callId: number): Promise<void> {
    this.scheduled = false;
    const batch = this.waiting.splice(0);
    if (batch.length === 0) return Promise.resolve();
    const run: Run = { handle: undefined, requests: new Map(batch.map((p) => [p.id, p])), open: true, held: [] };
    for (const p of batch) p.run = run;
    return new Promise<void>((ended) => {
      try {
        run.handle = this.host.nm.sampleRun(
          batch.map((p) => ({ ...p.native, id: p.id })),
          (pk) => this.onPacket(run, pk, ended),
          callId,
        );
      } catch (err) {
        for (const p of batch) this.settle(p, false, nativeError(err, p.stack));
        ended();
        return;
      }
      this.counts.runs++;
      this.counts.maxConcurrent = Math.max(this.counts.maxConcurrent, run.requests.size);
      this.current = run;
    });
  }

  private onPacket(run: Run, pk: NativeRunPacket, ended: () => void): void {
    if (pk.tokens) {
      const ev = pk.tokens,
        lp = pk.logprobs!;
      this.counts.tokens += lp.length;
      for (let i = 0; i < lp.length; i++) {
        const p = run.requests.get(ev[3 * i]!);
        if (!p?.onToken || p.settled || p.cancelReason !== undefined) continue;
        try {
          p.onToken({ request: p.index, row: ev[3 * i + 1]!, tokenId: ev[3 * i + 2]!, logprob: lp[i]! });
        } catch (err) {
          this.cancel(p, err); // a callback that throws ends its own request with that error
        }
      }
    }
    const settlements: (() => void)[] = [];
    for (const d of pk.done ?? []) {
      const p = run.requests.get(d.id);
      if (!p) continue;
      run.requests.delete(d.id);
      this.counts.completed++;
      if (p.cancelReason !== undefined) settlements.push(() => this.settle(p, false, p.cancelReason));
      else
        settlements.push(() =>
          this.settle(p, true, {
            tokenIds: d.tokenIds,
            logprobs: d.logprobs,
            finishReason: d.stopped.map((s) => (s ? 'stop' : 'length')),
          }),
        );
    }
    for (const f of pk.failed ?? []) {
      const p = run.requests.get(f.id);
      if (!p) continue;
      run.requests.delete(f.id);
      if (f.cancelled) this.counts.cancelled++;
      else this.counts.failed++;
      settlements.push(() =>
        this.settle(
          p,
          false,
          f.cancelled ? (p.cancelReason ?? new Error('cancelled')) : nativeError(new Error(f.message), p.stack),
        ),
      );
    }
    // A run left with no request is closing (the native side closes it before it reports the
    // results that leave it idle): those results wait for the end packet, which comes once the
    // model is free. Results that leave others running settle at once (the model stays busy
    // anyway, and a server wants them now).
    if (run.requests.size === 0 && !pk.end) run.held.push(...settlements);
    else for (const settle of settlements) settle();
    if (pk.end) {
      run.open = false;
      if (this.current === run) this.current = null;
      for (const settle of run.held.splice(0)) settle();
      for (const p of run.requests.values()) {
        this.counts.failed++;
        this.settle(
          p,
          false,
          p.cancelReason ??
            nativeError(new Error(pk.error ?? 'the sampling run ended before this request finished'), p.stack),
        );
      }
      run.requests.clear();
      ended();
      this.ensureScheduled();
    }
  }

  private cancel(p: Pending, reason: unknown): void {
    if (p.settled || p.cancelReason !== undefined) return;
    p.cancelReason = reason;
    if (p.run) {
      try {
        this.host.nm.sampleRunCancel(p.run.handle, p.id);
      } catch {
        // the run is gone: its end packet settles the request
      }
      return;
    }
    const i = this.waiting.indexOf(p);
    if (i >= 0) this.waiting.splice(i, 1);
    this.counts.cancelled++;
    this.settle(p, false, reason);
  }

  private settle(p: Pending, ok: true, value: SampleResult): void;
  private settle(p: Pending, ok: false, value: unknown): void;
  private settle(p: Pending, ok: boolean, value: unknown): void {
    if (p.settled) return;
    p.settled = true;
    if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort);
    if (ok) p.resolve(value as SampleResult);
    else p.reject(value);
  }
}
