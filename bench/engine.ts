/**
 * The native engine on the tiny default model (assets/tiny-qwen2-vl), CPU:
 *   npm run build && node dist/bench/engine.js [--group 8] [--tokens 32] [--reps 3]
 * Times are the best of --reps runs (the machine is shared; the best run is the least disturbed).
 * Prints prefill tokens/s, sampled tokens/s, one GRPO update's time (policy forward + reference
 * forward + backward + AdamW) and the GFLOP/s achieved by forward and backward; and, as a baseline
 * measured in the same run, the same update with every completion as its own sequence (the prompt
 * and image recomputed G times) instead of the shared prefix. Printed, not asserted.
 */
import os from 'node:os';
import { loadModel } from '../src/engine/model.js';
import { native } from '../src/engine/native.js';
import type { EngineConfig } from '../src/engine/config.js';
import type { Prompt } from '../src/engine/types.js';
import { DEFAULT_MODEL_DIR } from '../src/model/default.js';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}
const G = arg('group', 8),
  maxTokens = arg('tokens', 32),
  reps = arg('reps', 5);

function best(xs: number[]): number {
  return Math.min(...xs);
}

/** Wall time of fn; `cpu` is this process's CPU time over the same interval (all threads). */
async function time<T>(fn: () => Promise<T>): Promise<{ ms: number; cpu: number; value: T }> {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const u = process.cpuUsage(c0);
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, cpu: (u.user + u.system) / 1e3, value };
}

/** Forward FLOPs of one packed request (multiply-adds x 2), and of its backward (full fine-tune). */
function flops(c: EngineConfig, Lp: number, lens: number[], patches: number): { fwd: number; bwd: number } {
  const H = c.hiddenSize,
    D = c.headDim,
    NH = c.numHeads,
    KV = c.numKvHeads,
    I = c.intermediateSize,
    V = c.vocabSize;
  const lin = 2 * c.numLayers * (H * NH * D + 2 * H * KV * D + NH * D * H + 3 * H * I);
  let rows = Lp,
    keys = (Lp * (Lp + 1)) / 2;
  for (const L of lens) {
    rows += L;
    keys += L * Lp + (L * (L + 1)) / 2;
  }
  const attn = 4 * D * NH * c.numLayers * keys;
  const head = 2 * lens.reduce((a, b) => a + b, 0) * H * V;
  const v = c.vision,
    E = v.embedDim,
    F = v.mlpHidden,
    PD = v.inChannels * v.temporalPatchSize * v.patchSize ** 2;
  const m2 = v.spatialMergeSize ** 2;
  const vlin = patches
    ? 2 * patches * (PD * E + v.depth * (3 * E * E + E * E + 2 * E * F)) +
      2 * (patches / m2) * (m2 * E * m2 * E + m2 * E * H)
    : 0;
  const vattn = patches ? 4 * E * v.depth * patches * patches : 0; // one image: every patch sees every patch
  return {
    fwd: lin * rows + attn + head + vlin + vattn,
    bwd: 2 * (lin * rows + head + vlin) + 2.5 * (attn + vattn),
  };
}

async function main() {
  const threads = native()._threads();
  const policy = await loadModel(DEFAULT_MODEL_DIR);
  const reference = await loadModel(DEFAULT_MODEL_DIR);
  const c = policy.config;
  // a VQA-like prompt: one 112x112 image (8x8 patches -> 16 tokens) and ~40 tokens of text
  const grid: [number, number, number] = [1, 8, 8];
  const patches = grid[0] * grid[1] * grid[2];
  const pd = c.vision.inChannels * c.vision.temporalPatchSize * c.vision.patchSize ** 2;
  const pixels = new Float32Array(patches * pd);
  let s = 1;
  for (let i = 0; i < pixels.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    pixels[i] = (s / 4294967296) * 4 - 2;
  }
  const text = (n: number, off: number) =>
    Array.from({ length: n }, (_, i) => (i * 37 + off) % Math.min(500, c.vocabSize));
  const ids = [
    ...text(8, 1),
    c.visionStartTokenId,
    ...new Array(patches / c.vision.spatialMergeSize ** 2).fill(c.imageTokenId),
    c.visionEndTokenId,
    ...text(34, 5),
  ];
  const prompt: Prompt = { ids: Int32Array.from(ids), images: [{ pixels, gridThw: grid }] };
  const Lp = ids.length;
  console.log(`(wall times are the best of ${reps}; on a shared machine CPU time is the steadier measure)`);
  console.log(
    `engine (CPU, fp32) on ${os.cpus()[0]?.model ?? 'unknown CPU'}: ${threads} threads, kernel ${native()._gemmKernel()}, load average ${os.loadavg()[0]!.toFixed(1)}`,
  );
  console.log(
    `model ${DEFAULT_MODEL_DIR}: ${(policy.numParameters.total / 1e6).toFixed(2)} M parameters; ` +
      `LM ${c.numLayers} x ${c.hiddenSize} (heads ${c.numHeads}/${c.numKvHeads}), vision ${c.vision.depth} x ${c.vision.embedDim}, vocab ${c.vocabSize}`,
  );
  console.log(
    `prompt ${Lp} tokens (one 112x112 image = ${patches} patches, ${patches / 4} image tokens); group G=${G}, ${maxTokens} new tokens each; best of ${reps}\n`,
  );

  // prefill: the prompt (with its image) once, plus the first token of every sample
  const prefill = [],
    prefillCpu = [];
  for (let r = 0; r < reps; r++) {
    const t = await time(() => policy.sample({ prompt, n: G, temperature: 1, maxTokens: 1, seed: r }));
    prefill.push(t.ms);
    prefillCpu.push(t.cpu);
  }
  const tPre = best(prefill),
    cPre = best(prefillCpu);
  // sampling G completions of maxTokens (no stop ids: every sample runs to the end)
  const samp = [],
    sampCpu = [];
  let sample = await policy.sample({ prompt, n: G, temperature: 1, maxTokens, seed: 0 });
  for (let r = 0; r < reps; r++) {
    const t = await time(() => policy.sample({ prompt, n: G, temperature: 1, maxTokens, seed: r }));
    samp.push(t.ms);
    sampCpu.push(t.cpu);
    sample = t.value;
  }
  const tSamp = best(samp),
    cSamp = best(sampCpu);
  const newTokens = sample.tokenIds.reduce((a, t) => a + t.length, 0);
  console.log(
    `prefill:  ${(Lp / (tPre / 1e3)).toFixed(0)} prompt tokens/s (${tPre.toFixed(1)} ms for ${Lp} tokens + image, with the first token of ${G} samples)`,
  );
  console.log(
    `sampling: ${(newTokens / (tSamp / 1e3)).toFixed(0)} new tokens/s overall (${tSamp.toFixed(1)} ms for ${G} x ${maxTokens}, prefill included);` +
      ` decode alone ${((newTokens - G) / ((tSamp - tPre) / 1e3)).toFixed(0)} tokens/s (${G} rows a step)`,
  );
  console.log(
    `          CPU time: prefill ${cPre.toFixed(1)} ms (${(Lp / (cPre / 1e3)).toFixed(0)} tokens per CPU-second),` +
      ` sampling ${cSamp.toFixed(1)} ms (${(newTokens / (cSamp / 1e3)).toFixed(0)} new tokens per CPU-second)`,
  );

  // one GRPO update: policy forward (kept), reference forward, backward, AdamW
  const comps = sample.tokenIds;
  const lens = comps.map((t) => t.length);
  const N = lens.reduce((a, b) => a + b, 0);
  const fl = flops(c, Lp, lens, patches);
  const grads = comps.map((t) => new Float32Array(t.length).fill(1 / N));
  const opt = { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.0, maxGradNorm: 1.0 };
  const update = async (shared: boolean) => {
    const reqs = shared
      ? [{ prompt, completions: comps, keepForBackward: true }]
      : comps.map((t) => ({ prompt, completions: [t], keepForBackward: true }));
    const f = await time(() => policy.forward(reqs));
    const rf = await time(() => reference.forward(reqs.map((r) => ({ prompt: r.prompt, completions: r.completions }))));
    policy.zeroGrad();
    const b = await time(() => policy.backward(shared ? [grads] : grads.map((g) => [g])));
    const st = await time(() => policy.step(opt));
    return {
      fwd: f.ms,
      ref: rf.ms,
      bwd: b.ms,
      step: st.ms,
      total: f.ms + rf.ms + b.ms + st.ms,
      fwdCpu: f.cpu,
      bwdCpu: b.cpu,
      totalCpu: f.cpu + rf.cpu + b.cpu + st.cpu,
    };
  };
  const runs = {
    shared: [] as Awaited<ReturnType<typeof update>>[],
    separate: [] as Awaited<ReturnType<typeof update>>[],
  };
  await update(true); // warm-up: gradients and moments allocated
  for (let r = 0; r < reps; r++) {
    runs.shared.push(await update(true));
    runs.separate.push(await update(false));
  }
  type Run = Awaited<ReturnType<typeof update>>;
  // each part: its best run; the update: the sum of the parts' bests
  const part = (xs: Run[], k: keyof Run) => best(xs.map((x) => x[k]));
  const total = (xs: Run[]) => part(xs, 'fwd') + part(xs, 'ref') + part(xs, 'bwd') + part(xs, 'step');
  const sh = runs.shared,
    sp = runs.separate;
  console.log(
    `\nGRPO update (full fine-tune, ${G} completions, ${N} completion tokens; each part the best of ${reps}):`,
  );
  console.log(
    `  shared prefix:  ${total(sh).toFixed(1)} ms = policy forward ${part(sh, 'fwd').toFixed(1)} + reference forward ${part(sh, 'ref').toFixed(1)}` +
      ` + backward ${part(sh, 'bwd').toFixed(1)} + AdamW ${part(sh, 'step').toFixed(1)}`,
  );
  console.log(
    `  separate (baseline, prompt and image recomputed per completion): ${total(sp).toFixed(1)} ms` +
      ` = ${part(sp, 'fwd').toFixed(1)} + ${part(sp, 'ref').toFixed(1)} + ${part(sp, 'bwd').toFixed(1)} + ${part(sp, 'step').toFixed(1)}`,
  );
  console.log(
    `  shared prefix is ${(total(sp) / total(sh)).toFixed(2)}x faster than separate sequences` +
      ` (CPU time ${part(sh, 'totalCpu').toFixed(1)} vs ${part(sp, 'totalCpu').toFixed(1)} ms: ${(part(sp, 'totalCpu') / part(sh, 'totalCpu')).toFixed(2)}x)`,
  );
  console.log(
    `  achieved: forward ${(fl.fwd / (part(sh, 'fwd') / 1e3) / 1e9).toFixed(2)} GFLOP/s wall, ${(fl.fwd / (part(sh, 'fwdCpu') / 1e3) / 1e9).toFixed(2)} per CPU-second` +
      ` (${(fl.fwd / 1e6).toFixed(0)} MFLOP); backward ${(fl.bwd / (part(sh, 'bwd') / 1e3) / 1e9).toFixed(2)} GFLOP/s wall,` +
      ` ${(fl.bwd / (part(sh, 'bwdCpu') / 1e3) / 1e9).toFixed(2)} per CPU-second (${(fl.bwd / 1e6).toFixed(0)} MFLOP)`,
  );
  policy.dispose();
  reference.dispose();
}

await main();
