/**
 * The rendezvous of a data-parallel run (docs/multi-gpu.md): a TCP server on the driver (node 0, the
 * notebook kernel or `vqalab train`) that every rank connects to, as torchrun's store.
 *
 *   startup   each rank says hello (rank, host, pid, device); once all have, rank 0 makes the collective's
 *             id (NCCL's unique id, or the cpu collective's address) and the server hands it to every rank;
 *             each rank creates its collective and says ready.
 *   commands  the driver sends a command to every rank (init, step, save, ...) and waits for every reply.
 *   gathers   the ranks' small all-gathers (sampled tokens, log-probs: src/distributed/sharded-model.ts)
 *             go through the server: round k is sent to every rank once all ranks gave their part.
 *   faults    a rank whose connection drops, that replies with an error, or that has not reached a gather
 *             round the others wait in within the timeout, fails the run: every pending command rejects
 *             with a DistributedError naming that rank, and the fault listeners (the launchers, which
 *             kill the other ranks) are called.
 */
import net, { type Socket } from 'node:net';
import { readMessages, sendMessage } from './wire.js';

/** Who a rank is: its place in the run and where it runs (for messages naming it). */
export interface RankInfo {
  rank: number;
  localRank: number;
  nodeRank: number;
  host: string;
  pid: number;
  device: string;
}

/** A rank failed (crashed, hung, diverged or errored); the run is stopped. */
export class DistributedError extends Error {
  constructor(
    message: string,
    /** The rank at fault, when one is known. */
    readonly rank?: number,
  ) {
    super(message);
    this.name = 'DistributedError';
  }
}

export function describeRank(r: RankInfo | undefined, rank: number): string {
  return r ? `rank ${rank} (pid ${r.pid} on ${r.host}, ${r.device})` : `rank ${rank}`;
}

interface PendingCommand {
  op: string;
  replies: unknown[];
  got: Set<number>;
  resolve: (values: unknown[]) => void;
  reject: (err: Error) => void;
  /** Started by the first reply: the others have `timeoutMs` more. */
  timer?: NodeJS.Timeout;
}

interface GatherRound {
  values: unknown[];
  got: Set<number>;
  timer: NodeJS.Timeout;
}

export interface ServerOptions {
  host: string;
  port: number;
  worldSize: number;
  /** Longest wait for a rank at startup, at a gather round, or for a command's reply after the others. */
  timeoutMs: number;
  /** Longest wait for every rank to join and create its collective. Default: timeoutMs. */
  startupTimeoutMs?: number;
  /** How long a dropped connection waits for the launcher's exit report before it is the fault. Default 1000. */
  disconnectGraceMs?: number;
}

export class RendezvousServer {
  readonly ranks: (RankInfo | undefined)[];
  private readonly sockets: (Socket | undefined)[];
  private readonly agents = new Set<Socket>();
  private readonly commands = new Map<number, PendingCommand>();
  private readonly gathers = new Map<number, GatherRound>();
  private readonly faultListeners: ((err: DistributedError) => void)[] = [];
  private nextCommand = 1;
  private ready = 0;
  private failure: DistributedError | undefined;
  private closing = false;
  private readyWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private startupTimer: NodeJS.Timeout | undefined;
  /** What the ranks are doing (for the messages of faults). */
  private current = 'startup';

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly o: ServerOptions,
  ) {
    this.ranks = new Array<RankInfo | undefined>(o.worldSize).fill(undefined);
    this.sockets = new Array<Socket | undefined>(o.worldSize).fill(undefined);
    server.on('connection', (s) => this.accept(s));
  }

  static async listen(o: ServerOptions): Promise<RendezvousServer> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new Error(`rendezvous: cannot listen on ${o.host}:${o.port}: ${err.code ?? err.message}`)),
      );
      server.listen(o.port, o.host, () => resolve());
    });
    const port = (server.address() as net.AddressInfo).port;
    return new RendezvousServer(server, port, o);
  }

  get worldSize(): number {
    return this.o.worldSize;
  }

  /** The fault that stopped the run, if any. */
  get fault(): DistributedError | undefined {
    return this.failure;
  }

  onFault(listener: (err: DistributedError) => void): void {
    this.faultListeners.push(listener);
  }

  /** Resolves once every rank has created its collective; rejects on a fault or the startup timeout. */
  waitReady(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.ready === this.o.worldSize) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.readyWaiter = { resolve, reject };
      const limit = this.o.startupTimeoutMs ?? this.o.timeoutMs;
      this.startupTimer = setTimeout(() => {
        const missing = this.ranks.flatMap((r, i) => (r ? [] : [i]));
        this.fail(
          new DistributedError(
            missing.length
              ? `rendezvous: rank(s) ${missing.join(', ')} did not connect within ${limit / 1000} s`
              : `rendezvous: the ranks did not create their collective within ${limit / 1000} s`,
            missing[0],
          ),
        );
      }, limit);
    });
  }

  /** Sends `op` to every rank; resolves with every rank's reply (index = rank). */
  command(op: string, args: unknown = {}): Promise<unknown[]> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextCommand++;
    this.current = op;
    return new Promise((resolve, reject) => {
      this.commands.set(id, { op, replies: new Array(this.o.worldSize), got: new Set(), resolve, reject });
      for (const s of this.sockets) if (s) sendMessage(s, { t: 'cmd', id, op, args });
    });
  }

  /** Stops the run: records the fault, rejects what waits, tells the agents and the listeners. */
  fail(err: DistributedError): void {
    if (this.failure || this.closing) return;
    this.failure = err;
    if (this.startupTimer) clearTimeout(this.startupTimer);
    for (const g of this.gathers.values()) clearTimeout(g.timer);
    this.gathers.clear();
    for (const c of this.commands.values()) {
      clearTimeout(c.timer);
      c.reject(err);
    }
    this.commands.clear();
    this.readyWaiter?.reject(err);
    this.readyWaiter = undefined;
    for (const a of this.agents) sendMessage(a, { t: 'kill', reason: err.message });
    for (const s of this.sockets) s?.destroy();
    for (const l of this.faultListeners) l(err);
  }

  /** The run ended normally: connections closing now are no fault. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.startupTimer) clearTimeout(this.startupTimer);
    for (const g of this.gathers.values()) clearTimeout(g.timer);
    for (const a of this.agents) sendMessage(a, { t: 'done' });
    for (const s of [...this.sockets, ...this.agents]) s?.end();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(s: Socket): void {
    s.setNoDelay(true);
    let rank = -1;
    readMessages(s, (raw) => {
      const m = raw as { t: string } & Record<string, unknown>;
      if (m.t === 'hello') {
        rank = this.hello(s, m as unknown as RankInfo & { worldSize: number });
      } else if (m.t === 'agent') {
        this.agents.add(s);
      } else if (m.t === 'agent-fault') {
        // a launcher on another node saw one of its ranks exit
        this.fail(new DistributedError(String(m.message), typeof m.rank === 'number' ? m.rank : undefined));
      } else if (rank >= 0) {
        this.fromRank(rank, m);
      }
    });
    s.on('error', () => undefined); // 'close' follows and says what it means
    s.on('close', () => {
      if (this.agents.delete(s)) {
        if (!this.closing && !this.failure) this.fail(new DistributedError('a node launcher disconnected'));
        return;
      }
      if (rank < 0 || this.closing || this.failure) return;
      const what = this.current;
      // A local launcher reports the exit code and last lines of a rank that died: give it a moment first.
      setTimeout(
        () =>
          this.fail(
            new DistributedError(
              `${describeRank(this.ranks[rank], rank)} disconnected during ${what} (crashed or was killed)`,
              rank,
            ),
          ),
        this.o.disconnectGraceMs ?? 1000,
      ).unref();
    });
  }

  private hello(s: Socket, m: RankInfo & { worldSize: number }): number {
    if (m.worldSize !== this.o.worldSize || m.rank < 0 || m.rank >= this.o.worldSize || this.sockets[m.rank]) {
      sendMessage(s, {
        t: 'reject',
        message: `rendezvous: rank ${m.rank} of ${m.worldSize} does not fit this run of ${this.o.worldSize} ranks (or is taken)`,
      });
      s.end();
      return -1;
    }
    this.sockets[m.rank] = s;
    this.ranks[m.rank] = {
      rank: m.rank,
      localRank: m.localRank,
      nodeRank: m.nodeRank,
      host: m.host,
      pid: m.pid,
      device: m.device,
    };
    if (this.ranks.every((r) => r)) sendMessage(this.sockets[0]!, { t: 'make-id' });
    return m.rank;
  }

  private fromRank(rank: number, m: { t: string } & Record<string, unknown>): void {
    switch (m.t) {
      case 'id':
        for (const s of this.sockets) sendMessage(s!, { t: 'start', id: m.id, worldSize: this.o.worldSize });
        return;
      case 'ready':
        if (++this.ready === this.o.worldSize) {
          if (this.startupTimer) clearTimeout(this.startupTimer);
          this.readyWaiter?.resolve();
          this.readyWaiter = undefined;
        }
        return;
      case 'gather':
        this.gather(rank, m.seq as number, m.value);
        return;
      case 'reply':
        this.reply(rank, m);
        return;
      case 'fatal':
        this.fail(
          new DistributedError(
            `${describeRank(this.ranks[rank], rank)} failed during ${this.current}: ${String(m.message)}`,
            rank,
          ),
        );
        return;
    }
  }

  private gather(rank: number, seq: number, value: unknown): void {
    let g = this.gathers.get(seq);
    if (!g) {
      const round: GatherRound = {
        values: new Array(this.o.worldSize),
        got: new Set(),
        timer: setTimeout(() => {
          const missing = [...Array(this.o.worldSize).keys()].filter((r) => !round.got.has(r));
          this.fail(
            new DistributedError(
              `${missing.map((r) => describeRank(this.ranks[r], r)).join(', ')} did not reach gather #${seq} during ${this.current} within ${
                this.o.timeoutMs / 1000
              } s while rank(s) ${[...round.got].sort((a, b) => a - b).join(', ')} waited (hung or stalled)`,
              missing[0],
            ),
          );
        }, this.o.timeoutMs),
      };
      this.gathers.set(seq, round);
      g = round;
    }
    g.values[rank] = value;
    g.got.add(rank);
    if (g.got.size < this.o.worldSize) return;
    clearTimeout(g.timer);
    this.gathers.delete(seq);
    for (const s of this.sockets) sendMessage(s!, { t: 'gathered', seq, values: g.values });
  }

  private reply(rank: number, m: Record<string, unknown>): void {
    const c = this.commands.get(m.id as number);
    if (!c) return;
    if (m.ok !== true) {
      this.fail(
        new DistributedError(`${describeRank(this.ranks[rank], rank)} failed during ${c.op}: ${String(m.error)}`, rank),
      );
      return;
    }
    c.replies[rank] = m.value;
    c.got.add(rank);
    if (c.got.size === this.o.worldSize) {
      clearTimeout(c.timer);
      this.commands.delete(m.id as number);
      c.resolve(c.replies);
    } else if (c.got.size === 1) {
      c.timer = setTimeout(() => {
        const missing = [...Array(this.o.worldSize).keys()].filter((r) => !c.got.has(r));
        this.fail(
          new DistributedError(
            `${missing.map((r) => describeRank(this.ranks[r], r)).join(', ')} did not finish ${c.op} within ${
              this.o.timeoutMs / 1000
            } s of rank ${rank} (hung or stalled)`,
            missing[0],
          ),
        );
      }, this.o.timeoutMs);
    }
  }
}

/** A rank's side: hello, then gathers and command replies; `on` handles what the server sends. */
export class RendezvousClient {
  private seq = 0;
  private readonly waiting = new Map<number, (values: unknown[]) => void>();
  private handler: ((m: { t: string } & Record<string, unknown>) => void) | undefined;
  private closedBy: Error | undefined;

  private constructor(private readonly socket: Socket) {
    readMessages(socket, (raw) => {
      const m = raw as { t: string } & Record<string, unknown>;
      if (m.t === 'gathered') {
        const w = this.waiting.get(m.seq as number);
        this.waiting.delete(m.seq as number);
        w?.(m.values as unknown[]);
      } else {
        this.handler?.(m);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedBy ??= new Error('the rendezvous connection closed (the driver stopped the run)');
      this.handler?.({ t: 'closed' });
    });
  }

  /** Connects to the driver (retrying until `timeoutMs`: it may not listen yet) and says hello. */
  static async connect(host: string, port: number, hello: RankInfo & { worldSize: number }, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s: Socket = net.connect(port, host, () => resolve(s));
          s.once('error', reject);
        });
        socket.setNoDelay(true);
        const c = new RendezvousClient(socket);
        sendMessage(socket, { t: 'hello', ...hello });
        return c;
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(
            `rank ${hello.rank}: cannot reach the rendezvous at ${host}:${port}: ${(err as Error).message}`,
          );
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  on(handler: (m: { t: string } & Record<string, unknown>) => void): void {
    this.handler = handler;
  }

  send(msg: { t: string } & Record<string, unknown>): void {
    sendMessage(this.socket, msg);
  }

  /** Every rank's `value` of this round, by rank (all ranks call gather the same number of times). */
  gather<T>(value: T): Promise<T[]> {
    if (this.closedBy) return Promise.reject(this.closedBy);
    const seq = this.seq++;
    return new Promise((resolve) => {
      this.waiting.set(seq, (values) => resolve(values as T[]));
      sendMessage(this.socket, { t: 'gather', seq, value });
    });
  }

  close(): void {
    this.socket.end();
  }
}
