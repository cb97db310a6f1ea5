/**
 * Every op: forward against a plain JS reference, backward against central finite differences of
 * L = sum(g * forward(x)) (the ops run in fp32; differences are taken in fp64 of fp32 outputs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/native.js';
import { maxAbsDiff, randn, rng } from './helpers.js';

type Arrays = Record<string, Float32Array | Int32Array>;
const op = (name: string, inputs: Arrays, dims: Record<string, number>) => native()._op(name, inputs, dims);

function dotf(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/**
 * Checks d/dx sum(g * f(x)) = analytic at `samples` coordinates of input `wrt`.
 * `f` maps the inputs to the (concatenated) outputs that g weights.
 */
function fdCheck(
  label: string,
  inputs: Arrays,
  wrt: string,
  f: (inp: Arrays) => Float32Array,
  g: Float32Array,
  analytic: Float32Array,
  { eps = 1e-2, tol = 2e-3, samples = 24, seed = 1 } = {},
) {
  const x = inputs[wrt] as Float32Array;
  assert.equal(analytic.length, x.length, `${label}: gradient length`);
  const r = rng(seed);
  let scale = 0;
  for (const v of analytic) scale = Math.max(scale, Math.abs(v));
  for (let s = 0; s < samples; s++) {
    const i = Math.floor(r() * x.length);
    const orig = x[i]!;
    x[i] = orig + eps;
    const lp = dotf(f(inputs), g);
    x[i] = orig - eps;
    const lm = dotf(f(inputs), g);
    x[i] = orig;
    const fd = (lp - lm) / (2 * eps);
    const err = Math.abs(fd - analytic[i]!);
    assert.ok(
      err <= tol * Math.max(1, scale),
      `${label}: d/d${wrt}[${i}] analytic ${analytic[i]} vs finite difference ${fd} (scale ${scale})`,
    );
  }
}

test('embedding: forward gathers rows, backward scatters (repeated ids add up, negative ids skipped)', () => {
  const r = rng(1);
  const V = 7,
    C = 5,
    T = 6;
  const wte = randn(V * C, r);
  const ids = Int32Array.from([3, 1, 3, 6, 0, 3]);
  const { out } = op('embedding_forward', { ids, wte }, { T, C, V });
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) assert.equal(out![t * C + c], wte[ids[t]! * C + c]);
  const dout = randn(T * C, r);
  const { dwte } = op('embedding_backward', { dout, ids: Int32Array.from([3, 1, 3, 6, -1, 3]) }, { T, C, V });
  for (let c = 0; c < C; c++) {
    assert.ok(Math.abs(dwte![3 * C + c]! - (dout[c]! + dout[2 * C + c]! + dout[5 * C + c]!)) < 1e-6);
    assert.equal(dwte![0 * C + c], 0);
  }
});

test('rmsnorm: forward as transformers, gradients by finite differences', () => {
  const r = rng(2);
  const T = 5,
    C = 37,
    eps = 1e-6;
  const inputs: Arrays = { inp: randn(T * C, r), weight: randn(C, r, 0.5).map((v) => 1 + v) };
  const fwd = (i: Arrays) => op('rmsnorm_forward', i, { T, C, eps }).out!;
  const out = fwd(inputs);
  const x = inputs.inp as Float32Array,
    w = inputs.weight as Float32Array;
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[t * C + c]! ** 2;
    const rs = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) assert.ok(Math.abs(out[t * C + c]! - w[c]! * x[t * C + c]! * rs) < 1e-5);
  }
  const g = randn(T * C, r);
  const { rstd } = op('rmsnorm_forward', inputs, { T, C, eps });
  const b = op('rmsnorm_backward', { dout: g, inp: inputs.inp!, weight: inputs.weight!, rstd: rstd! }, { T, C });
  fdCheck('rmsnorm', inputs, 'inp', fwd, g, b.dinp!);
  fdCheck('rmsnorm', inputs, 'weight', fwd, g, b.dweight!);
});

test('layernorm: forward (biased variance), gradients by finite differences', () => {
  const r = rng(3);
  const T = 4,
    C = 19,
    eps = 1e-6;
  const inputs: Arrays = { inp: randn(T * C, r, 2), weight: randn(C, r), bias: randn(C, r) };
  const fwd = (i: Arrays) => op('layernorm_forward', i, { T, C, eps }).out!;
  const f = op('layernorm_forward', inputs, { T, C, eps });
  const x = inputs.inp as Float32Array;
  for (let t = 0; t < T; t++) {
    let m = 0,
      v = 0;
    for (let c = 0; c < C; c++) m += x[t * C + c]! / C;
    for (let c = 0; c < C; c++) v += (x[t * C + c]! - m) ** 2 / C;
    for (let c = 0; c < C; c++) {
      const want =
        ((x[t * C + c]! - m) / Math.sqrt(v + eps)) * (inputs.weight as Float32Array)[c]! +
        (inputs.bias as Float32Array)[c]!;
      assert.ok(Math.abs(f.out![t * C + c]! - want) < 1e-4);
    }
  }
  const g = randn(T * C, r);
  const b = op(
    'layernorm_backward',
    { dout: g, inp: inputs.inp!, weight: inputs.weight!, mean: f.mean!, rstd: f.rstd! },
    { T, C },
  );
  fdCheck('layernorm', inputs, 'inp', fwd, g, b.dinp!);
  fdCheck('layernorm', inputs, 'weight', fwd, g, b.dweight!);
  fdCheck('layernorm', inputs, 'bias', fwd, g, b.dbias!);
});

test('linear (+bias): forward is x W^T + b, gradients by finite differences', () => {
  const r = rng(4);
  const T = 7,
    IC = 13,
    OC = 21;
  const inputs: Arrays = { inp: randn(T * IC, r), weight: randn(OC * IC, r), bias: randn(OC, r) };
  const fwd = (i: Arrays) => op('linear_forward', i, { T, IC, OC }).out!;
  const out = fwd(inputs);
  const x = inputs.inp as Float32Array,
    w = inputs.weight as Float32Array,
    bb = inputs.bias as Float32Array;
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < OC; o++) {
      let s = bb[o]!;
      for (let i = 0; i < IC; i++) s += x[t * IC + i]! * w[o * IC + i]!;
      assert.ok(Math.abs(out[t * OC + o]! - s) < 1e-4);
    }
  }
  const g = randn(T * OC, r);
  const b = op('linear_backward', { dout: g, inp: inputs.inp!, weight: inputs.weight! }, { T, IC, OC });
  fdCheck('linear', inputs, 'inp', fwd, g, b.dinp!);
  fdCheck('linear', inputs, 'weight', fwd, g, b.dweight!);
  fdCheck('linear', inputs, 'bias', fwd, g, b.dbias!);
});

test('lora: out += scale (x A^T) B^T, gradients by finite differences', () => {
  const r = rng(5);
  const T = 5,
    IC = 11,
    OC = 9,
    R = 3,
    scale = 1.7;
  const inputs: Arrays = { inp: randn(T * IC, r), A: randn(R * IC, r), B: randn(OC * R, r) };
  const dims = { T, IC, OC, R, scale };
  const fwd = (i: Arrays) => op('lora_forward', i, dims).out!;
  const g = randn(T * OC, r);
  const f = op('lora_forward', inputs, dims);
  const b = op('lora_backward', { dout: g, inp: inputs.inp!, xa: f.xa!, A: inputs.A!, B: inputs.B! }, dims);
  fdCheck('lora', inputs, 'inp', fwd, g, b.dinp!);
  fdCheck('lora', inputs, 'A', fwd, g, b.dA!);
  fdCheck('lora', inputs, 'B', fwd, g, b.dB!);
});

test('rope: rotate_half convention, backward is the inverse rotation; tables as transformers', () => {
  const r = rng(6);
  const T = 5,
    NH = 3,
    D = 8;
  const pos = Int32Array.from([0, 1, 2, 3, 9, /* h */ 0, 1, 5, 3, 9, /* w */ 0, 1, 2, 7, 9]);
  const { cos, sin } = op('rope_mrope_table', { pos, section: Int32Array.from([2, 1, 1]) }, { T, D, theta: 10000 });
  // frequency j of row t uses axis (0,0,1,2)[j] and inv_freq 10000^(-2j/D)
  const axis = [0, 0, 1, 2];
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < D / 2; j++) {
      const a = pos[axis[j]! * T + t]! * Math.fround(1 / Math.fround(10000 ** ((2 * j) / D)));
      assert.ok(
        Math.abs(cos![(t * D) / 2 + j]! - Math.cos(a)) < 1e-5 && Math.abs(sin![(t * D) / 2 + j]! - Math.sin(a)) < 1e-5,
      );
    }
  }
  const v = op(
    'rope_vision_table',
    { hpos: Int32Array.from([0, 1, 2, 3, 4]), wpos: Int32Array.from([4, 3, 2, 1, 0]) },
    { T, D, theta: 10000 },
  );
  // vision: frequencies 0..D/4 by height, D/4..D/2 by width, inv_freq[i] = 10000^(-2i/(D/2))
  assert.ok(Math.abs(v.cos![(1 * D) / 2 + 1]! - Math.cos(1 * 10000 ** (-2 / (D / 2)))) < 1e-5);
  assert.ok(Math.abs(v.cos![(1 * D) / 2 + 3]! - Math.cos(3 * 10000 ** (-2 / (D / 2)))) < 1e-5);
  const inputs: Arrays = { inp: randn(T * NH * D, r), cos: cos!, sin: sin! };
  const fwd = (i: Arrays) => op('rope_forward', i, { T, NH, D }).out!;
  const out = fwd(inputs);
  const x = inputs.inp as Float32Array;
  const h = D / 2;
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < NH; n++) {
      for (let j = 0; j < h; j++) {
        const o = (t * NH + n) * D;
        const c = cos![t * h + j]!,
          s = sin![t * h + j]!;
        assert.ok(Math.abs(out[o + j]! - (x[o + j]! * c - x[o + j + h]! * s)) < 1e-6);
        assert.ok(Math.abs(out[o + j + h]! - (x[o + j + h]! * c + x[o + j]! * s)) < 1e-6);
      }
    }
  }
  const g = randn(T * NH * D, r);
  const b = op('rope_backward', { dout: g, cos: cos!, sin: sin! }, { T, NH, D });
  fdCheck('rope', inputs, 'inp', fwd, g, b.dinp!);
});

/** Plain attention over explicit key lists, for the forward check. */
function attentionRef(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  spans: number[][],
  NH: number,
  KVH: number,
  D: number,
) {
  const out = new Float32Array(spans.length * NH * D);
  const scale = 1 / Math.sqrt(D);
  spans.forEach(([a0, a1, b0, b1], i) => {
    const keys: number[] = [];
    for (let j = a0!; j < a1!; j++) keys.push(j);
    for (let j = b0!; j < b1!; j++) keys.push(j);
    for (let h = 0; h < NH; h++) {
      const kv = Math.floor(h / (NH / KVH));
      const s = keys.map((j) => {
        let d = 0;
        for (let e = 0; e < D; e++) d += q[(i * NH + h) * D + e]! * k[(j * KVH + kv) * D + e]!;
        return d * scale;
      });
      const mx = Math.max(...s);
      const p = s.map((x) => Math.exp(x - mx));
      const z = p.reduce((a, b) => a + b, 0);
      for (let e = 0; e < D; e++) {
        let acc = 0;
        keys.forEach((j, n) => {
          acc += (p[n]! / z) * v[(j * KVH + kv) * D + e]!;
        });
        out[(i * NH + h) * D + e] = acc;
      }
    }
  });
  return out;
}

const causal = (n: number, a1 = 0, b0 = 0): number[][] => Array.from({ length: n }, (_, i) => [0, a1, b0, b0 + i + 1]);
const frame = (s: number, e: number): number[][] => Array.from({ length: e - s }, () => [0, 0, s, e]);

for (const [label, NH, KVH, spans, Tk] of [
  // groups of 8+ rows go through the blocked (GEMM) path, smaller ones through the row path
  [
    'blocked: a 20-row prompt, completions of 12 and 3 rows, GQA 3',
    6,
    2,
    [...causal(20), ...causal(12, 20, 20), ...causal(3, 20, 32)],
    35,
  ],
  ['blocked: two image frames of 12 and 9 rows (bidirectional), MHA', 2, 2, [...frame(0, 12), ...frame(12, 21)], 21],
  ['blocked: 140 causal rows (two chunks of rows)', 2, 1, causal(140), 140],
  [
    'causal, GQA 2',
    4,
    2,
    [
      [0, 0, 0, 1],
      [0, 0, 0, 2],
      [0, 0, 0, 3],
      [0, 0, 0, 4],
      [0, 0, 0, 5],
    ],
    5,
  ],
  [
    'shared prefix of 3 rows + 2 completions, MQA',
    3,
    1,
    [
      [0, 0, 0, 1],
      [0, 0, 0, 2],
      [0, 0, 0, 3],
      [0, 3, 3, 4],
      [0, 3, 3, 5],
      [0, 3, 5, 6],
      [0, 3, 5, 7],
      [0, 3, 5, 8],
    ],
    8,
  ],
  [
    'bidirectional within two images, MHA',
    2,
    2,
    [
      [0, 0, 0, 3],
      [0, 0, 0, 3],
      [0, 0, 0, 3],
      [0, 0, 3, 5],
      [0, 0, 3, 5],
    ],
    5,
  ],
  [
    'decode rows reading a cache (Tq < Tk)',
    2,
    1,
    [
      [0, 4, 6, 7],
      [0, 4, 9, 11],
    ],
    12,
  ],
] as const) {
  test(`attention (${label}): forward against plain softmax attention, gradients by finite differences`, () => {
    const r = rng(7);
    const D = 8,
      Tq = spans.length;
    const flat = Int32Array.from(spans.flat());
    const inputs: Arrays = {
      q: randn(Tq * NH * D, r),
      k: randn(Tk * KVH * D, r),
      v: randn(Tk * KVH * D, r),
      spans: flat,
    };
    const dims = { Tq, Tk, NH, KVH, D };
    const fwd = (i: Arrays) => op('attention_forward', i, dims).out!;
    const f = op('attention_forward', inputs, dims);
    const want = attentionRef(
      inputs.q as Float32Array,
      inputs.k as Float32Array,
      inputs.v as Float32Array,
      spans.map((s) => [...s]),
      NH,
      KVH,
      D,
    );
    assert.ok(maxAbsDiff(f.out!, want) < 1e-5, 'forward');
    const g = randn(Tq * NH * D, r);
    const b = op('attention_backward', { ...inputs, dout: g, out: f.out!, lse: f.lse! }, dims);
    fdCheck('attention', inputs, 'q', fwd, g, b.dq!);
    fdCheck('attention', inputs, 'k', fwd, g, b.dk!);
    fdCheck('attention', inputs, 'v', fwd, g, b.dv!);
  });
}

for (const [name, fn] of [
  ['quick_gelu', (x: number) => x / (1 + Math.exp(-1.702 * x))],
  ['gelu', (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2))],
] as const) {
  test(`${name}: forward and finite-difference gradient`, () => {
    const r = rng(8);
    const N = 257;
    const inputs: Arrays = { inp: randn(N, r, 2) };
    const fwd = (i: Arrays) => op(`${name}_forward`, i, { N }).out!;
    const out = fwd(inputs);
    for (let i = 0; i < N; i++) assert.ok(Math.abs(out[i]! - fn((inputs.inp as Float32Array)[i]!)) < 1e-5);
    const g = randn(N, r);
    fdCheck(name, inputs, 'inp', fwd, g, op(`${name}_backward`, { dout: g, inp: inputs.inp! }, { N }).dinp!);
  });
}

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; integrate the series instead
  let sum = x,
    term = x;
  for (let n = 1; n < 80; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

test('swiglu: silu(gate) * up, finite-difference gradients', () => {
  const r = rng(9);
  const N = 300;
  const inputs: Arrays = { gate: randn(N, r, 2), up: randn(N, r) };
  const fwd = (i: Arrays) => op('swiglu_forward', i, { N }).out!;
  const out = fwd(inputs);
  for (let i = 0; i < N; i++) {
    const g = (inputs.gate as Float32Array)[i]!;
    assert.ok(Math.abs(out[i]! - (g / (1 + Math.exp(-g))) * (inputs.up as Float32Array)[i]!) < 1e-5);
  }
  const g = randn(N, r);
  const b = op('swiglu_backward', { dout: g, gate: inputs.gate!, up: inputs.up! }, { N });
  fdCheck('swiglu', inputs, 'gate', fwd, g, b.dgate!);
  fdCheck('swiglu', inputs, 'up', fwd, g, b.dup!);
});

test('logprob: log-softmax gather and entropy, finite-difference gradient', () => {
  const r = rng(10);
  const R = 4,
    V = 50;
  const targets = Int32Array.from([3, 49, 0, 17]);
  const inputs: Arrays = { logits: randn(R * V, r, 3), targets };
  const f = op('logprob_forward', inputs, { R, V });
  const x = inputs.logits as Float32Array;
  for (let i = 0; i < R; i++) {
    const row = Array.from(x.subarray(i * V, (i + 1) * V));
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0));
    assert.ok(Math.abs(f.logp![i]! - (row[targets[i]!]! - lse)) < 1e-5);
    const ent = -row.reduce((a, v) => a + Math.exp(v - lse) * (v - lse), 0);
    assert.ok(Math.abs(f.entropy![i]! - ent) < 1e-5);
  }
  const g = randn(R, r);
  const b = op('logprob_backward', { dlogp: g, logits: inputs.logits!, lse: f.lse!, targets }, { R, V });
  fdCheck('logprob', inputs, 'logits', (i) => op('logprob_forward', i, { R, V }).logp!, g, b.dlogits!, { eps: 1e-2 });
});

test('adamw_update: one step as torch.optim.AdamW, by hand', () => {
  const p = Float32Array.from([1.0, -2.0, 0.5]);
  const grads = Float32Array.from([0.1, -0.3, 0.0]);
  const m = Float32Array.from([0.01, 0.02, -0.01]);
  const v = Float32Array.from([0.001, 0.002, 0.0005]);
  const lr = 0.01,
    b1 = 0.9,
    b2 = 0.999,
    eps = 1e-8,
    wd = 0.1,
    step = 3,
    gs = 0.5;
  const out = op(
    'adamw_update',
    { params: p, grads, m, v },
    { n: 3, lr, beta1: b1, beta2: b2, eps, weightDecay: wd, step, gradScale: gs },
  );
  for (let i = 0; i < 3; i++) {
    const g = grads[i]! * gs;
    const mi = b1 * m[i]! + (1 - b1) * g;
    const vi = b2 * v[i]! + (1 - b2) * g * g;
    const bc1 = 1 - b1 ** step,
      bc2 = 1 - b2 ** step;
    const pi = p[i]! * (1 - lr * wd) - ((lr / bc1) * mi) / (Math.sqrt(vi) / Math.sqrt(bc2) + eps);
    assert.ok(Math.abs(out.m![i]! - mi) < 1e-7 && Math.abs(out.v![i]! - vi) < 1e-8, `moments ${i}`);
    assert.ok(Math.abs(out.params![i]! - pi) < 1e-6, `param ${i}: ${out.params![i]} vs ${pi}`);
  }
});

test('sample_token: temperature 0 is argmax, top-k 1 is argmax, top-p keeps the head, logprob is unfiltered', () => {
  const logits = Float32Array.from([0.1, 2.0, 1.9, -1.0, 0.5]);
  const base = { V: 5, seed: 7, g: 0, t: 0, topP: 1, topK: 0 };
  const lse = Math.log(Array.from(logits).reduce((a, v) => a + Math.exp(v), 0));
  const greedy = op('sample_token', { logits }, { ...base, temperature: 0 }).result!;
  assert.equal(greedy[0], 1);
  assert.ok(Math.abs(greedy[1]! - (2.0 - lse)) < 1e-6);
  assert.equal(op('sample_token', { logits }, { ...base, temperature: 1, topK: 1 }).result![0], 1);
  const seen = new Set<number>();
  for (let s = 0; s < 200; s++)
    seen.add(op('sample_token', { logits }, { ...base, temperature: 1, topP: 0.6, seed: s }).result![0]!);
  assert.deepEqual([...seen].sort(), [1, 2], 'top-p 0.6 keeps tokens 1 and 2 only');
  const all = new Set<number>();
  for (let s = 0; s < 400; s++)
    all.add(op('sample_token', { logits }, { ...base, temperature: 1, seed: s }).result![0]!);
  assert.equal(all.size, 5, 'plain sampling reaches every token');
  const a = op('sample_token', { logits }, { ...base, temperature: 1, seed: 123, g: 2, t: 5 }).result!;
  const b = op('sample_token', { logits }, { ...base, temperature: 1, seed: 123, g: 2, t: 5 }).result!;
  assert.deepEqual(a, b, 'a pure function of (seed, g, t)');
});
