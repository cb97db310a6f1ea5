/**
 * The pieces every exported graph is made of, shared by the three families: weights by the
 * engine's published names (LoRA merged), linear layers and embeddings at each export dtype (fp32;
 * fp16 stored and cast to fp32; int8 per-channel with DequantizeLinear), RMSNorm / LayerNorm, the
 * rotate-half rotary embedding, the activations, and the float32 rotary frequencies the engine uses
 * (native/src/ops/rope.cc).
 */
import { fromFloat32 } from '../util/safetensors.js';
import { f16Tensor, f32Tensor, type Graph, i8Tensor } from './graph.js';
import { DataType } from './onnx-schema.js';

export type ExportDtype = 'fp32' | 'fp16' | 'int8';

/** Weights by the engine's published names ([out, in] for linear weights), LoRA already merged. */
export interface WeightSource {
  get(name: string): Float32Array;
}

/** float32 lowest: the score of a masked attention pair. */
export const NEG = -3.4028234663852886e38;

/** [rows, cols] row-major → [cols, rows]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** Symmetric int8 quantisation of a [rows, cols] matrix along `axis` (per row: 0, per column: 1). */
export function quantizeInt8(
  a: Float32Array,
  rows: number,
  cols: number,
  axis: 0 | 1,
): { q: Int8Array; scale: Float32Array } {
  const n = axis === 0 ? rows : cols;
  const amax = new Float32Array(n);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = axis === 0 ? r : c;
      const v = Math.abs(a[r * cols + c]!);
      if (v > amax[k]!) amax[k] = v;
    }
  const scale = new Float32Array(n);
  for (let k = 0; k < n; k++) scale[k] = amax[k]! > 0 ? amax[k]! / 127 : 1;
  const q = new Int8Array(a.length);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = axis === 0 ? r : c;
      q[r * cols + c] = Math.max(-127, Math.min(127, Math.round(a[r * cols + c]! / scale[k]!)));
    }
  return { q, scale };
}

/** A graph under construction with the weights it reads and the dtype they are stored in. */
export class Builder {
  constructor(
    readonly g: Graph,
    readonly w: WeightSource,
    readonly dtype: ExportDtype,
  ) {}

  /** A float32 parameter kept in fp32 (norms, biases). */
  param(name: string, dims: number[]): string {
    return this.g.init(name, f32Tensor(this.w.get(name), dims));
  }

  /** x [..., inDim] @ W^T (+ b): W is the engine's [outDim, inDim] `${module}.weight`. */
  linear(x: string, module: string, inDim: number, outDim: number, bias: boolean): string {
    const wT = transpose(this.w.get(`${module}.weight`), outDim, inDim); // [in, out]
    let wName: string;
    if (this.dtype === 'fp32') {
      wName = this.g.init(`${module}.weight`, f32Tensor(wT, [inDim, outDim]));
    } else if (this.dtype === 'fp16') {
      const bits = fromFloat32(wT, [inDim, outDim], 'F16').data as Uint16Array;
      wName = this.g.op('Cast', [this.g.init(`${module}.weight`, f16Tensor(bits, [inDim, outDim]))], {
        to: DataType.FLOAT,
      });
    } else {
      const { q, scale } = quantizeInt8(wT, inDim, outDim, 1);
      const qn = this.g.init(`${module}.weight_quantized`, i8Tensor(q, [inDim, outDim]));
      const sn = this.g.init(`${module}.weight_scale`, f32Tensor(scale, [outDim]));
      wName = this.g.op('DequantizeLinear', [qn, sn], { axis: 1 });
    }
    let y = this.g.op('MatMul', [x, wName]);
    if (bias) y = this.g.op('Add', [y, this.param(`${module}.bias`, [outDim])]);
    return y;
  }

  /** Rows of the [vocab, hidden] table `name` for int64 `ids`. */
  embedding(ids: string, name: string, vocab: number, hidden: number): string {
    const table = this.w.get(name);
    if (this.dtype === 'fp32') return this.g.op('Gather', [this.g.init(name, f32Tensor(table, [vocab, hidden])), ids]);
    if (this.dtype === 'fp16') {
      const bits = fromFloat32(table, [vocab, hidden], 'F16').data as Uint16Array;
      return this.g.op('Cast', [this.g.op('Gather', [this.g.init(name, f16Tensor(bits, [vocab, hidden])), ids])], {
        to: DataType.FLOAT,
      });
    }
    const { q, scale } = quantizeInt8(table, vocab, hidden, 0);
    const rows = this.g.op(
      'Cast',
      [this.g.op('Gather', [this.g.init(`${name}_quantized`, i8Tensor(q, [vocab, hidden])), ids])],
      { to: DataType.FLOAT },
    );
    const s = this.g.op('Unsqueeze', [
      this.g.op('Gather', [this.g.init(`${name}_scale`, f32Tensor(scale, [vocab])), ids]),
      this.g.i64([-1]),
    ]);
    return this.g.op('Mul', [rows, s]);
  }

  /** x * rsqrt(mean(x², -1) + eps) * w. */
  rmsnorm(x: string, weight: string, dim: number, eps: number): string {
    const g = this.g;
    const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const r = g.op('Div', [g.f32([1], []), g.op('Sqrt', [g.op('Add', [ms, g.f32([eps], [])])])]);
    return g.op('Mul', [g.op('Mul', [x, r]), this.param(weight, [dim])]);
  }

  /** LayerNorm with weight and bias `${prefix}.weight/.bias` (eps 1e-6, as every vision tower). */
  layernorm(x: string, prefix: string, dim: number): string {
    return this.g.op(
      'LayerNormalization',
      [x, this.param(`${prefix}.weight`, [dim]), this.param(`${prefix}.bias`, [dim])],
      { axis: -1, epsilon: { f: 1e-6 } },
    );
  }

  /** rotate_half rope: x * cat(cos, cos) + cat(-x2, x1) * cat(sin, sin); cos/sin already full width. */
  rope(x: string, cosFull: string, sinFull: string, half: number): string {
    const g = this.g;
    const [x1, x2] = g.node('Split', [x, g.i64([half, half])], { axis: -1 }, 2) as [string, string];
    const rot = g.op('Concat', [g.op('Neg', [x2]), x1], { axis: -1 });
    return g.op('Add', [g.op('Mul', [x, cosFull]), g.op('Mul', [rot, sinFull])]);
  }

  /** The vision tower's norm: LayerNorm (Qwen2-VL, Qwen3-VL) or RMSNorm without bias (Qwen2.5-VL), eps 1e-6. */
  visionNorm(x: string, prefix: string, dim: number, rms: boolean): string {
    return rms ? this.rmsnorm(x, `${prefix}.weight`, dim, 1e-6) : this.layernorm(x, prefix, dim);
  }

  /** x · sigmoid(x). */
  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])]);
  }

  /** 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))): gelu_pytorch_tanh. */
  geluTanh(x: string): string {
    const g = this.g;
    const cube = g.op('Mul', [g.op('Mul', [x, x]), x]);
    const inner = g.op('Mul', [
      g.op('Add', [x, g.op('Mul', [cube, g.f32([0.044715], [])])]),
      g.f32([0.7978845608028654], []),
    ]);
    return g.op('Mul', [g.op('Mul', [x, g.f32([0.5], [])]), g.op('Add', [g.op('Tanh', [inner]), g.f32([1], [])])]);
  }

  /** x · sigmoid(1.702 x). */
  quickGelu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [this.g.op('Mul', [x, this.g.f32([1.702], [])])])]);
  }

  /** Exact gelu: 0.5 x (1 + erf(x / √2)). */
  gelu(x: string): string {
    const g = this.g;
    const e = g.op('Erf', [g.op('Mul', [x, g.f32([Math.SQRT1_2], [])])]);
    return g.op('Mul', [g.op('Mul', [x, g.f32([0.5], [])]), g.op('Add', [e, g.f32([1], [])])]);
  }
}

/** inv[j] = 1 / theta^(2j/dim) for j < count, in float32 as the engine computes it. */
export function invFreq(theta: number, count: number, dim: number): Float32Array {
  // inv[j] = 1 / theta^(2j/dim), in float32 as the engine (native/src/ops/rope.cc)
  const out = new Float32Array(count);
  for (let j = 0; j < count; j++)
    out[j] = Math.fround(
      1 / Math.fround(Math.pow(Math.fround(theta), Math.fround(Math.fround(2 * j) / Math.fround(dim)))),
    );
  return out;
}
