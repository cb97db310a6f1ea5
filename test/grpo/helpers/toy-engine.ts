/**
 * A small, real implementation of the engine contract (src/engine/types.ts) in TypeScript, for
 * testing the trainer's logic without the native engine: a log-linear policy whose next-token
 * logits are out·h + bias with h = emb[previous token] + mean of bag[prompt tokens] + img·(image
 * channel means). Forward, backward (exact gradients), seeded sampling, AdamW with global-norm
 * clipping and NaN skipping, save/load with optimizer state — all deterministic, so resumed runs
 * can be compared bit for bit. Not a model of Qwen2-VL: the trainer must work over any engine.
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import type {
  AdamWOptions,
  Device,
  EngineConfig,
  EngineModel,
  ForwardRequest,
  ForwardResult,
  SampleRequest,
  SampleResult,
  StepResult,
} from '../../../src/engine/types.js';
import { Rng } from '../../../src/util/rng.js';

const NAMES = ['emb', 'bag', 'img', 'out', 'bias', 'lora'] as const;
type Name = (typeof NAMES)[number];

export class ToyEngine implements EngineModel {
  readonly device: Device = 'cpu';
  readonly namingScheme = 'published' as const;
  readonly maxSequenceLength = 4096;
  /** The contract asks for a Qwen2-VL config; the toy fills what it can (it is not a transformer). */
  readonly config: EngineConfig;
  params: Record<Name, Float32Array>;
  grads: Record<Name, Float32Array>;
  private m: Record<Name, Float32Array>;
  private v: Record<Name, Float32Array>;
  private t = 0;
  private kept: ForwardRequest[] | undefined;
  /** Test hook: the next forward returns NaN log-probs (a numerically broken batch). */
  poisonNextForward = false;
  /** Counts, for tests. */
  calls = { forward: 0, backward: 0, step: 0, sample: 0 };

  private loraEnabled = true;

  /**
   * `lora`: train only a low-rank-free stand-in for adapters — a delta added to `out` — on a
   * frozen base; `setLoraEnabled(false)` gives the base policy (the reference).
   */
  constructor(
    readonly vocab: number,
    readonly dim: number,
    seed: number,
    readonly lora = false,
  ) {
    this.config = {
      modelType: 'qwen2_vl',
      vocabSize: vocab,
      hiddenSize: dim,
      intermediateSize: 0,
      numLayers: 0,
      numHeads: 1,
      numKvHeads: 1,
      headDim: dim,
      rmsNormEps: 1e-6,
      ropeTheta: 1e6,
      mropeSection: [0, 0, 0],
      tieWordEmbeddings: false,
      maxPositionEmbeddings: 4096,
      imageTokenId: -1,
      visionStartTokenId: -1,
      visionEndTokenId: -1,
      vision: {
        depth: 0,
        embedDim: 3,
        numHeads: 1,
        mlpHidden: 0,
        hiddenSize: dim,
        hiddenAct: 'quick_gelu',
        inChannels: 3,
        patchSize: 14,
        temporalPatchSize: 2,
        spatialMergeSize: 2,
        ropeTheta: 10000,
      },
      form: 'flat',
    };
    const rng = new Rng(seed);
    const rand = (n: number, std: number) => Float32Array.from({ length: n }, () => rng.normal() * std);
    this.params = {
      emb: rand(vocab * dim, 0.1),
      bag: rand(vocab * dim, 0.1),
      img: rand(3 * dim, 0.1),
      out: rand(vocab * dim, 0.1),
      bias: new Float32Array(vocab),
      lora: new Float32Array(lora ? vocab * dim : 0),
    };
    this.grads = this.zeros();
    this.m = this.zeros();
    this.v = this.zeros();
  }

  private zeros(): Record<Name, Float32Array> {
    return Object.fromEntries(NAMES.map((n) => [n, new Float32Array(this.params[n].length)])) as Record<
      Name,
      Float32Array
    >;
  }

  get stepCount(): number {
    return this.t;
  }

  get numParameters() {
    const total = NAMES.reduce((a, n) => a + this.params[n].length, 0);
    return { total, trainable: this.lora ? this.params.lora.length : total };
  }

  private trainable(n: Name): boolean {
    return this.lora ? n === 'lora' : n !== 'lora';
  }

  /** out + the adapter delta (when enabled). */
  private outAt(i: number): number {
    return this.lora && this.loraEnabled ? this.params.out[i]! + this.params.lora[i]! : this.params.out[i]!;
  }

  /** Shared prompt part of h: mean of bag rows + image projection. */
  private promptVector(req: { prompt: ForwardRequest['prompt'] }): { base: Float32Array; feats: number[] } {
    const D = this.dim,
      ids = req.prompt.ids,
      base = new Float32Array(D);
    for (const t of ids) for (let d = 0; d < D; d++) base[d]! += this.params.bag[t * D + d]! / ids.length;
    const feats = [0, 0, 0];
    for (const img of req.prompt.images) {
      const n = img.pixels.length / 1176;
      for (let p = 0; p < n; p++)
        for (let c = 0; c < 3; c++)
          for (let k = 0; k < 392; k++) feats[c]! += img.pixels[p * 1176 + c * 392 + k]! / (392 * n);
    }
    for (let c = 0; c < 3; c++) for (let d = 0; d < D; d++) base[d]! += feats[c]! * this.params.img[c * D + d]!;
    return { base, feats };
  }

  private hidden(base: Float32Array, prev: number): Float32Array {
    const D = this.dim,
      h = new Float32Array(D);
    for (let d = 0; d < D; d++) h[d] = base[d]! + this.params.emb[prev * D + d]!;
    return h;
  }

  private logits(h: Float32Array): Float64Array {
    const V = this.vocab,
      D = this.dim,
      out = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let s = this.params.bias[v]!;
      for (let d = 0; d < D; d++) s += this.outAt(v * D + d) * h[d]!;
      out[v] = s;
    }
    return out;
  }

  private static logSoftmax(z: Float64Array): Float64Array {
    let max = -Infinity;
    for (const x of z) if (x > max) max = x;
    let s = 0;
    for (const x of z) s += Math.exp(x - max);
    const lse = max + Math.log(s);
    return z.map((x) => x - lse);
  }

  private checkIds(ids: ArrayLike<number>, what: string): void {
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= this.vocab)
        throw new Error(`${what}: token id ${t} at ${i} is out of range [0, ${this.vocab})`);
    }
  }

  async forward(requests: ForwardRequest[]): Promise<ForwardResult[]> {
    this.calls.forward++;
    const poison = this.poisonNextForward;
    this.poisonNextForward = false;
    const results = requests.map((req, r) => {
      this.checkIds(req.prompt.ids, `request ${r} prompt`);
      const { base } = this.promptVector(req);
      const last = req.prompt.ids[req.prompt.ids.length - 1]!;
      const logprobs: Float32Array[] = [],
        entropy: Float32Array[] = [];
      for (const [ci, comp] of req.completions.entries()) {
        this.checkIds(comp, `request ${r} completion ${ci}`);
        const lp = new Float32Array(comp.length),
          ent = new Float32Array(comp.length);
        for (let t = 0; t < comp.length; t++) {
          const ls = ToyEngine.logSoftmax(this.logits(this.hidden(base, t === 0 ? last : comp[t - 1]!)));
          lp[t] = poison ? NaN : ls[comp[t]!]!;
          let e = 0;
          for (const l of ls) e -= Math.exp(l) * l;
          ent[t] = e;
        }
        logprobs.push(lp);
        entropy.push(ent);
      }
      return { logprobs, entropy };
    });
    this.kept = requests.some((r) => r.keepForBackward) ? requests : undefined;
    return results;
  }

  async backward(gradLogprobs: Float32Array[][]): Promise<void> {
    this.calls.backward++;
    const reqs = this.kept;
    if (!reqs) throw new Error('backward() needs a forward() with keepForBackward first');
    if (gradLogprobs.length !== reqs.length)
      throw new Error(`backward: ${gradLogprobs.length} rows for ${reqs.length} requests`);
    const D = this.dim,
      V = this.vocab,
      G = this.grads;
    reqs.forEach((req, r) => {
      const { base, feats } = this.promptVector(req);
      const last = req.prompt.ids[req.prompt.ids.length - 1]!;
      const dBase = new Float64Array(D);
      req.completions.forEach((comp, ci) => {
        const g = gradLogprobs[r]![ci]!;
        if (g.length !== comp.length)
          throw new Error(
            `backward: request ${r} completion ${ci} has ${comp.length} tokens but ${g.length} gradients`,
          );
        for (let t = 0; t < comp.length; t++) {
          if (g[t] === 0) continue;
          const prev = t === 0 ? last : comp[t - 1]!;
          const h = this.hidden(base, prev);
          const ls = ToyEngine.logSoftmax(this.logits(h));
          const dh = new Float64Array(D);
          for (let v = 0; v < V; v++) {
            const dz = g[t]! * ((v === comp[t] ? 1 : 0) - Math.exp(ls[v]!));
            G.bias[v]! += dz;
            for (let d = 0; d < D; d++) {
              G.out[v * D + d]! += dz * h[d]!;
              if (this.lora) G.lora[v * D + d]! += dz * h[d]!;
              dh[d]! += dz * this.outAt(v * D + d);
            }
          }
          for (let d = 0; d < D; d++) {
            G.emb[prev * D + d]! += dh[d]!;
            dBase[d]! += dh[d]!;
          }
        }
      });
      const ids = req.prompt.ids;
      for (const tok of ids) for (let d = 0; d < D; d++) G.bag[tok * D + d]! += dBase[d]! / ids.length;
      for (let c = 0; c < 3; c++) for (let d = 0; d < D; d++) G.img[c * D + d]! += feats[c]! * dBase[d]!;
    });
    this.kept = undefined;
  }

  zeroGrad(): void {
    for (const n of NAMES) this.grads[n].fill(0);
  }

  async step(o: AdamWOptions): Promise<StepResult> {
    this.calls.step++;
    let sq = 0;
    for (const n of NAMES) if (this.trainable(n)) for (const g of this.grads[n]) sq += g * g;
    const norm = Math.sqrt(sq);
    if (!Number.isFinite(norm)) return { gradNorm: norm, skipped: true, reason: 'non-finite gradient norm' };
    const scale = o.maxGradNorm > 0 && norm > o.maxGradNorm ? o.maxGradNorm / (norm + 1e-6) : 1;
    this.t++;
    const bc1 = 1 - o.beta1 ** this.t,
      bc2 = 1 - o.beta2 ** this.t;
    for (const n of NAMES) {
      if (!this.trainable(n)) continue;
      const p = this.params[n],
        g = this.grads[n],
        m = this.m[n],
        v = this.v[n];
      const decay = n === 'bias' ? 0 : o.weightDecay;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]! * scale;
        m[i] = o.beta1 * m[i]! + (1 - o.beta1) * gi;
        v[i] = o.beta2 * v[i]! + (1 - o.beta2) * gi * gi;
        p[i] = p[i]! * (1 - o.lr * decay) - (o.lr * (m[i]! / bc1)) / (Math.sqrt(v[i]! / bc2) + o.eps);
      }
    }
    return { gradNorm: norm, skipped: false };
  }

  async sample(req: SampleRequest): Promise<SampleResult> {
    this.calls.sample++;
    this.checkIds(req.prompt.ids, 'prompt');
    const rng = new Rng(req.seed);
    const { base } = this.promptVector(req);
    const stops = new Set(req.stopTokenIds ?? []);
    const tokenIds: Int32Array[] = [],
      logprobs: Float32Array[] = [],
      finishReason: ('stop' | 'length')[] = [];
    for (let i = 0; i < req.n; i++) {
      let prev = req.prompt.ids[req.prompt.ids.length - 1]!;
      const ids: number[] = [],
        lps: number[] = [];
      let reason: 'stop' | 'length' = 'length';
      for (let t = 0; t < req.maxTokens; t++) {
        const ls = ToyEngine.logSoftmax(this.logits(this.hidden(base, prev)));
        let tok: number;
        if (req.temperature === 0) {
          tok = 0;
          for (let v = 1; v < this.vocab; v++) if (ls[v]! > ls[tok]!) tok = v;
        } else {
          const probs = ToyEngine.logSoftmax(ls.map((l) => l / req.temperature)).map(Math.exp);
          if (req.topK && req.topK > 0) {
            const kth = [...probs].sort((a, b) => b - a)[Math.min(req.topK, probs.length) - 1]!;
            for (let v = 0; v < probs.length; v++) if (probs[v]! < kth) probs[v] = 0;
          }
          let total = 0;
          for (const p of probs) total += p;
          let u = rng.uniform() * total;
          tok = this.vocab - 1;
          for (let v = 0; v < this.vocab; v++) {
            u -= probs[v]!;
            if (u < 0) {
              tok = v;
              break;
            }
          }
        }
        ids.push(tok);
        lps.push(ls[tok]!);
        prev = tok;
        if (stops.has(tok)) {
          reason = 'stop';
          break;
        }
      }
      tokenIds.push(Int32Array.from(ids));
      logprobs.push(Float32Array.from(lps));
      finishReason.push(reason);
    }
    return { tokenIds, logprobs, finishReason };
  }

  async save(dir: string, options: { optimizer?: boolean } = {}): Promise<void> {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, 'config.json'),
      JSON.stringify({ model_type: 'vqalab_toy', vocab: this.vocab, dim: this.dim, lora: this.lora }),
    );
    const cat = (rec: Record<Name, Float32Array>) =>
      Buffer.concat(NAMES.map((n) => Buffer.from(rec[n].buffer, rec[n].byteOffset, rec[n].byteLength)));
    writeFileSync(path.join(dir, 'weights.bin'), cat(this.params));
    if (options.optimizer) {
      writeFileSync(path.join(dir, 'optimizer.bin'), Buffer.concat([cat(this.m), cat(this.v)]));
      writeFileSync(path.join(dir, 'optimizer.json'), JSON.stringify({ t: this.t }));
    }
  }

  static async load(dir: string): Promise<ToyEngine> {
    const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as {
      vocab: number;
      dim: number;
      lora: boolean;
    };
    const e = new ToyEngine(cfg.vocab, cfg.dim, 0, cfg.lora);
    const fill = (rec: Record<Name, Float32Array>, buf: Buffer, offset: number) => {
      let o = offset;
      for (const n of NAMES) {
        const bytes = rec[n].byteLength;
        rec[n].set(new Float32Array(buf.buffer.slice(buf.byteOffset + o, buf.byteOffset + o + bytes)));
        o += bytes;
      }
      return o;
    };
    fill(e.params, readFileSync(path.join(dir, 'weights.bin')), 0);
    if (existsSync(path.join(dir, 'optimizer.bin'))) {
      const buf = readFileSync(path.join(dir, 'optimizer.bin'));
      fill(e.v, buf, fill(e.m, buf, 0));
      e.t = (JSON.parse(readFileSync(path.join(dir, 'optimizer.json'), 'utf8')) as { t: number }).t;
    }
    return e;
  }

  /** A LoRA-style copy of `base`: the same frozen weights plus a zero-initialised trainable delta. */
  static withLora(base: ToyEngine): ToyEngine {
    const e = new ToyEngine(base.vocab, base.dim, 0, true);
    for (const n of NAMES) if (n !== 'lora') e.params[n].set(base.params[n]);
    return e;
  }

  async saveAdapter(): Promise<void> {
    throw new Error('the toy engine has no LoRA adapters');
  }

  setLoraEnabled(enabled: boolean): void {
    if (!this.lora) throw new Error('setLoraEnabled: this toy model has no LoRA adapters');
    this.loraEnabled = enabled;
  }

  dispose(): void {}
}
