/**
 * The engine's parity checker for `vqalab check-parity DIR` (issue 4's case layout, made by
 * scripts/gen/engine_fixtures.py with transformers):
 *   policy/, reference/      checkpoint folders;  meta.json: prefix, completions, advantages, beta,
 *   model_images, images{name: {grid_thw}};  inputs.safetensors: <name>.pixel_values;
 *   expected.safetensors: seq{i}.logits, seq{i}.logprobs, seq{i}.ref_logprobs, loss, grad.<name>
 *   (optional: seq{i}.entropy, seq{i}.position_ids, seq{i}.lora_logits with adapter/, and
 *   meta.greedy_completion).
 * Tolerances (fp32): logits, log-probs and entropy within 1e-4 of the logits' scale (max |logit| of
 * the sequence); the loss within 1e-4 relative; every gradient tensor within 1e-3 relative (L2).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../engine/model.js';
import { native, type SafetensorsContent } from '../engine/native.js';
import type { EngineModel, ImageInput } from '../engine/types.js';
import type { ParityChecker, ParityMeasurement, ParityOptions } from './types.js';

export const TOLERANCES = { logits: 1e-4, logprobs: 1e-4, loss: 1e-4, grad: 1e-3 } as const;
/** On the CUDA backend in bf16 (issue 10): 2e-2 of the logits' scale; gradients by cosine (1 - cos <= 1e-3). */
export const TOLERANCES_BF16 = { logits: 2e-2, logprobs: 2e-2, loss: 2e-2, gradCosine: 0.999 } as const;

function cosineDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.NaN;
  let ab = 0,
    aa = 0,
    bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  if (aa === 0 && bb === 0) return 0;
  return 1 - ab / Math.sqrt(aa * bb);
}

/** transformers 5's internal tensor name for a published one (model.layers.* -> model.language_model.layers.*). */
export function internalName(published: string): string {
  if (published.startsWith('visual.')) return `model.${published}`;
  if (published.startsWith('model.')) return `model.language_model.${published.slice('model.'.length)}`;
  return published;
}

function field<T>(
  meta: Record<string, unknown>,
  key: string,
  file: string,
  check: (v: unknown) => v is T,
  what: string,
): T {
  const v = meta[key];
  if (!check(v)) throw new Error(`${file}: expected ${what} for "${key}" but found ${JSON.stringify(v)?.slice(0, 80)}`);
  return v;
}

const isIntArray = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isInteger(x));
const isIntArrays = (v: unknown): v is number[][] => Array.isArray(v) && v.every(isIntArray);
const isNumArray = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => typeof x === 'number');
const isStrArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.NaN;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Number.NaN : d;
    if (Number.isNaN(m)) return m;
  }
  return m;
}

function relL2(ours: ArrayLike<number>, exp: ArrayLike<number>): { value: number; note: string } {
  if (ours.length !== exp.length) return { value: Number.NaN, note: `length ${ours.length} vs ${exp.length}` };
  let dn = 0,
    en = 0;
  for (let i = 0; i < exp.length; i++) {
    dn += (ours[i]! - exp[i]!) ** 2;
    en += exp[i]! ** 2;
  }
  // a tensor transformers leaves at zero (the vision tower without images) must stay at ~0
  if (en === 0) return { value: Math.sqrt(dn), note: 'expected all zeros: absolute L2' };
  return { value: Math.sqrt(dn / en), note: `|expected| ${Math.sqrt(en).toExponential(2)}` };
}

function tensor(t: SafetensorsContent, name: string, file: string): Float32Array {
  const e = t.tensors[name];
  if (!e) throw new Error(`${file}: missing tensor ${name}`);
  return e.data;
}

export async function checkEngineCase(
  caseDir: string,
  meta: Record<string, unknown>,
  options: ParityOptions,
): Promise<ParityMeasurement[]> {
  const metaFile = path.join(caseDir, 'meta.json');
  const prefix = field(meta, 'prefix', metaFile, isIntArray, 'an array of token ids');
  const completions = field(meta, 'completions', metaFile, isIntArrays, 'an array of token id arrays');
  const advantages = field(meta, 'advantages', metaFile, isNumArray, 'an array of numbers');
  const beta = field(meta, 'beta', metaFile, isNumber, 'a number');
  const modelImages =
    meta.model_images === undefined ? [] : field(meta, 'model_images', metaFile, isStrArray, 'an array of image names');
  if (advantages.length !== completions.length)
    throw new Error(`${metaFile}: ${advantages.length} advantages for ${completions.length} completions`);
  const imagesMeta = (meta.images ?? {}) as Record<string, { grid_thw?: unknown }>;
  const expFile = path.join(caseDir, 'expected.safetensors');
  const exp = native()._readSafetensors(expFile);
  let images: ImageInput[] = [];
  if (modelImages.length > 0) {
    const inFile = path.join(caseDir, 'inputs.safetensors');
    const inputs = native()._readSafetensors(inFile);
    images = modelImages.map((n) => {
      const g = imagesMeta[n]?.grid_thw;
      if (!isIntArray(g) || g.length !== 3) throw new Error(`${metaFile}: images.${n}.grid_thw should be [t, h, w]`);
      return { pixels: tensor(inputs, `${n}.pixel_values`, inFile), gridThw: [g[0]!, g[1]!, g[2]!] };
    });
  }
  const device = options.device as EngineModel['device'];
  const bf16 = device !== 'cpu' && process.env.VQALAB_CUDA_PRECISION !== 'fp32';
  const TOL = bf16
    ? { ...TOLERANCES, logits: TOLERANCES_BF16.logits, logprobs: TOLERANCES_BF16.logprobs, loss: TOLERANCES_BF16.loss }
    : TOLERANCES;
  const prompt = { ids: Int32Array.from(prefix), images };
  const comps = completions.map((c) => Int32Array.from(c));
  const out: ParityMeasurement[] = [];

  const policy = await loadModel(path.join(caseDir, 'policy'), { device });
  // the reference may be absent when beta is 0 (nothing of it enters the loss)
  const hasRef = existsSync(path.join(caseDir, 'reference', 'config.json'));
  if (!hasRef && beta !== 0) throw new Error(`${caseDir}: no reference/ checkpoint, but beta is ${beta}`);
  const reference = hasRef ? await loadModel(path.join(caseDir, 'reference'), { device }) : null;
  try {
    const [pol] = await policy.forward([{ prompt, completions: comps, returnLogits: true, keepForBackward: true }]);
    const [ref] = reference ? await reference.forward([{ prompt, completions: comps }]) : [pol];
    const V = policy.config.vocabSize;
    let total = 0;
    comps.forEach((c, i) => {
      const el = tensor(exp, `seq${i}.logits`, expFile);
      const scale = Math.max(maxAbs(el), 1e-12);
      const note = `logits scale ${scale.toPrecision(3)}`;
      out.push({
        name: `seq${i}.logits max_abs/scale`,
        value: maxAbsDiff(pol!.logits![i]!, el) / scale,
        tolerance: TOL.logits,
        note: `${note}; ${el.length / V} rows`,
      });
      out.push({
        name: `seq${i}.logprobs max_abs/scale`,
        value: maxAbsDiff(pol!.logprobs[i]!, tensor(exp, `seq${i}.logprobs`, expFile)) / scale,
        tolerance: TOL.logprobs,
        note,
      });
      if (reference) {
        const erefl = tensor(exp, `seq${i}.ref_logprobs`, expFile);
        out.push({
          name: `seq${i}.ref_logprobs max_abs/scale`,
          value: maxAbsDiff(ref!.logprobs[i]!, erefl) / scale,
          tolerance: TOL.logprobs,
          note: 'reference checkpoint',
        });
      }
      if (exp.tensors[`seq${i}.entropy`]) {
        out.push({
          name: `seq${i}.entropy max_abs/scale`,
          value: maxAbsDiff(pol!.entropy[i]!, exp.tensors[`seq${i}.entropy`]!.data) / scale,
          tolerance: TOL.logprobs,
          note,
        });
      }
      const pos = exp.tensors[`seq${i}.position_ids`];
      if (pos) {
        const { positions: ours, next } = policy._native._ropeIndex({ ids: prompt.ids, images });
        const L = prefix.length + c.length;
        let bad = 0;
        for (let a = 0; a < 3; a++) {
          for (let t = 0; t < L; t++) {
            const mine = t < prefix.length ? ours[a * prefix.length + t]! : next + t - prefix.length;
            if (mine !== pos.data[a * L + t]) bad++;
          }
        }
        out.push({
          name: `seq${i}.position_ids mismatches`,
          value: bad,
          tolerance: 0,
          note: 'M-RoPE positions vs get_rope_index',
        });
      }
      total += c.length;
    });

    // the loss of issue 4 and its gradient with respect to every log-prob
    let loss = 0;
    const grads = comps.map((c, i) =>
      Float32Array.from(c, (_, t) => {
        const lp = pol!.logprobs[i]![t]!,
          r = ref!.logprobs[i]![t]!;
        const d = r - lp;
        loss += (-advantages[i]! + beta * (Math.exp(d) - d - 1)) / total;
        return (-advantages[i]! + beta * (1 - Math.exp(d))) / total;
      }),
    );
    const expLoss = tensor(exp, 'loss', expFile)[0]!;
    out.push({
      name: 'loss abs/max(1,|loss|)',
      value: Math.abs(loss - expLoss) / Math.max(1, Math.abs(expLoss)),
      tolerance: TOL.loss,
      note: `ours ${loss.toPrecision(7)}, transformers ${expLoss.toPrecision(7)}`,
    });
    policy.zeroGrad();
    await policy.backward([grads]);
    const internal = policy.namingScheme === 'internal';
    let seen = 0;
    for (const name of policy._native._names()) {
      const key = `grad.${internal ? internalName(name) : name}`;
      const e = exp.tensors[key];
      if (!e)
        throw new Error(
          `${expFile}: missing ${key} (the checkpoint has tensor ${internal ? internalName(name) : name})`,
        );
      const g = policy._native._grad(name);
      if (bf16) {
        out.push({
          name: `${key} 1-cosine`,
          value: g ? cosineDistance(g, e.data) : Number.NaN,
          tolerance: 1 - TOLERANCES_BF16.gradCosine,
          note: g ? `rel_l2 ${relL2(g, e.data).value.toExponential(2)} (bf16)` : 'no gradient computed',
        });
      } else {
        const r = g ? relL2(g, e.data) : { value: Number.NaN, note: 'no gradient computed' };
        out.push({ name: `${key} rel_l2`, value: r.value, tolerance: TOL.grad, note: r.note });
      }
      seen++;
    }
    // a tied checkpoint that still lists lm_head.weight: its gradient is the shared embedding's
    if (policy.config.tieWordEmbeddings && exp.tensors['grad.lm_head.weight']) {
      const embed = internal ? internalName('model.embed_tokens.weight') : 'model.embed_tokens.weight';
      const g = policy._native._grad('model.embed_tokens.weight');
      const r = g
        ? relL2(g, exp.tensors['grad.lm_head.weight']!.data)
        : { value: Number.NaN, note: 'no gradient computed' };
      out.push({
        name: 'grad.lm_head.weight rel_l2',
        value: r.value,
        tolerance: TOL.grad,
        note: `tied: compared with ${embed}`,
      });
      seen++;
    }
    const expectedGrads = Object.keys(exp.tensors).filter((k) => k.startsWith('grad.')).length;
    out.push({
      name: 'gradient tensors not compared',
      value: expectedGrads - seen,
      tolerance: 0,
      note: `${seen} compared`,
    });

    // greedy continuation (temperature 0) against transformers' generate
    if (isIntArray(meta.greedy_completion) && meta.greedy_completion.length > 0) {
      const greedy = meta.greedy_completion;
      const s = await policy.sample({ prompt, n: 1, temperature: 0, maxTokens: greedy.length, seed: 0 });
      let bad = 0;
      for (let t = 0; t < greedy.length; t++) if (s.tokenIds[0]![t] !== greedy[t]) bad++;
      out.push({
        name: 'greedy tokens mismatches',
        value: bad,
        tolerance: 0,
        note: `ours [${Array.from(s.tokenIds[0]!).join(', ')}]`,
      });
    }
  } finally {
    policy.dispose();
    reference?.dispose();
  }

  // a PEFT adapter saved by peft: its logits on the policy
  const adapterDir = path.join(caseDir, 'adapter');
  const am = meta.adapter as { r?: unknown; alpha?: unknown; target_modules?: unknown } | undefined;
  if (existsSync(adapterDir) && am) {
    const rank = field(
      am as Record<string, unknown>,
      'r',
      metaFile,
      (v): v is number => Number.isInteger(v),
      'an integer',
    );
    const alpha = field(am as Record<string, unknown>, 'alpha', metaFile, isNumber, 'a number');
    const targets = field(am as Record<string, unknown>, 'target_modules', metaFile, isStrArray, 'module names');
    const lm = await loadModel(path.join(caseDir, 'policy'), {
      device,
      lora: { rank, alpha, targetModules: targets, vision: true },
      adapter: adapterDir,
    });
    try {
      const [r] = await lm.forward([{ prompt, completions: comps, returnLogits: true }]);
      comps.forEach((_, i) => {
        const el = tensor(exp, `seq${i}.lora_logits`, expFile);
        const scale = Math.max(maxAbs(el), 1e-12);
        out.push({
          name: `seq${i}.lora_logits max_abs/scale`,
          value: maxAbsDiff(r!.logits![i]!, el) / scale,
          tolerance: TOL.logits,
          note: `PEFT adapter r=${rank} alpha=${alpha} [${targets.join(', ')}]`,
        });
      });
    } finally {
      lm.dispose();
    }
  }
  return out;
}

/** The checker for src/parity/checkers.ts: cases with policy/, reference/ and expected.safetensors. */
export const engineChecker: ParityChecker = {
  name: 'engine',
  applies(caseDir: string, _meta: Record<string, unknown>): boolean {
    return (
      existsSync(path.join(caseDir, 'policy', 'config.json')) && existsSync(path.join(caseDir, 'expected.safetensors'))
    );
  },
  check: checkEngineCase,
};
