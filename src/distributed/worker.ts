/**
 * One rank of a data-parallel run (docs/multi-gpu.md), in its own process (src/distributed/worker-main.ts
 * is the entry the launcher starts). It joins the rendezvous, creates the collective (NCCL on GPUs, the
 * cpu collective otherwise), builds its Trainer from the recipe over a ShardedModel, and runs the driver's
 * commands: init, step, sft, evaluate, save, hash, close. Every rank runs every command (same seeds, same
 * engine calls); rank 0 alone writes metrics and checkpoints and returns full results to the driver.
 */
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { native } from '../engine/native.js';
import type { Device, EngineModel } from '../engine/types.js';
import type { NativeCollective } from '../engine/native.js';
import { Trainer, type StepOutput, type TrainerOptions } from '../grpo/trainer.js';
import { RendezvousClient } from './rendezvous.js';
import { ShardedModel, type NativeBacked } from './sharded-model.js';

/** What a recipe is told about the rank it builds for. */
export interface RecipeContext {
  rank: number;
  worldSize: number;
  localRank: number;
  nodeRank: number;
  /** The device this rank trains on ('cpu' or 'cuda:N'): load the model there. */
  device: Device;
  /** The recipe's arguments (DistributedTrainer's `recipe.args`), as JSON. */
  args: unknown;
}

/**
 * What a recipe returns: the Trainer's options without the model, and how to load a model folder on
 * this rank's device (the starting weights, a checkpoint on resume with its optimizer, a reference).
 */
export interface Recipe {
  options: Omit<TrainerOptions, 'model' | 'loadModel' | 'outputDir'>;
  /** The starting weights (a model folder). */
  modelDir: string;
  load: (dir: string, o: { loadOptimizer: boolean }) => Promise<EngineModel>;
}

export type RecipeFn = (ctx: RecipeContext) => Promise<Recipe> | Recipe;

/** Where a recipe lives: a module (path or URL) and its export (default `recipe`). */
export interface RecipeRef {
  module: string;
  export?: string;
  args?: unknown;
}

export interface WorkerEnv {
  masterAddr: string;
  masterPort: number;
  rank: number;
  worldSize: number;
  localRank: number;
  nodeRank: number;
  device: Device;
  timeoutMs: number;
}

/** Reads the worker's place from the environment the launcher set (VQALAB_DIST_*). */
export function workerEnv(env: NodeJS.ProcessEnv = process.env): WorkerEnv {
  const need = (k: string): string => {
    const v = env[k];
    if (v === undefined || v === '')
      throw new Error(`distributed worker: ${k} is not set (start workers with the launcher)`);
    return v;
  };
  return {
    masterAddr: need('VQALAB_DIST_MASTER_ADDR'),
    masterPort: Number(need('VQALAB_DIST_MASTER_PORT')),
    rank: Number(need('VQALAB_DIST_RANK')),
    worldSize: Number(need('VQALAB_DIST_WORLD_SIZE')),
    localRank: Number(need('VQALAB_DIST_LOCAL_RANK')),
    nodeRank: Number(env.VQALAB_DIST_NODE_RANK ?? '0'),
    device: need('VQALAB_DIST_DEVICE') as Device,
    timeoutMs: Number(env.VQALAB_DIST_TIMEOUT_MS ?? '300000'),
  };
}

const cudaIndex = (d: Device): number | undefined =>
  d === 'cuda' ? 0 : d.startsWith('cuda:') ? Number(d.slice(5)) : undefined;

/** The groups without their processed pixels (the driver shows samples; pixels stay on the ranks). */
function light(out: StepOutput): StepOutput {
  return {
    ...out,
    groups: out.groups.map((g) => ({
      ...g,
      prompt: {
        ids: g.prompt.ids,
        images: g.prompt.images.map((im) => ({ ...im, pixels: new Float32Array(0) })),
      },
    })),
  };
}

async function loadRecipe(ref: RecipeRef, ctx: RecipeContext): Promise<Recipe> {
  const url = /^[a-z]+:/.test(ref.module) ? ref.module : pathToFileURL(ref.module).href;
  const mod = (await import(url)) as Record<string, unknown>;
  const fn = mod[ref.export ?? 'recipe'];
  if (typeof fn !== 'function')
    throw new Error(`recipe ${ref.module}: no exported function "${ref.export ?? 'recipe'}" (docs/multi-gpu.md)`);
  return (fn as RecipeFn)(ctx);
}

export class Worker {
  private trainer: Trainer | undefined;
  private model: ShardedModel | undefined;
  private collective: NativeCollective | undefined;

  constructor(
    private readonly env: WorkerEnv,
    private readonly client: RendezvousClient,
  ) {}

  /** Joins the run and serves commands until `close` (resolves) or the driver goes away. */
  static async run(env: WorkerEnv): Promise<void> {
    const client = await RendezvousClient.connect(
      env.masterAddr,
      env.masterPort,
      {
        rank: env.rank,
        worldSize: env.worldSize,
        localRank: env.localRank,
        nodeRank: env.nodeRank,
        host: os.hostname(),
        pid: process.pid,
        device: env.device,
      },
      env.timeoutMs,
    );
    const w = new Worker(env, client);
    await new Promise<void>((resolve, reject) => {
      client.on((m) => {
        w.handle(m).then(
          (done) => done && resolve(),
          (err: unknown) => reject(err),
        );
      });
    });
  }

  private backend(): 'cpu' | 'nccl' {
    return cudaIndex(this.env.device) === undefined || process.env.VQALAB_DIST_BACKEND === 'cpu' ? 'cpu' : 'nccl';
  }

  /** One message from the driver; true when the worker is done. */
  private async handle(m: { t: string } & Record<string, unknown>): Promise<boolean> {
    switch (m.t) {
      case 'make-id': {
        const dev = cudaIndex(this.env.device);
        const id =
          this.backend() === 'nccl'
            ? native().collectiveId('nccl', dev ?? 0)
            : native().collectiveId('cpu', this.env.masterAddr);
        this.client.send({ t: 'id', id });
        return false;
      }
      case 'start': {
        try {
          this.collective = await native().createCollective({
            backend: this.backend(),
            id: m.id as Uint8Array,
            rank: this.env.rank,
            size: this.env.worldSize,
            device: cudaIndex(this.env.device) ?? 0,
            timeoutMs: this.env.timeoutMs,
          });
        } catch (err) {
          this.client.send({ t: 'fatal', message: `creating the collective: ${(err as Error).message}` });
          return false;
        }
        this.client.send({ t: 'ready' });
        return false;
      }
      case 'cmd': {
        const id = m.id as number;
        try {
          const value = await this.command(m.op as string, (m.args ?? {}) as Record<string, unknown>);
          this.client.send({ t: 'reply', id, ok: true, value });
          if (m.op === 'close') {
            this.client.close();
            return true;
          }
        } catch (err) {
          this.client.send({ t: 'reply', id, ok: false, error: (err as Error).stack ?? String(err) });
        }
        return false;
      }
      case 'closed':
        // the driver went away (a fault elsewhere, or its process ended): nothing left to do here
        this.collective?.abort();
        process.exit(1);
    }
    return false;
  }

  private get rank0(): boolean {
    return this.env.rank === 0;
  }

  private need(): Trainer {
    if (!this.trainer) throw new Error('the rank has no trainer yet (init first)');
    return this.trainer;
  }

  private async command(op: string, a: Record<string, unknown>): Promise<unknown> {
    switch (op) {
      case 'init':
        return this.init(a as { recipe: RecipeRef; outputDir?: string; resume?: string; bucketFloats?: number });
      case 'step': {
        const out = await this.need().step();
        return this.rank0 ? light(out) : null;
      }
      case 'sft': {
        const ms = await this.need().sft(a as unknown as Parameters<Trainer['sft']>[0]);
        return this.rank0 ? ms : null;
      }
      case 'evaluate': {
        const s = await this.need().evaluate(a.split as string, {
          ...(a.limit !== undefined ? { limit: a.limit as number } : {}),
        });
        return this.rank0 ? s : null;
      }
      case 'save':
        // one copy of the (identical) weights: rank 0 writes it
        return this.rank0 ? this.need().save(a.dir as string | undefined) : null;
      case 'hash':
        return this.model!.weightsHash();
      case 'state': {
        const t = this.need();
        return { step: t.globalStep, sftSteps: t.sftSteps };
      }
      case 'close':
        this.trainer?.model.dispose();
        this.collective?.destroy();
        return null;
      default:
        throw new Error(`unknown command ${op}`);
    }
  }

  private async init(a: { recipe: RecipeRef; outputDir?: string; resume?: string; bucketFloats?: number }) {
    const e = this.env;
    const r = await loadRecipe(a.recipe, {
      rank: e.rank,
      worldSize: e.worldSize,
      localRank: e.localRank,
      nodeRank: e.nodeRank,
      device: e.device,
      args: a.recipe.args,
    });
    // The policy and a reference copy (β > 0) both share their calls between the ranks; the reference
    // is loaded at the same step on every rank, so its gathers line up.
    const shard = async (m: EngineModel) => {
      if (typeof (m as Partial<NativeBacked>)._withNative !== 'function')
        throw new Error('recipe: load() must return a model of the native engine (loadModel)');
      return ShardedModel.create(m as NativeBacked, this.client, this.collective!, {
        rank: e.rank,
        size: e.worldSize,
        ...(a.bucketFloats ? { bucketFloats: a.bucketFloats } : {}),
      });
    };
    const wrap = async (m: EngineModel) => {
      this.model = await shard(m);
      return this.model;
    };
    const base = {
      ...r.options,
      // metrics.jsonl and checkpoints: rank 0's (every rank holds the same weights and state)
      ...(this.rank0 && a.outputDir ? { outputDir: a.outputDir } : {}),
      recordFacts: this.rank0 ? r.options.recordFacts : false,
    };
    if (a.resume) {
      this.trainer = await Trainer.resume(a.resume, {
        ...base,
        loadModel: async (dir, { role }) =>
          role === 'resume'
            ? wrap(await r.load(dir, { loadOptimizer: true }))
            : shard(await r.load(dir, { loadOptimizer: false })),
      });
    } else {
      const model = await wrap(await r.load(r.modelDir, { loadOptimizer: false }));
      this.trainer = new Trainer({
        ...base,
        model,
        loadModel: async (dir, { role }) => shard(await r.load(dir, { loadOptimizer: role === 'resume' })),
      });
    }
    return {
      step: this.trainer.globalStep,
      sftSteps: this.trainer.sftSteps,
      config: this.rank0 ? { ...this.trainer.config } : null,
      hash: await this.model!.weightsHash(),
    };
  }
}
