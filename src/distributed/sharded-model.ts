/**
 * The engine model of one rank of a data-parallel run (docs/multi-gpu.md). Every rank runs the same
 * Trainer with the same seeds, so every rank makes the same engine calls in the same order; this model
 * shares the heavy ones out:
 *
 *   sampleBatch   each rank samples its block of the requests (one request = one prompt's group of G:
 *                 groups are never split), then the tokens and log-probs are all-gathered: every rank
 *                 has every group, scores rewards and computes the same advantages.
 *   forward       each rank forwards its block of the requests; log-probs and entropies are all-gathered,
 *                 so every rank computes the same loss and dL/dlogp for every token.
 *   backward      each rank back-propagates its block only: its gradient is its share of the minibatch's
 *                 gradient (the loss is aggregated with the whole minibatch's denominators).
 *   step          the gradients are summed over the ranks (the native collective: NCCL on GPUs), then
 *                 every rank takes the same AdamW step; the ranks check they saw the same gradient norm.
 *
 * A rank's failure in forward or backward (out of GPU memory, say) is all-gathered too, so every rank
 * throws the same error and the trainer's handling (a smaller micro-batch) stays in step everywhere.
 * `deviceMemory` returns what the last gather saw on the tightest rank, the same on every rank, so the
 * micro-batch sizer decides the same everywhere.
 */
import type {
  AdamWOptions,
  CallOptions,
  DeviceMemory,
  EngineModel,
  ForwardRequest,
  ForwardResult,
  SampleRequest,
  SampleResult,
  SampleStats,
  StepResult,
} from '../engine/types.js';
import type { NativeCollective, NativeModel } from '../engine/native.js';
import { noSamples } from '../engine/sampling.js';

/** The all-gather of small values between the ranks (RendezvousClient.gather). */
export interface Gather {
  gather<T>(value: T): Promise<T[]>;
}

/** The engine model the ranks wrap: the native engine's, with its call-ordered native handle. */
export type NativeBacked = EngineModel & { _withNative<T>(fn: (nm: NativeModel) => T | Promise<T>): Promise<T> };

export interface ShardOptions {
  rank: number;
  size: number;
  /** Floats per all-reduce of the gradients. Default 2^25 (128 MiB). */
  bucketFloats?: number;
}

/** Requests [from, to) of `rank` among `n`: contiguous blocks, sizes differing by one at most. */
export function shardOf(n: number, rank: number, size: number): [number, number] {
  return [Math.floor((n * rank) / size), Math.floor((n * (rank + 1)) / size)];
}

interface Part<T> {
  value?: T;
  error?: string;
  memory?: DeviceMemory;
}

/** The tightest rank's view: least available, most used, highest peak. */
function tightest(ms: (DeviceMemory | undefined)[]): DeviceMemory | undefined {
  const all = ms.filter((m): m is DeviceMemory => m !== undefined && m !== null); // undefined travels as null
  if (all.length === 0) return undefined;
  return {
    peakMiB: Math.max(...all.map((m) => m.peakMiB)),
    usedMiB: Math.max(...all.map((m) => m.usedMiB)),
    availableMiB: Math.min(...all.map((m) => m.availableMiB)),
    totalMiB: Math.min(...all.map((m) => m.totalMiB)),
  };
}

export class ShardedModel implements EngineModel {
  readonly device;
  readonly config;
  readonly namingScheme;
  readonly maxSequenceLength;
  readonly numParameters;
  /**
   * The device's training pack times the ranks: the trainer's micro-batches are the whole minibatch's,
   * and each rank forwards about 1/N of one (undefined on the CPU, as the engine's).
   */
  readonly packRows?: number;
  private readonly bucket: number;
  /** Requests of the last keepForBackward forward, and whether this rank kept any. */
  private kept: { n: number; own: boolean } | undefined;
  private memory: DeviceMemory | undefined;

  private constructor(
    readonly inner: NativeBacked,
    private readonly comm: Gather,
    private readonly collective: NativeCollective,
    private readonly o: ShardOptions,
  ) {
    this.device = inner.device;
    this.config = inner.config;
    this.namingScheme = inner.namingScheme;
    this.maxSequenceLength = inner.maxSequenceLength;
    this.numParameters = inner.numParameters;
    if (inner.packRows !== undefined) this.packRows = inner.packRows * o.size;
    this.bucket = o.bucketFloats ?? 2 ** 25;
    if (!inner.deviceMemory) this.deviceMemory = undefined;
  }

  /** Wraps `inner`; one gather first, so that deviceMemory() is the same on every rank from the start. */
  static async create(inner: NativeBacked, comm: Gather, collective: NativeCollective, o: ShardOptions) {
    const m = new ShardedModel(inner, comm, collective, o);
    m.memory = tightest(await comm.gather(inner.deviceMemory?.(false)));
    return m;
  }

  get rank(): number {
    return this.o.rank;
  }

  get stepCount(): number {
    return this.inner.stepCount;
  }

  /** Runs this rank's part, all-gathers the parts; any rank's error is thrown on every rank. */
  private async shared<T>(what: string, work: () => Promise<T>): Promise<T[]> {
    const part: Part<T> = {};
    try {
      part.value = await work();
    } catch (err) {
      part.error = err instanceof Error ? err.message : String(err);
    }
    part.memory = this.inner.deviceMemory?.(false);
    const parts = await this.comm.gather(part);
    this.memory = tightest(parts.map((p) => p.memory));
    const bad = parts.findIndex((p) => p.error !== undefined);
    // The message keeps the rank's own text (an "out of GPU memory" stays recognisable).
    if (bad >= 0) throw new Error(`${what} on rank ${bad}: ${parts[bad]!.error}`);
    return parts.map((p) => p.value as T);
  }

  async forward(requests: ForwardRequest[], options?: CallOptions): Promise<ForwardResult[]> {
    const [a, b] = shardOf(requests.length, this.o.rank, this.o.size);
    const keep = requests.some((r) => r.keepForBackward);
    const parts = await this.shared('forward', async () =>
      b > a ? this.inner.forward(requests.slice(a, b), options) : [],
    );
    if (keep) this.kept = { n: requests.length, own: b > a };
    return parts.flat();
  }

  async backward(gradLogprobs: Float32Array[][], options?: CallOptions): Promise<void> {
    const kept = this.kept;
    this.kept = undefined;
    if (!kept)
      throw new Error('backward needs a forward with keepForBackward: true first (each forward is consumed once)');
    if (gradLogprobs.length !== kept.n)
      throw new Error(`backward: ${gradLogprobs.length} requests of gradients for a forward of ${kept.n}`);
    const [a, b] = shardOf(kept.n, this.o.rank, this.o.size);
    await this.shared('backward', async () => {
      if (kept.own) await this.inner.backward(gradLogprobs.slice(a, b), options);
      return true;
    });
  }

  async step(options: AdamWOptions): Promise<StepResult> {
    const parts = await this.shared('step', async () => {
      await this.inner._withNative((nm) => nm.allReduceGrads(this.collective, this.bucket));
      return this.inner.step(options);
    });
    // Same summed gradient, same weights: the same norm to the bit. A difference means the ranks drifted.
    const norms = parts.map((p) => p.gradNorm);
    if (norms.some((n) => !Object.is(n, norms[0]))) {
      throw new Error(
        `the ranks' gradient norms differ after the all-reduce (${norms.map((n, r) => `rank ${r}: ${n}`).join(', ')}): their weights or inputs have drifted apart`,
      );
    }
    return parts[this.o.rank]!;
  }

  sample(request: SampleRequest): Promise<SampleResult> {
    return this.inner.sample(request); // one prompt: every rank samples it (the same tokens everywhere)
  }

  async sampleBatch(requests: SampleRequest[], options?: CallOptions): Promise<SampleResult[]> {
    const [a, b] = shardOf(requests.length, this.o.rank, this.o.size);
    const own = requests.slice(a, b).map((r) =>
      r.onToken
        ? {
            ...r,
            onToken: (e: Parameters<NonNullable<SampleRequest['onToken']>>[0]) =>
              r.onToken!({ ...e, request: e.request + a }),
          }
        : r,
    );
    const batch = this.inner.sampleBatch?.bind(this.inner);
    const parts = await this.shared('sampleBatch', async () =>
      own.length === 0 ? [] : batch ? batch(own, options) : Promise.all(own.map((r) => this.inner.sample(r))),
    );
    const all = parts.flat();
    // Tokens sampled on other ranks reach this rank's listeners after the gather, in order.
    requests.forEach((r, i) => {
      if (!r.onToken || (i >= a && i < b)) return;
      const res = all[i]!;
      res.tokenIds.forEach((ids, row) =>
        ids.forEach((tokenId, t) => r.onToken!({ request: i, row, tokenId, logprob: res.logprobs[row]![t]! })),
      );
    });
    return all;
  }

  sampleStats(): SampleStats {
    return this.inner.sampleStats?.() ?? noSamples();
  }

  deviceMemory?(resetPeak?: boolean): DeviceMemory | undefined {
    if (resetPeak) this.inner.deviceMemory?.(true);
    return this.memory;
  }

  setCheckpointActivations(on: boolean): boolean {
    return this.inner.setCheckpointActivations?.(on) ?? false;
  }

  zeroGrad(): void {
    this.inner.zeroGrad();
  }

  save(dir: string, options?: { optimizer?: boolean; naming?: 'published' | 'internal' }): Promise<void> {
    return this.inner.save(dir, options);
  }

  saveAdapter(dir: string): Promise<void> {
    return this.inner.saveAdapter(dir);
  }

  setLoraEnabled(enabled: boolean): void {
    this.inner.setLoraEnabled(enabled);
  }

  /** This rank's weights hash (native weightsHash): equal on every rank of a healthy run. */
  weightsHash(): Promise<string> {
    return this.inner._withNative((nm) => nm.weightsHash());
  }

  dispose(): void {
    this.inner.dispose();
  }
}
