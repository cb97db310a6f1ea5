/**
 * OnnxEngineModel: the engine's model interface ({@link EngineModel}) over an ONNX folder written by
 * `vqalab export onnx`, run by onnxruntime-node through {@link OnnxModel}; and loadOnnxLocalPolicy, a
 * LocalPolicy over it (`vqalab serve --backend onnx`).
 */
import type {
  CallOptions,
  EngineModel,
  ForwardRequest,
  ForwardResult,
  SampleRequest,
  SampleResult,
  StepResult,
} from '../engine/types.js';
import type { EngineConfig } from '../engine/config.js';
import { checkForwardRequests, checkSampleRequest } from '../engine/check.js';
import { parameterCount } from '../engine/config-check.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { expectInteger } from '../util/validate.js';
import { Qwen2VLImageProcessor } from '../vision/qwen2vl.js';
import { processorOptionsFrom } from '../vision/processor-config.js';
import { LocalPolicy } from './local.js';
import { OnnxModel, type OnnxModelOptions } from './onnx.js';

/**
 * An {@link EngineModel} over an exported folder, for inference: `sample` (the engine's sampler and
 * seeds, streaming through onToken, abort between decode steps) and `forward` (log-probs, entropies and
 * logits in one pass, no cache: top_logprobs). So a LocalPolicy, and with it `vqalab serve`, runs on
 * onnxruntime unchanged. Calls run one at a time (onnxruntime already uses every thread for one);
 * concurrent ones wait their turn instead of sharing a decode loop. Training calls throw.
 */
export class OnnxEngineModel implements EngineModel {
  readonly device = 'cpu' as const;
  readonly namingScheme = 'published' as const;
  readonly numParameters: { total: number; trainable: number };
  readonly stepCount = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;

  constructor(
    readonly onnx: OnnxModel,
    readonly maxSequenceLength: number,
  ) {
    this.numParameters = { total: parameterCount(onnx.config), trainable: 0 };
  }

  get config(): EngineConfig {
    return this.onnx.config;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    if (this.disposed) return Promise.reject(new Error('the ONNX model was disposed'));
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  async sample(request: SampleRequest): Promise<SampleResult> {
    const q = checkSampleRequest(request, this.config, this.maxSequenceLength);
    if (q.signal?.aborted) throw q.signal.reason ?? new Error('aborted');
    const gen = await this.serial(() =>
      this.onnx.generate(q.prompt, {
        n: q.n,
        maxTokens: q.maxTokens,
        temperature: q.temperature,
        topP: q.topP,
        topK: q.topK,
        seed: q.seed,
        stop: new Set(q.stopTokenIds),
        ...(q.signal ? { signal: q.signal } : {}),
        ...(q.onToken
          ? {
              onToken: (row: number, tokenId: number, logprob: number) =>
                q.onToken!({ request: 0, row, tokenId, logprob }),
            }
          : {}),
      }),
    );
    return {
      tokenIds: gen.tokenIds.map((t) => Int32Array.from(t)),
      logprobs: gen.logprobs.map((l) => Float32Array.from(l)),
      finishReason: gen.finishReason,
    };
  }

  async forward(requests: ForwardRequest[], options: CallOptions = {}): Promise<ForwardResult[]> {
    const reqs = checkForwardRequests(requests, this.config, this.maxSequenceLength);
    if (reqs.some((r) => r.keepForBackward))
      throw new Error('keepForBackward: the ONNX backend runs inference only (train on the engine)');
    const V = this.config.vocabSize;
    return this.serial(async () => {
      const out: ForwardResult[] = [];
      for (const r of reqs) {
        const res: ForwardResult = { logprobs: [], entropy: [], ...(r.returnLogits ? { logits: [] } : {}) };
        for (const c of r.completions) {
          if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
          const logits = await this.onnx.logits(r.prompt, c);
          const Lp = r.prompt.ids.length;
          const lp = new Float32Array(c.length),
            ent = new Float32Array(c.length);
          for (let t = 0; t < c.length; t++) {
            const row = logits.subarray((Lp - 1 + t) * V, (Lp + t) * V);
            let mx = -Infinity;
            for (let j = 0; j < V; j++) if (row[j]! > mx) mx = row[j]!;
            let s = 0;
            for (let j = 0; j < V; j++) s += Math.exp(row[j]! - mx);
            const lse = mx + Math.log(s);
            let h = 0;
            for (let j = 0; j < V; j++) {
              const l = row[j]! - lse;
              h -= Math.exp(l) * l;
            }
            lp[t] = row[c[t]!]! - lse;
            ent[t] = h;
          }
          res.logprobs.push(lp);
          res.entropy.push(ent);
          res.logits?.push(logits);
        }
        out.push(res);
      }
      return out;
    });
  }

  private inferenceOnly(what: string): never {
    throw new Error(`${what}: the ONNX backend runs inference only (train on the engine, then export)`);
  }
  backward(): Promise<void> {
    return Promise.reject(
      new Error('backward: the ONNX backend runs inference only (train on the engine, then export)'),
    );
  }
  step(): Promise<StepResult> {
    return Promise.reject(new Error('step: the ONNX backend runs inference only (train on the engine, then export)'));
  }
  save(): Promise<void> {
    return Promise.reject(
      new Error('save: the ONNX backend runs inference only (the exported folder is the checkpoint)'),
    );
  }
  saveAdapter(): Promise<void> {
    return Promise.reject(
      new Error('saveAdapter: the ONNX backend runs inference only (adapters are merged on export)'),
    );
  }
  zeroGrad(): void {
    this.inferenceOnly('zeroGrad');
  }
  setLoraEnabled(): void {
    this.inferenceOnly('setLoraEnabled');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // sessions are released once the calls already queued have finished
    void this.queue.then(() => this.onnx.dispose()).catch(() => undefined);
  }
}

/**
 * A {@link LocalPolicy} whose model is onnxruntime over an exported folder (`vqalab export onnx`): its
 * tokenizer, chat template and image processor come from the folder, as for OnnxPolicy; what the
 * LocalPolicy adds (top_logprobs, stop strings, streaming text) works the same. `vqalab serve --backend onnx`.
 */
export async function loadOnnxLocalPolicy(
  dir: string,
  options: OnnxModelOptions & { name?: string; systemPrompt?: string; maxSequenceLength?: number } = {},
): Promise<LocalPolicy> {
  const onnx = await OnnxModel.load(dir, options);
  try {
    const maxSeq =
      options.maxSequenceLength === undefined
        ? onnx.config.maxPositionEmbeddings
        : expectInteger('options.maxSequenceLength', options.maxSequenceLength, 1);
    return new LocalPolicy({
      model: new OnnxEngineModel(onnx, maxSeq),
      tokenizer: VlmTokenizer.load(dir),
      processor: new Qwen2VLImageProcessor(processorOptionsFrom(dir)),
      name: options.name ?? `onnx:${dir}`,
      ...(options.systemPrompt !== undefined ? { systemPrompt: options.systemPrompt } : {}),
    });
  } catch (err) {
    await onnx.dispose();
    throw err;
  }
}
