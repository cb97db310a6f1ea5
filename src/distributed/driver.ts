/**
 * The driver of a data-parallel run (docs/multi-gpu.md): the notebook kernel or `vqalab train --gpus N`.
 * `DistributedTrainer.launch` listens for the rendezvous, starts one rank per local device (the launcher),
 * waits for every rank (this node's and the other nodes') to join and create the collective, then has
 * each rank build its Trainer from the recipe. Its methods mirror the Trainer's: `step()` returns the
 * same StepOutput as one GPU (rank 0's: every rank has every group), `run`, `sft`, `evaluate`, `save`.
 *
 * Faults: a rank that exits, drops its connection, errors, or hangs past `timeoutMs` stops the run — every
 * local rank is killed, the other nodes' agents kill theirs, and the pending call rejects with a
 * DistributedError naming the rank. Checkpoints are written by rank 0 atomically (temp folder + rename),
 * so the last one stays valid; `launch({ resume })` continues from it on any number of ranks.
 * Every `hashEvery` steps the ranks compare their weights' hashes and the run stops if they differ.
 */
import type { Device } from '../engine/types.js';
import type { GrpoConfig } from '../grpo/config.js';
import type { EvalSummary } from '../grpo/evaluate.js';
import type { StepMetrics } from '../grpo/metrics.js';
import type { SftOptions, StepOutput } from '../grpo/trainer.js';
import { interruptible } from '../util/interrupt.js';
import { describeExit, LocalRanks } from './launcher.js';
import { DistributedError, RendezvousServer } from './rendezvous.js';
import type { RecipeRef } from './worker.js';

export interface DistributedOptions {
  /** This node's devices, one rank each: ['cuda:0', 'cuda:1'], or ['cpu', 'cpu'] (tests, the cpu collective). */
  devices: Device[];
  /** The module whose export builds each rank's Trainer (src/distributed/worker.ts, `Recipe`). */
  recipe: RecipeRef;
  /** metrics.jsonl and checkpoints/ (written by rank 0). */
  outputDir?: string;
  /** Continue from this checkpoint (or run folder), on any number of ranks. */
  resume?: string;
  /** Nodes in the run (default 1); the others start with `vqalab train --node-rank R` (runNodeAgent). */
  nodes?: number;
  /** Where the ranks reach this driver: default 127.0.0.1 on one node (required with several). */
  masterAddr?: string;
  /** The rendezvous port (default: one the system picks; required with several nodes). */
  masterPort?: number;
  /** A rank that has not joined, reached a gather the others wait in, or replied within this is at fault. Default 300000. */
  timeoutMs?: number;
  /** Longest wait for every rank to start, join and create the collective. Default: timeoutMs. */
  startupTimeoutMs?: number;
  /** Compare the ranks' weight hashes every this many steps (0: never). Default 50 (a hash reads every weight back from the device). */
  hashEvery?: number;
  /** Floats per all-reduce of the gradients (default 2^25). */
  bucketFloats?: number;
  /** More environment for the rank processes. */
  env?: Record<string, string>;
  /** The ranks' output lines and the driver's notes. */
  log?: (line: string) => void;
}

export interface DistributedRunOptions {
  steps: number;
  /** Checkpoint every N steps (0: only at the end). Default 0. */
  checkpointEvery?: number;
  onStep?: (out: StepOutput) => void | Promise<void>;
  /** Stops at the next step boundary. */
  signal?: AbortSignal;
  /** Also stop at the next step boundary on an interrupt of the process (Ctrl-C, the kernel's interrupt). Default true. */
  handleSigint?: boolean;
}

export interface DistributedRunResult {
  stepsRun: number;
  stoppedBy: 'steps' | 'abort';
  lastStep: number;
  checkpoints: string[];
}

export class DistributedTrainer {
  private step_: number;
  private sftSteps_: number;
  private closed = false;

  private constructor(
    private readonly server: RendezvousServer,
    private readonly local: LocalRanks,
    private readonly o: DistributedOptions,
    init: { step: number; sftSteps: number; config: GrpoConfig },
  ) {
    this.step_ = init.step;
    this.sftSteps_ = init.sftSteps;
    this.config = init.config;
  }

  readonly config: Readonly<GrpoConfig>;

  /** Starts the ranks and builds their trainers; rejects with a DistributedError if a rank fails. */
  static async launch(o: DistributedOptions): Promise<DistributedTrainer> {
    if (!Array.isArray(o.devices) || o.devices.length === 0)
      throw new TypeError(
        'DistributedTrainer.launch: devices must list at least one device, e.g. ["cuda:0", "cuda:1"]',
      );
    const nodes = o.nodes ?? 1;
    if (nodes > 1 && (o.masterAddr === undefined || o.masterPort === undefined))
      throw new TypeError('DistributedTrainer.launch: with several nodes, masterAddr and masterPort are required');
    const timeoutMs = o.timeoutMs ?? 300_000;
    const worldSize = nodes * o.devices.length;
    const masterAddr = o.masterAddr ?? '127.0.0.1';
    const server = await RendezvousServer.listen({
      host: nodes > 1 ? '0.0.0.0' : masterAddr,
      port: o.masterPort ?? 0,
      worldSize,
      timeoutMs,
      ...(o.startupTimeoutMs !== undefined ? { startupTimeoutMs: o.startupTimeoutMs } : {}),
    });
    const local = new LocalRanks({
      devices: o.devices,
      nodeRank: 0,
      worldSize,
      masterAddr,
      masterPort: server.port,
      timeoutMs,
      ...(o.env ? { env: o.env } : {}),
      ...(o.log ? { log: o.log } : {}),
    });
    local.onExit((e) => server.fail(new DistributedError(describeExit(e), e.rank)));
    server.onFault((err) => {
      o.log?.(`distributed run stopped: ${err.message}`);
      void local.kill();
    });
    try {
      await server.waitReady();
      const replies = (await server.command('init', {
        recipe: o.recipe,
        ...(o.outputDir ? { outputDir: o.outputDir } : {}),
        ...(o.resume ? { resume: o.resume } : {}),
        ...(o.bucketFloats ? { bucketFloats: o.bucketFloats } : {}),
      })) as { step: number; sftSteps: number; config: GrpoConfig | null; hash: string }[];
      checkHashes(
        replies.map((r) => r.hash),
        'at the start',
      );
      return new DistributedTrainer(server, local, o, { ...replies[0]!, config: replies[0]!.config! });
    } catch (err) {
      await local.kill();
      await server.close();
      throw err;
    }
  }

  get worldSize(): number {
    return this.server.worldSize;
  }

  /** GRPO steps done so far (the index the next step() gets). */
  get globalStep(): number {
    return this.step_;
  }

  get sftSteps(): number {
    return this.sftSteps_;
  }

  /** The local ranks' process ids (rank order). */
  get pids(): number[] {
    return this.local.pids;
  }

  private async all(op: string, args: unknown = {}): Promise<unknown[]> {
    if (this.closed) throw new Error('this distributed trainer is closed');
    try {
      return await this.server.command(op, args);
    } catch (err) {
      if (err instanceof DistributedError) {
        await this.local.kill();
        await this.server.close();
        this.closed = true;
      }
      throw err;
    }
  }

  /** One GRPO step on every rank; the result has the shape of Trainer.step()'s (prompt pixels left out). */
  async step(): Promise<StepOutput> {
    const out = (await this.all('step'))[0] as StepOutput;
    this.step_ = out.step + 1;
    const every = this.o.hashEvery ?? 50;
    if (every > 0 && this.step_ % every === 0) await this.checkWeights();
    return out;
  }

  async sft(options: Omit<SftOptions, 'signal' | 'onStep'>): Promise<StepMetrics[]> {
    const ms = (await this.all('sft', options))[0] as StepMetrics[];
    this.sftSteps_ += ms.length;
    return ms;
  }

  async evaluate(split: string, options: { limit?: number } = {}): Promise<EvalSummary> {
    return (await this.all('evaluate', { split, ...options }))[0] as EvalSummary;
  }

  /** A checkpoint by rank 0 (default place: outputDir/checkpoints/checkpoint-NNNNNN); returns its folder. */
  async save(dir?: string): Promise<string> {
    return (await this.all('save', dir === undefined ? {} : { dir }))[0] as string;
  }

  /** Every rank's weights hash (rank order). */
  async weightsHashes(): Promise<string[]> {
    return (await this.all('hash')) as string[];
  }

  /** Stops the run with a DistributedError when the ranks' weights differ; returns the common hash. */
  async checkWeights(): Promise<string> {
    const hashes = await this.weightsHashes();
    try {
      checkHashes(hashes, `after step ${this.step_ - 1}`);
    } catch (err) {
      this.server.fail(err as DistributedError);
      await this.local.kill();
      await this.server.close();
      this.closed = true;
      throw err;
    }
    return hashes[0]!;
  }

  /** Steps until `steps` are done or `signal` stops it at a step boundary; checkpoints as asked and at the end. */
  async run(o: DistributedRunOptions): Promise<DistributedRunResult> {
    if (o.handleSigint ?? true) return interruptible((signal) => this.runLoop({ ...o, signal }), o.signal);
    return this.runLoop(o);
  }

  private async runLoop(o: DistributedRunOptions): Promise<DistributedRunResult> {
    const result: DistributedRunResult = { stepsRun: 0, stoppedBy: 'steps', lastStep: this.step_ - 1, checkpoints: [] };
    let savedAt = -1;
    for (let i = 0; i < o.steps; i++) {
      if (o.signal?.aborted) {
        result.stoppedBy = 'abort';
        break;
      }
      const out = await this.step();
      result.stepsRun++;
      result.lastStep = out.step;
      await o.onStep?.(out);
      const every = o.checkpointEvery ?? 0;
      if (every > 0 && this.step_ % every === 0) {
        result.checkpoints.push(await this.save());
        savedAt = this.step_;
      }
    }
    if (this.o.outputDir && result.stepsRun > 0 && savedAt !== this.step_) result.checkpoints.push(await this.save());
    return result;
  }

  /** Ends every rank and the rendezvous. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.server.command('close');
    } finally {
      await this.local.waitExit();
      await this.server.close();
    }
  }
}

function checkHashes(hashes: string[], when: string): void {
  if (hashes.every((h) => h === hashes[0])) return;
  const odd = hashes.findIndex((h) => h !== hashes[0]);
  throw new DistributedError(
    `the ranks' weights differ ${when} (${hashes.map((h, r) => `rank ${r}: ${h}`).join(', ')}): the run is stopped; resume from the last checkpoint`,
    odd,
  );
}
