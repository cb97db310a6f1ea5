/**
 * The kernel's ZeroMQ sockets (shell, control, stdin, iopub, heartbeat), bound to the ports of the
 * connection file. Decodes each request, hands it to the handler with a `reply` for its channel,
 * and publishes what the handler publishes. Knows nothing about what requests mean.
 */
import { readFileSync } from 'node:fs';
import * as zmq from 'zeromq';
import {
  childMessage,
  decode,
  encode,
  orphanMessage,
  type ConnectionInfo,
  type Message,
} from '../src/jupyter/message.js';

export interface RequestSink {
  handle(msg: Message, reply: (msgType: string, content: unknown) => void): Promise<void>;
}

/** Read and check a connection file (the one Jupyter passes as `{connection_file}`). */
export function readConnectionFile(file: string): ConnectionInfo {
  let info: Partial<ConnectionInfo>;
  try {
    info = JSON.parse(readFileSync(file, 'utf8')) as Partial<ConnectionInfo>;
  } catch (err) {
    throw new Error(`cannot read the connection file ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  for (const port of ['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'] as const) {
    if (!Number.isInteger(info[port]))
      throw new Error(`connection file ${file}: expected an integer ${port} but found ${JSON.stringify(info[port])}`);
  }
  if (typeof info.ip !== 'string')
    throw new Error(`connection file ${file}: expected a string ip but found ${JSON.stringify(info.ip)}`);
  return {
    transport: info.transport ?? 'tcp',
    ip: info.ip,
    key: info.key ?? '',
    signature_scheme: info.signature_scheme ?? 'hmac-sha256',
    shell_port: info.shell_port!,
    iopub_port: info.iopub_port!,
    stdin_port: info.stdin_port!,
    control_port: info.control_port!,
    hb_port: info.hb_port!,
  };
}

function address(c: ConnectionInfo, port: number): string {
  return c.transport === 'ipc' ? `ipc://${c.ip}-${port}` : `tcp://${c.ip}:${port}`;
}

export class KernelServer {
  private readonly shell = new zmq.Router();
  private readonly control = new zmq.Router();
  private readonly stdin = new zmq.Router();
  private readonly iopub = new zmq.Publisher();
  private readonly hb = new zmq.Reply();
  /**
   * Sends waiting behind a blocked one, per socket (zeromq.js allows one pending send per
   * socket). Router and Publisher sockets never block, so in practice every send is queued in
   * ZeroMQ at once, synchronously: output printed just before a long synchronous computation
   * still leaves (ZeroMQ's I/O thread sends it while JavaScript is busy).
   */
  private readonly chains = new Map<zmq.Socket, { tail: Promise<void>; waiting: number }>();
  readonly session: string;

  constructor(
    private readonly connection: ConnectionInfo,
    private readonly log: (line: string) => void,
  ) {
    this.session = crypto.randomUUID();
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.linger = 1000;
  }

  private send(socket: zmq.Writable & zmq.Socket, frames: Buffer[]): void {
    const chain = this.chains.get(socket) ?? { tail: Promise.resolve(), waiting: 0 };
    this.chains.set(socket, chain);
    const failed = (err: unknown) => {
      if (!socket.closed) this.log(`send failed: ${err instanceof Error ? err.message : String(err)}`);
    };
    const done = () => {
      chain.waiting -= 1;
    };
    chain.waiting += 1;
    if (chain.waiting === 1) {
      // Nothing pending: hand the message to ZeroMQ now, not in a later microtask.
      chain.tail = socket.send(frames).then(done, (err: unknown) => {
        done();
        failed(err);
      });
    } else {
      chain.tail = chain.tail
        .then(() => socket.send(frames))
        .then(done, (err: unknown) => {
          done();
          failed(err);
        });
    }
  }

  /** Publish on IOPub as a child of `parent`. */
  publish = (parent: Message<unknown>, msgType: string, content: unknown): void => {
    const msg = childMessage(parent, msgType, content, [Buffer.from(`kernel.${msgType}`)]);
    this.send(this.iopub, encode(msg, this.connection.key, this.connection.signature_scheme));
  };

  /** Bind every socket, then serve requests until `close()`. */
  async start(handler: RequestSink): Promise<void> {
    const c = this.connection;
    await Promise.all([
      this.shell.bind(address(c, c.shell_port)),
      this.control.bind(address(c, c.control_port)),
      this.stdin.bind(address(c, c.stdin_port)),
      this.iopub.bind(address(c, c.iopub_port)),
      this.hb.bind(address(c, c.hb_port)),
    ]);
    void this.serve(this.shell, handler);
    void this.serve(this.control, handler);
    void this.heartbeat();
    const starting = orphanMessage(this.session, 'status', { execution_state: 'starting' });
    starting.identities = [Buffer.from('kernel.status')];
    this.send(this.iopub, encode(starting, c.key, c.signature_scheme));
  }

  private async serve(socket: zmq.Router, handler: RequestSink): Promise<void> {
    try {
      for await (const frames of socket) {
        let msg: Message;
        try {
          msg = decode(frames, this.connection.key, this.connection.signature_scheme);
        } catch (err) {
          this.log(`dropped a message: ${err instanceof Error ? err.message : String(err)}`);
          continue;
        }
        const reply = (msgType: string, content: unknown) => {
          this.send(
            socket,
            encode(childMessage(msg, msgType, content), this.connection.key, this.connection.signature_scheme),
          );
        };
        void handler.handle(msg, reply);
      }
    } catch (err) {
      if (!socket.closed) this.log(`socket loop ended: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async heartbeat(): Promise<void> {
    try {
      for await (const frames of this.hb) await this.hb.send(frames);
    } catch (err) {
      if (!this.hb.closed) this.log(`heartbeat ended: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /**
   * Resolves once every message already waiting on the shell socket has been read and handed to
   * the handler (so the handler can abort them after a failed cell, as IPython does).
   */
  async drainShell(): Promise<void> {
    do await new Promise((resolve) => setImmediate(resolve));
    while (this.shell.readable);
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** Wait for queued sends, then close every socket. */
  async close(): Promise<void> {
    await Promise.all([...this.chains.values()].map((c) => c.tail));
    for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.close();
  }
}
