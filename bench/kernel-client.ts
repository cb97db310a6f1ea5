/**
 * A minimal Jupyter client for the kernel benchmark: starts a kernel process on free loopback
 * ports (a real connection file), sends shell requests over ZeroMQ and waits for their replies and
 * their `idle` status on IOPub. Uses the kernel's own wire-protocol module.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as zmq from 'zeromq';
import { decode, encode, orphanMessage, type ConnectionInfo, type Message } from '../src/jupyter/message.js';

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on every Linux we run on). */
const CLOCK_TICKS = 100;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface KernelCommand {
  /** argv; "{connection_file}" is replaced with the file's path. */
  argv: string[];
  cwd: string;
  env?: NodeJS.ProcessEnv;
}

export class BenchClient {
  private readonly shell = new zmq.Dealer();
  private readonly iopub = new zmq.Subscriber();
  private readonly waiting = new Map<
    string,
    { reply?: Message; idle: boolean; needIdle: boolean; resolve: (m: Message) => void }
  >();
  private child: ChildProcess | undefined;
  private dir = '';
  stderr = '';
  private info!: ConnectionInfo;

  /** Start the kernel; resolves once the sockets are connected (the kernel may still be loading). */
  async start(cmd: KernelCommand): Promise<void> {
    this.dir = mkdtempSync(path.join(tmpdir(), 'vqalab-bench-'));
    const [shell_port, iopub_port, stdin_port, control_port, hb_port] = await Promise.all([
      freePort(),
      freePort(),
      freePort(),
      freePort(),
      freePort(),
    ]);
    this.info = {
      transport: 'tcp',
      ip: '127.0.0.1',
      key: randomUUID(),
      signature_scheme: 'hmac-sha256',
      shell_port: shell_port!,
      iopub_port: iopub_port!,
      stdin_port: stdin_port!,
      control_port: control_port!,
      hb_port: hb_port!,
    };
    const file = path.join(this.dir, 'kernel.json');
    writeFileSync(file, JSON.stringify(this.info));
    this.shell.connect(`tcp://127.0.0.1:${shell_port}`);
    this.iopub.connect(`tcp://127.0.0.1:${iopub_port}`);
    this.iopub.subscribe();
    const [exe, ...args] = cmd.argv.map((a) => a.replace('{connection_file}', file));
    this.child = spawn(exe!, args, { cwd: cmd.cwd, env: cmd.env ?? process.env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
    });
    void this.listen(this.shell, 'shell');
    void this.listen(this.iopub, 'iopub');
  }

  private async listen(socket: zmq.Dealer | zmq.Subscriber, channel: 'shell' | 'iopub'): Promise<void> {
    try {
      for await (const frames of socket) {
        const msg = decode(frames as Buffer[], this.info.key);
        const id = msg.parent_header.msg_id;
        const w = id ? this.waiting.get(id) : undefined;
        if (!w) continue;
        if (channel === 'shell') w.reply = msg;
        else if (
          msg.header.msg_type === 'status' &&
          (msg.content as { execution_state?: string }).execution_state === 'idle'
        )
          w.idle = true;
        if (w.reply && (w.idle || !w.needIdle)) {
          this.waiting.delete(id!);
          w.resolve(w.reply);
        }
      }
    } catch {
      // closed
    }
  }

  /**
   * Send a shell request; resolves with its reply once the kernel is idle again (the whole round
   * trip a notebook front end waits for), or at the reply when `needIdle` is false.
   */
  request(msgType: string, content: Record<string, unknown>, needIdle = true): Promise<Message> {
    const msg = orphanMessage(randomUUID(), msgType, content);
    msg.header.username = 'bench';
    const done = new Promise<Message>((resolve) => {
      this.waiting.set(msg.header.msg_id, { idle: false, needIdle, resolve });
    });
    void this.shell.send(encode(msg, this.info.key));
    return done;
  }

  /**
   * Wait for the first kernel_info reply: the kernel is ready. The request waits in ZeroMQ until
   * the kernel binds its sockets, so one request measures start-up exactly.
   */
  async waitReady(timeoutMs = 300_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const failed = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`kernel not ready after ${timeoutMs} ms:\n${this.stderr}`)), timeoutMs);
      this.child?.once('exit', (code) =>
        reject(new Error(`kernel exited (${code}) before it was ready:\n${this.stderr}`)),
      );
    });
    try {
      await Promise.race([this.request('kernel_info_request', {}, false), failed]);
    } finally {
      clearTimeout(timer);
    }
    failed.catch(() => {});
  }

  /**
   * CPU time (user + system, ms) the kernel process has used so far, from /proc (Linux; undefined
   * elsewhere). Unlike wall time it hardly moves with the machine's load, so start-up figures of
   * two kernels compare even on a busy machine. Resolution: one clock tick (10 ms).
   */
  cpuMs(): number | undefined {
    const pid = this.child?.pid;
    if (pid === undefined) return undefined;
    try {
      // Fields after the command name (which may hold spaces, so split after its closing paren).
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      // utime, stime, cutime, cstime: fields 14-17 of proc(5); index 0 here is field 3 (state).
      const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0);
      return (ticks * 1000) / CLOCK_TICKS;
    } catch {
      return undefined;
    }
  }

  async execute(code: string): Promise<Message> {
    const reply = await this.request('execute_request', {
      code,
      silent: false,
      store_history: true,
      user_expressions: {},
      allow_stdin: false,
      stop_on_error: true,
    });
    const status = (reply.content as { status?: string }).status;
    if (status !== 'ok') throw new Error(`cell failed: ${JSON.stringify(reply.content)}`);
    return reply;
  }

  async stop(): Promise<void> {
    const exited =
      this.child && this.child.exitCode === null ? new Promise((r) => this.child!.once('exit', r)) : Promise.resolve();
    this.child?.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    this.child?.kill('SIGKILL');
    this.shell.close();
    this.iopub.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
