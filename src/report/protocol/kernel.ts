/**
 * A Jupyter kernel launched and driven from Node alone: spawn it from its kernelspec with a fresh
 * connection file, talk to it over ZeroMQ (shell, control and stdin as DEALER, iopub as SUB,
 * heartbeat as REQ), sign and verify every message, and notice when it dies.
 *
 * Death is the process exiting (authoritative for a kernel we launched); a heartbeat that stops
 * answering only marks the kernel unresponsive, because single-threaded kernels (tslab) do not
 * answer it while a cell computes synchronously.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as zmq from 'zeromq';
import { channelUrl, newConnectionInfo, writeConnectionFile, type ConnectionInfo } from './connection.js';
import { getKernelSpec, type KernelSearchOptions, type KernelSpec } from '../../jupyter/kernelspec.js';
import { MessageCodec, ProtocolError, type Message } from '../../jupyter/message.js';
import { DisplayRegistry, OutputCollector } from './outputs.js';
import type { Output } from '../nbformat.js';

export class KernelDiedError extends Error {
  constructor(
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderrTail: string,
  ) {
    super(
      `kernel died (${signal ? `signal ${signal}` : `exit code ${exitCode}`})${stderrTail ? `; its last stderr:\n${stderrTail}` : ''}`,
    );
    this.name = 'KernelDiedError';
  }
}

export class KernelTimeoutError extends Error {
  constructor(
    what: string,
    readonly timeoutMs: number,
  ) {
    super(`${what} timed out after ${(timeoutMs / 1000).toFixed(1)} s`);
    this.name = 'KernelTimeoutError';
  }
}

export interface KernelStartOptions {
  /** Kernelspec name (looked up with `search`), or a spec already read. */
  name?: string;
  spec?: KernelSpec;
  search?: KernelSearchOptions;
  cwd?: string;
  /** Added to the environment (after the spec's env). */
  env?: Record<string, string>;
  /** Give up on kernel_info after this long (default 60 s). */
  startupTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  /** Receives the kernel's stderr and stdout as they arrive (default: kept in a tail buffer only). */
  onLog?: (chunk: string) => void;
}

export interface ExecuteOptions {
  /** Reject with KernelTimeoutError when the reply and idle status have not both come by then. */
  timeoutMs?: number;
  silent?: boolean;
  storeHistory?: boolean;
  allowStdin?: boolean;
  stopOnError?: boolean;
  /** Shared across the cells of one notebook so update_display_data reaches earlier cells. */
  displays?: DisplayRegistry;
  /** After a timeout, how long to wait for the interrupted cell to answer (default 5 s). */
  interruptGraceMs?: number;
  /** Every iopub message of this request, after it is applied to the outputs. */
  onIopub?: (msg: Message) => void;
  /** Answers input_request on stdin (default: an empty string). */
  onInput?: (prompt: string, password: boolean) => string | Promise<string>;
}

export interface ExecuteOutcome {
  status: 'ok' | 'error' | 'aborted';
  executionCount: number | null;
  outputs: Output[];
  reply: Message;
  /** The error's name, value and traceback when status is 'error'. */
  error?: { ename: string; evalue: string; traceback: string[] };
  startedAt: string;
  endedAt: string;
}

const TIMEOUT = Symbol('timeout');

async function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<typeof TIMEOUT>((r) => (timer = setTimeout(() => r(TIMEOUT), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

interface Pending {
  resolve(msg: Message): void;
  reject(err: Error): void;
}

export class Kernel extends EventEmitter {
  info!: Record<string, any>;
  private readonly codec: MessageCodec;
  private readonly shell = new zmq.Dealer({ linger: 0 });
  private readonly control = new zmq.Dealer({ linger: 0 });
  private readonly stdin = new zmq.Dealer({ linger: 0 });
  private readonly iopub = new zmq.Subscriber({ linger: 0 });
  private hb: zmq.Request | null = null;
  private readonly pending = new Map<string, Pending>();
  private readonly iopubListeners = new Map<string, (msg: Message) => void>();
  private readonly stdinListeners = new Map<string, (msg: Message) => void>();
  private logTail = '';
  private closed = false;
  private deathError: KernelDiedError | null = null;
  private readonly exited: Promise<void>;
  private hbTimer: NodeJS.Timeout | null = null;
  /** False after the heartbeat stopped answering; true again when it answers. */
  responsive = true;

  private constructor(
    readonly spec: KernelSpec,
    readonly connection: ConnectionInfo,
    private readonly child: ChildProcess,
    private readonly runtimeDir: string,
  ) {
    super();
    this.codec = new MessageCodec(connection.key, connection.signature_scheme);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.deathError = new KernelDiedError(code, signal, this.logTail.trim().split('\n').slice(-20).join('\n'));
        if (!this.closed) {
          for (const p of this.pending.values()) p.reject(this.deathError);
          this.pending.clear();
          this.emit('death', this.deathError);
        }
        resolve();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.deathError === null;
  }

  /** The kernel's recent stdout/stderr (for diagnostics). */
  get log(): string {
    return this.logTail;
  }

  static async start(opts: KernelStartOptions): Promise<Kernel> {
    const spec = opts.spec ?? getKernelSpec(opts.name ?? 'python3', opts.search);
    const connection = await newConnectionInfo(spec.name);
    const runtimeDir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-kernel-'));
    const connectionFile = path.join(runtimeDir, `kernel-${process.pid}-${Date.now()}.json`);
    await writeConnectionFile(connectionFile, connection);
    const argv = spec.argv.map((a) =>
      a.replaceAll('{connection_file}', connectionFile).replaceAll('{resource_dir}', spec.resourceDir),
    );
    // Its own process group: a Ctrl-C at our terminal reaches us, and we decide what the kernel gets.
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: { ...process.env, ...spec.env, ...opts.env, JPY_PARENT_PID: String(process.pid) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const kernel = new Kernel(spec, connection, child, runtimeDir);
    const onChunk = (b: Buffer) => {
      const s = b.toString('utf8');
      kernel.logTail = (kernel.logTail + s).slice(-8192);
      opts.onLog?.(s);
    };
    child.stdout!.on('data', onChunk);
    child.stderr!.on('data', onChunk);
    const spawnError = new Promise<never>((_, reject) =>
      child.once('error', (err) =>
        reject(new Error(`cannot start kernel "${spec.name}" (${argv[0]}): ${err.message}`)),
      ),
    );
    // Leaving the kernel behind when we exit would orphan it in its own process group.
    const reap = () => kernel.killNow();
    process.once('exit', reap);
    kernel.once('closed', () => process.removeListener('exit', reap));
    try {
      await Promise.race([kernel.connect(opts.startupTimeoutMs ?? 60_000), spawnError]);
    } catch (err) {
      await kernel.close();
      throw err;
    }
    kernel.startHeartbeat(opts.heartbeatIntervalMs ?? 1000);
    return kernel;
  }

  private async connect(timeoutMs: number): Promise<void> {
    const c = this.connection;
    // The kernel sends input_request to the identity that sent the execute_request, on its stdin
    // ROUTER: shell and stdin must share one routing id (jupyter_client uses the session id).
    this.shell.routingId = this.codec.session;
    this.stdin.routingId = this.codec.session;
    this.shell.connect(channelUrl(c, 'shell'));
    this.control.connect(channelUrl(c, 'control'));
    this.stdin.connect(channelUrl(c, 'stdin'));
    this.iopub.connect(channelUrl(c, 'iopub'));
    this.iopub.subscribe();
    this.receiveLoop(this.shell, 'shell');
    this.receiveLoop(this.control, 'control');
    this.receiveLoop(this.stdin, 'stdin');
    this.receiveLoop(this.iopub, 'iopub');

    // Handshake: repeat kernel_info_request until one is answered on shell AND one of ours shows up
    // on iopub: only then is our subscription live, so the first cell's outputs cannot be lost.
    const deadline = Date.now() + timeoutMs;
    let sawIopub = false;
    const ours = new Set<string>();
    const onIopub = (msg: Message) => {
      if (ours.has(msg.parent_header.msg_id ?? '')) sawIopub = true;
    };
    this.on('iopub', onIopub);
    try {
      let attempt = 0;
      while (Date.now() < deadline) {
        if (!this.alive) throw this.deathError!;
        const msg = this.codec.create('kernel_info_request', {});
        ours.add(msg.header.msg_id);
        const reply = await this.send(
          'shell',
          msg,
          Math.min(attempt === 0 ? 1000 : 500, Math.max(1, deadline - Date.now())),
        ).catch((err) => {
          if (err instanceof KernelTimeoutError) return null;
          throw err;
        });
        attempt++;
        if (reply) {
          this.info = reply.content;
          const until = Date.now() + 300;
          while (!sawIopub && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
          if (sawIopub) return;
        }
      }
      throw new KernelTimeoutError(
        `kernel "${this.spec.name}" start (kernel_info handshake${this.info ? ', iopub never answered' : ''})`,
        timeoutMs,
      );
    } finally {
      this.off('iopub', onIopub);
    }
  }

  private async receiveLoop(
    socket: zmq.Dealer | zmq.Subscriber,
    channel: 'shell' | 'control' | 'stdin' | 'iopub',
  ): Promise<void> {
    try {
      for await (const frames of socket) {
        let msg: Message;
        try {
          msg = this.codec.decode(frames);
        } catch (err) {
          // A message we cannot verify is dropped, never trusted; say so once per message.
          this.emit('warning', `${channel}: ${(err as ProtocolError).message}; message dropped`);
          continue;
        }
        const parent = msg.parent_header.msg_id ?? '';
        if (channel === 'iopub') {
          this.emit('iopub', msg);
          this.iopubListeners.get(parent)?.(msg);
        } else if (channel === 'stdin') {
          this.stdinListeners.get(parent)?.(msg);
        } else {
          const p = this.pending.get(parent);
          if (p) {
            this.pending.delete(parent);
            p.resolve(msg);
          }
        }
      }
    } catch (err) {
      if (!this.closed) this.emit('warning', `${channel} socket failed: ${(err as Error).message}`);
    }
  }

  /** Send a request and wait for its reply on the same channel. */
  private async send(channel: 'shell' | 'control', msg: Message<unknown>, timeoutMs?: number): Promise<Message> {
    if (!this.alive) throw this.deathError!;
    if (this.closed) throw new Error('kernel client is closed');
    const socket = channel === 'shell' ? this.shell : this.control;
    const reply = new Promise<Message>((resolve, reject) => this.pending.set(msg.header.msg_id, { resolve, reject }));
    await socket.send(this.codec.encode(msg));
    if (timeoutMs === undefined) return reply;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.pending.delete(msg.header.msg_id);
        reject(new KernelTimeoutError(`${msg.header.msg_type} on ${channel}`, timeoutMs));
      }, timeoutMs);
    });
    try {
      return await Promise.race([reply, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Any shell or control request (complete_request, inspect_request, …); resolves with the reply. */
  request(
    channel: 'shell' | 'control',
    msgType: string,
    content: Record<string, unknown>,
    timeoutMs = 30_000,
  ): Promise<Message> {
    return this.send(channel, this.codec.create(msgType, content), timeoutMs);
  }

  /**
   * Run `code`; resolves when the execute_reply and the iopub idle status of this request have
   * both arrived, with the outputs in nbformat 4 form.
   */
  async execute(code: string, opts: ExecuteOptions = {}): Promise<ExecuteOutcome> {
    const startedAt = new Date().toISOString();
    const collector = new OutputCollector(opts.displays);
    const msg = this.codec.create('execute_request', {
      code,
      silent: opts.silent ?? false,
      store_history: opts.storeHistory ?? true,
      user_expressions: {},
      allow_stdin: opts.allowStdin ?? false,
      stop_on_error: opts.stopOnError ?? true,
    });
    const id = msg.header.msg_id;
    let idle!: () => void;
    const idleSeen = new Promise<void>((r) => (idle = r));
    this.iopubListeners.set(id, (m) => {
      collector.handle(m);
      opts.onIopub?.(m);
      if (m.header.msg_type === 'status' && m.content.execution_state === 'idle') idle();
    });
    this.stdinListeners.set(id, (m) => {
      if (m.header.msg_type !== 'input_request') return;
      Promise.resolve((opts.onInput ?? (() => ''))(String(m.content.prompt ?? ''), Boolean(m.content.password)))
        .then((value) => this.stdin.send(this.codec.encode(this.codec.create('input_reply', { value }, m))))
        .catch((err) => this.emit('warning', `stdin: ${(err as Error).message}`));
    });
    try {
      const work = (async () => {
        const reply = await this.send('shell', msg);
        await idleSeen;
        return reply;
      })();
      work.catch(() => undefined); // a timed-out request may still reject later (kernel closed)
      let reply: Message;
      let timedOut = false;
      if (opts.timeoutMs === undefined) {
        reply = await work;
      } else {
        const r = await raceTimeout(work, opts.timeoutMs);
        if (r !== TIMEOUT) {
          reply = r;
        } else {
          // Like nbclient: interrupt, give the kernel a grace period to answer, record a timeout error.
          timedOut = true;
          await this.interrupt().catch(() => undefined);
          const late = await raceTimeout(work, opts.interruptGraceMs ?? 5000);
          if (late === TIMEOUT)
            throw new KernelTimeoutError('cell execution (kernel did not stop after an interrupt)', opts.timeoutMs);
          reply = late;
        }
      }
      const status = reply.content.status === 'ok' ? 'ok' : reply.content.status === 'error' ? 'error' : 'aborted';
      const outcome: ExecuteOutcome = {
        status,
        executionCount:
          typeof reply.content.execution_count === 'number' ? reply.content.execution_count : collector.executionCount,
        outputs: collector.outputs,
        reply,
        startedAt,
        endedAt: new Date().toISOString(),
      };
      if (timedOut) {
        const evalue = `cell did not finish within ${(opts.timeoutMs! / 1000).toFixed(1)} s and was interrupted`;
        outcome.status = 'error';
        outcome.error = { ename: 'CellTimeoutError', evalue, traceback: [`CellTimeoutError: ${evalue}`] };
        collector.outputs.push({ output_type: 'error', ...outcome.error });
      } else if (status === 'error') {
        outcome.error = {
          ename: String(reply.content.ename ?? 'Error'),
          evalue: String(reply.content.evalue ?? ''),
          traceback: (Array.isArray(reply.content.traceback) ? reply.content.traceback : []).map(String),
        };
        // Some kernels only put the error in the reply; the cell must still show it.
        if (!collector.outputs.some((o) => o.output_type === 'error')) {
          collector.outputs.push({ output_type: 'error', ...outcome.error });
        }
      }
      return outcome;
    } finally {
      // Leave the listener for a moment after a timeout would drop late outputs; the runner
      // interrupts and moves on, so outputs after this point belong to no cell.
      this.iopubListeners.delete(id);
      this.stdinListeners.delete(id);
      this.pending.delete(id);
    }
  }

  /** Interrupt the running cell: SIGINT to the kernel's process group, or interrupt_request per the spec. */
  async interrupt(timeoutMs = 5000): Promise<void> {
    if (!this.alive) throw this.deathError!;
    if (this.spec.interruptMode === 'message') {
      await this.request('control', 'interrupt_request', {}, timeoutMs);
    } else {
      this.signal('SIGINT');
    }
  }

  private signal(sig: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined || !this.alive) return;
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  }

  private startHeartbeat(intervalMs: number): void {
    let failures = 0;
    const beat = async () => {
      if (this.closed || !this.alive) return;
      if (!this.hb) {
        this.hb = new zmq.Request({
          linger: 0,
          receiveTimeout: Math.max(intervalMs, 500),
          relaxed: true,
          correlate: true,
        });
        this.hb.connect(channelUrl(this.connection, 'hb'));
      }
      try {
        await this.hb.send('ping');
        await this.hb.receive();
        failures = 0;
        if (!this.responsive) {
          this.responsive = true;
          this.emit('responsive');
        }
      } catch {
        if (this.closed) return;
        failures++;
        if (failures === 3 && this.responsive) {
          this.responsive = false;
          this.emit('unresponsive');
        }
      }
      if (!this.closed && this.alive) this.hbTimer = setTimeout(beat, intervalMs);
    };
    this.hbTimer = setTimeout(beat, intervalMs);
  }

  /** Ask the kernel to shut down (control channel), wait for it to exit, then escalate to SIGTERM and SIGKILL. */
  async shutdown(timeoutMs = 5000): Promise<void> {
    if (this.alive && !this.closed) {
      await this.request('control', 'shutdown_request', { restart: false }, timeoutMs).catch(() => undefined);
      const exited = await Promise.race([
        this.exited.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref()),
      ]);
      if (!exited) {
        this.signal('SIGTERM');
        const gone = await Promise.race([
          this.exited.then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), 2000).unref()),
        ]);
        if (!gone) this.signal('SIGKILL');
      }
    }
    await this.close();
  }

  private killNow(): void {
    if (this.alive) this.signal('SIGKILL');
  }

  /** Close sockets and remove the connection file; kills the kernel if it still runs. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.alive) {
      this.signal('SIGKILL');
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, 2000).unref())]);
    }
    this.closed = true;
    if (this.hbTimer) clearTimeout(this.hbTimer);
    for (const p of this.pending.values()) p.reject(new Error('kernel client closed'));
    this.pending.clear();
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s?.close();
    rmSync(this.runtimeDir, { recursive: true, force: true });
    this.emit('closed');
  }

  /** Resolves when the kernel process has exited. */
  waitForExit(): Promise<void> {
    return this.exited;
  }
}
