/** Shared helpers of the engine tests: fixtures, seeded random arrays, copies of checkpoints. */
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import type { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import type { ImageInput, Prompt } from '../../src/engine/types.js';
import { mulberry32 } from '../../src/util/rng.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'engine');
export const CASES = ['tied_gqa2_one_image', 'untied_mqa_two_images', 'mha_odd_grid_text_after', 'gqa3_text_only'];

/** Seeded test data: the project's mulberry32 (src/util/rng.ts). */
export const rng = mulberry32;

export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12),
      v = r();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export interface FixtureCase {
  dir: string;
  meta: {
    prefix: number[];
    completions: number[][];
    advantages: number[];
    beta: number;
    model_images: string[];
    images: Record<string, { grid_thw: [number, number, number] }>;
    greedy_completion?: number[];
  };
  prompt: Prompt;
  completions: Int32Array[];
}

export function fixture(name: string): FixtureCase {
  const dir = path.join(FIXTURES, name);
  const meta = JSON.parse(readFileSync(path.join(dir, 'meta.json'), 'utf8')) as FixtureCase['meta'];
  let images: ImageInput[] = [];
  if (meta.model_images.length > 0) {
    const inputs = native()._readSafetensors(path.join(dir, 'inputs.safetensors')).tensors;
    images = meta.model_images.map((n) => ({
      pixels: inputs[`${n}.pixel_values`]!.data,
      gridThw: meta.images[n]!.grid_thw,
    }));
  }
  return {
    dir,
    meta,
    prompt: { ids: Int32Array.from(meta.prefix), images },
    completions: meta.completions.map((c) => Int32Array.from(c)),
  };
}

/** A scratch folder removed at exit. */
export function tmpDir(prefix = 'vqalab-engine-'): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  process.on('exit', () => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A copy of a fixture checkpoint folder (policy/ by default) to modify. */
export function copyCheckpoint(name: string, which = 'policy'): string {
  const d = path.join(tmpDir(), which);
  cpSync(path.join(FIXTURES, name, which), d, { recursive: true });
  return d;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** A model as loadModel returns it (with the native handle the gradient checks read and write). */
export type LoadedModel = Awaited<ReturnType<typeof loadModel>>;

/** Σ w·logp over the completions of one prompt: the scalar whose gradient `backward([w])` computes. */
export async function weightedLogp(
  m: LoadedModel,
  prompt: Prompt,
  completions: Int32Array[],
  w: Float32Array[],
): Promise<number> {
  const [res] = await m.forward([{ prompt, completions }]);
  let s = 0;
  res!.logprobs.forEach((lp, i) =>
    lp.forEach((v, t) => {
      s += v * w[i]![t]!;
    }),
  );
  return s;
}

/**
 * Checks the gradient the model holds for each named tensor against central finite differences of
 * `objective`, at two coordinates: the largest gradient's and one drawn from `r`. With `nonZero`,
 * a tensor whose gradient is missing or zero fails too (it does not reach the output).
 */
export async function checkFiniteDifferences(
  m: LoadedModel,
  names: string[],
  objective: () => Promise<number>,
  r: () => number,
  options: { nonZero?: boolean } = {},
): Promise<void> {
  for (const n of names) {
    const p = m._native._get(n);
    const g = m._native._grad(n)!;
    if (options.nonZero) assert.ok(g, `${n}: no gradient`);
    // the coordinate with the largest gradient, and one at random
    let big = 0;
    for (let i = 1; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[big]!)) big = i;
    if (options.nonZero)
      assert.ok(Math.abs(g[big]!) > 1e-5, `${n}: the gradient is zero (the tensor does not reach the output)`);
    for (const i of [big, Math.floor(r() * g.length)]) {
      const eps = 1e-2 * Math.max(1, Math.abs(p[i]!));
      const orig = p[i]!;
      p[i] = orig + eps;
      m._native._set(n, p);
      const lp = await objective();
      p[i] = orig - eps;
      m._native._set(n, p);
      const lm = await objective();
      p[i] = orig;
      m._native._set(n, p);
      const fd = (lp - lm) / (2 * eps);
      assert.ok(
        Math.abs(fd - g[i]!) <= 2e-2 * Math.max(Math.abs(g[big]!), 1e-3),
        `${n}[${i}]: analytic ${g[i]} vs finite difference ${fd}`,
      );
    }
  }
}
