/**
 * The admission queue of `vqalab serve`: requests wait here until the engine has room for them.
 * Fair between clients: each client (the request's `user` field, else its address) has its own
 * FIFO, and the queue takes one job from each client in turn, so one client with a hundred requests
 * in flight delays another's single request by at most one job per waiting client.
 *
 * Room is a capacity in weight units: with continuous batching a job weighs its number of rows
 * (`n`) and the capacity is the batch's row budget; in queue-only mode every job weighs 1. The next
 * job in turn starts when its weight fits (or when nothing runs: a job larger than the capacity
 * runs alone); a job that does not fit waits for room rather than being overtaken, so large
 * requests are not starved by small ones. Bounded: beyond `maxPending` waiting jobs new ones are
 * refused (503 + Retry-After). A job whose client went away before it started is dropped.
 */

export class QueueFullError extends Error {
  constructor(readonly pending: number) {
    super(`the engine queue is full (${pending} requests waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

interface Job {
  run: () => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  weight: number;
}

export interface QueueStats {
  pending: number;
  running: number;
  /** Weight of the running jobs (rows, with continuous batching). */
  runningWeight: number;
  completed: number;
  dropped: number;
  clients: number;
}

export class FairQueue {
  private readonly lanes = new Map<string, Job[]>();
  /** Round-robin order of clients with waiting jobs. */
  private readonly order: string[] = [];
  private running = 0;
  private runningWeight = 0;
  private pendingCount = 0;
  private completed = 0;
  private dropped = 0;
  private closed = false;

  /** `capacity`: total weight of the jobs that may run at once. */
  constructor(
    readonly maxPending: number,
    readonly capacity = 1,
  ) {}

  stats(): QueueStats {
    return {
      pending: this.pendingCount,
      running: this.running,
      runningWeight: this.runningWeight,
      completed: this.completed,
      dropped: this.dropped,
      clients: this.lanes.size,
    };
  }

  /** Queue `run` for `client`; resolves with its result. Rejects QueueFullError at once when full. */
  submit<T>(client: string, run: () => Promise<T>, signal?: AbortSignal, weight = 1): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the server is shutting down'));
    if (this.pendingCount >= this.maxPending) return Promise.reject(new QueueFullError(this.pendingCount));
    return new Promise<T>((resolve, reject) => {
      const job: Job = { run, resolve: resolve as (v: unknown) => void, reject, signal, weight };
      if (signal) {
        if (signal.aborted) return reject(signal.reason);
        job.onAbort = () => this.drop(client, job);
        signal.addEventListener('abort', job.onAbort, { once: true });
      }
      let lane = this.lanes.get(client);
      if (!lane) {
        lane = [];
        this.lanes.set(client, lane);
        this.order.push(client);
      }
      lane.push(job);
      this.pendingCount++;
      this.pump();
    });
  }

  private drop(client: string, job: Job): void {
    const lane = this.lanes.get(client);
    const i = lane?.indexOf(job) ?? -1;
    if (!lane || i < 0) return; // already running
    lane.splice(i, 1);
    this.pendingCount--;
    this.dropped++;
    if (lane.length === 0) this.removeLane(client);
    job.reject(job.signal?.reason ?? new Error('cancelled'));
  }

  private removeLane(client: string): void {
    this.lanes.delete(client);
    const i = this.order.indexOf(client);
    if (i >= 0) this.order.splice(i, 1);
  }

  /** The next job in turn, taken only when it fits. */
  private next(): Job | undefined {
    const client = this.order[0];
    if (client === undefined) return undefined;
    const head = this.lanes.get(client)![0]!;
    if (this.running > 0 && this.runningWeight + head.weight > this.capacity) return undefined;
    this.order.shift();
    const lane = this.lanes.get(client)!;
    const job = lane.shift()!;
    if (lane.length === 0) this.lanes.delete(client);
    else this.order.push(client); // to the back: the others go first
    this.pendingCount--;
    return job;
  }

  private pump(): void {
    for (;;) {
      const job = this.next();
      if (!job) return;
      if (job.signal && job.onAbort) job.signal.removeEventListener('abort', job.onAbort);
      this.running++;
      this.runningWeight += job.weight;
      job
        .run()
        .then(job.resolve, job.reject)
        .finally(() => {
          this.running--;
          this.runningWeight -= job.weight;
          this.completed++;
          this.pump();
        });
    }
  }

  /** Refuse new jobs and reject the waiting ones; running jobs finish. */
  close(reason: Error): void {
    this.closed = true;
    for (const [, lane] of this.lanes)
      for (const job of lane) {
        if (job.signal && job.onAbort) job.signal.removeEventListener('abort', job.onAbort);
        job.reject(reason);
      }
    this.lanes.clear();
    this.order.length = 0;
    this.pendingCount = 0;
  }

  /** Resolves when nothing runs. */
  async idle(): Promise<void> {
    while (this.running > 0) await new Promise((r) => setTimeout(r, 10));
  }
}
