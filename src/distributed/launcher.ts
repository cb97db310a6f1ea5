/**
 * Starts and watches a node's ranks, as torchrun's agent: one process per device (worker-main.js) with
 * VQALAB_DIST_* telling it where the rendezvous is and which rank it is (node_rank · ranks per node +
 * local rank). An unexpected exit is reported with the rank, its pid, device, exit code or signal and the
 * last lines it wrote; `kill` ends every rank still running (SIGKILL: a hung rank does not answer more).
 *
 * On the driver's node the launcher reports to the rendezvous server directly; on the other nodes
 * `runNodeAgent` connects to the driver as an agent: it forwards exits and kills its ranks on a fault.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Device } from '../engine/types.js';
import { readMessages, sendMessage } from './wire.js';

export interface LaunchOptions {
  /** This node's devices, one rank each. */
  devices: Device[];
  nodeRank: number;
  /** Ranks in the whole run (nodes × devices per node). */
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  /** More environment for the ranks (e.g. VQALAB_THREADS, NCCL_DEBUG). */
  env?: Record<string, string>;
  /** Each line a rank writes, prefixed with its rank. Default: kept only for fault messages. */
  log?: (line: string) => void;
}

export interface RankExit {
  rank: number;
  pid: number;
  device: Device;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The last lines it wrote (stderr and stdout). */
  tail: string[];
}

export function describeExit(e: RankExit): string {
  const how = e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
  const tail = e.tail.length ? `; its last lines:\n  ${e.tail.join('\n  ')}` : '';
  return `rank ${e.rank} (pid ${e.pid}, ${e.device}) ${how}${tail}`;
}

const TAIL_LINES = 20;

export class LocalRanks {
  private readonly children: { child: ChildProcess; rank: number; device: Device; tail: string[]; done: boolean }[] =
    [];
  private readonly exitListeners: ((e: RankExit) => void)[] = [];
  private stopping = false;
  private readonly exited: Promise<void>;

  constructor(o: LaunchOptions) {
    const entry = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker-main.js');
    const perNode = o.devices.length;
    const waits: Promise<void>[] = [];
    o.devices.forEach((device, local) => {
      const rank = o.nodeRank * perNode + local;
      const child = spawn(process.execPath, [entry], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          // NCCL's NVLink multicast (NVLS) stays off unless asked for: on a shared host a program using it
          // can put the host's GPUs out of service.
          NCCL_NVLS_ENABLE: '0',
          ...process.env,
          ...o.env,
          VQALAB_DIST_MASTER_ADDR: o.masterAddr,
          VQALAB_DIST_MASTER_PORT: String(o.masterPort),
          VQALAB_DIST_RANK: String(rank),
          VQALAB_DIST_WORLD_SIZE: String(o.worldSize),
          VQALAB_DIST_LOCAL_RANK: String(local),
          VQALAB_DIST_NODE_RANK: String(o.nodeRank),
          VQALAB_DIST_DEVICE: device,
          VQALAB_DIST_TIMEOUT_MS: String(o.timeoutMs),
        },
      });
      const entryRec = { child, rank, device, tail: [] as string[], done: false };
      this.children.push(entryRec);
      const onLines = (buf: Buffer) => {
        for (const line of buf.toString('utf8').split('\n')) {
          if (!line) continue;
          entryRec.tail.push(line);
          if (entryRec.tail.length > TAIL_LINES) entryRec.tail.shift();
          o.log?.(`[rank ${rank}] ${line}`);
        }
      };
      child.stdout!.on('data', onLines);
      child.stderr!.on('data', onLines);
      waits.push(
        new Promise((resolve) => {
          child.on('exit', (code, signal) => {
            entryRec.done = true;
            const e: RankExit = { rank, pid: child.pid ?? -1, device, code, signal, tail: [...entryRec.tail] };
            if (!this.stopping && (code !== 0 || signal)) for (const l of this.exitListeners) l(e);
            resolve();
          });
        }),
      );
    });
    this.exited = Promise.all(waits).then(() => undefined);
  }

  get pids(): number[] {
    return this.children.map((c) => c.child.pid ?? -1);
  }

  /** Called for a rank that exits with an error or a signal before kill(). */
  onExit(listener: (e: RankExit) => void): void {
    this.exitListeners.push(listener);
  }

  /** SIGKILL every rank still running; resolves when all have exited. */
  async kill(): Promise<void> {
    this.stopping = true;
    for (const c of this.children) if (!c.done) c.child.kill('SIGKILL');
    await this.exited;
  }

  /** Resolves when every rank has exited (after the driver's close). */
  async waitExit(): Promise<void> {
    this.stopping = true;
    await this.exited;
  }
}

/**
 * A node other than the driver's (`vqalab train --nodes K --node-rank R`, R > 0): starts this node's
 * ranks and stays connected to the driver until the run ends. Resolves with 0 when the driver ends the
 * run, 1 after a fault (its ranks killed).
 */
export async function runNodeAgent(o: LaunchOptions & { log: (line: string) => void }): Promise<number> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const deadline = Date.now() + o.timeoutMs;
    const attempt = () => {
      const s: net.Socket = net.connect(o.masterPort, o.masterAddr, () => resolve(s));
      s.once('error', (err: Error) => {
        if (Date.now() > deadline)
          reject(new Error(`cannot reach the driver at ${o.masterAddr}:${o.masterPort}: ${err.message}`));
        else setTimeout(attempt, 200);
      });
    };
    attempt();
  });
  sendMessage(socket, { t: 'agent', nodeRank: o.nodeRank });
  const ranks = new LocalRanks(o);
  ranks.onExit((e) => {
    o.log(describeExit(e));
    sendMessage(socket, { t: 'agent-fault', rank: e.rank, message: describeExit(e) });
  });
  return new Promise((resolve) => {
    let ended = false;
    readMessages(socket, (raw) => {
      const m = raw as { t: string; reason?: string };
      if (m.t === 'kill') {
        ended = true;
        o.log(`the driver stopped the run: ${m.reason ?? ''}`);
        void ranks.kill().then(() => resolve(1));
      } else if (m.t === 'done') {
        ended = true;
        void ranks.waitExit().then(() => resolve(0));
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (ended) return;
      o.log('lost the driver; stopping this node');
      void ranks.kill().then(() => resolve(1));
    });
  });
}
