/** Training: AdamW against a hand computation, clipping, NaN/Inf steps skipped, LoRA, adapters. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import { fixture, maxAbsDiff, randn, rng, tmpDir, weightedLogp } from './helpers.js';

const c = fixture('tied_gqa2_one_image');
const opts = { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 0 };

async function backwardOnce(m: Awaited<ReturnType<typeof loadModel>>, seed = 1, poison = false) {
  const r = rng(seed);
  await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
  const w = c.completions.map((comp) => randn(comp.length, r));
  if (poison) w[1]![0] = Number.NaN;
  m.zeroGrad();
  await m.backward([w]);
}

function normOf(m: Awaited<ReturnType<typeof loadModel>>): number {
  let s = 0;
  for (const n of m._native._names()) for (const g of m._native._grad(n)!) s += g * g;
  return Math.sqrt(s);
}

test('AdamW: the first step equals the hand computation; decay only on tensors of 2+ dimensions', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    await backwardOnce(m);
    const names = [
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.self_attn.q_proj.bias',
      'model.norm.weight',
      'visual.patch_embed.proj.weight',
    ];
    const before = names.map((n) => ({
      p: m._native._get(n),
      g: m._native._grad(n)!,
      dims: m._native._shape(n).length,
    }));
    const res = await m.step(opts);
    assert.equal(res.skipped, false);
    assert.ok(Math.abs(res.gradNorm - normOf(m)) < 1e-6 * res.gradNorm);
    assert.equal(m.stepCount, 1);
    names.forEach((n, k) => {
      const { p, g, dims } = before[k]!;
      const after = m._native._get(n);
      const wd = dims >= 2 ? opts.weightDecay : 0;
      for (let i = 0; i < p.length; i += Math.max(1, Math.floor(p.length / 50))) {
        const mi = (1 - opts.beta1) * g[i]!,
          vi = (1 - opts.beta2) * g[i]! * g[i]!;
        const want =
          p[i]! * (1 - opts.lr * wd) -
          ((opts.lr / (1 - opts.beta1)) * mi) / (Math.sqrt(vi) / Math.sqrt(1 - opts.beta2) + opts.eps);
        assert.ok(Math.abs(after[i]! - want) < 2e-6, `${n}[${i}]: ${after[i]} vs ${want}`);
      }
    });
  } finally {
    m.dispose();
  }
});

test('clipping: gradNorm is reported before clipping, the moments see the clipped gradient', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  const dir = tmpDir();
  try {
    await backwardOnce(m);
    const norm = normOf(m);
    const g = m._native._grad('model.layers.1.mlp.down_proj.weight')!;
    const res = await m.step({ ...opts, maxGradNorm: norm / 4 });
    assert.ok(Math.abs(res.gradNorm - norm) < 1e-6 * norm);
    await m.save(dir, { optimizer: true });
    const st = native()._readSafetensors(path.join(dir, 'optimizer.safetensors'));
    assert.equal(st.metadata.step, '1');
    const mom = st.tensors['model.layers.1.mlp.down_proj.weight.exp_avg']!.data;
    const scale = norm / 4 / (norm + 1e-6);
    for (let i = 0; i < g.length; i += 7) assert.ok(Math.abs(mom[i]! - (1 - opts.beta1) * g[i]! * scale) < 1e-7);
  } finally {
    m.dispose();
  }
});

test('a NaN gradient skips the step, names the tensor, and leaves weights and moments untouched', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    await backwardOnce(m, 1);
    await m.step(opts);
    const names = m._native._names();
    const before = names.map((n) => m._native._get(n));
    await backwardOnce(m, 2, true);
    const res = await m.step(opts);
    assert.equal(res.skipped, true);
    assert.match(res.reason!, /^non-finite gradient \(NaN or Inf\) in \S+/);
    assert.ok(Number.isNaN(res.gradNorm));
    assert.equal(m.stepCount, 1);
    names.forEach((n, k) => assert.deepEqual(m._native._get(n), before[k], n));
    // a clean gradient afterwards steps again
    await backwardOnce(m, 3);
    assert.equal((await m.step(opts)).skipped, false);
    assert.equal(m.stepCount, 2);
  } finally {
    m.dispose();
  }
});

test('gradients accumulate over backward calls until zeroGrad', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    await backwardOnce(m, 4);
    const once = m._native._grad('model.layers.0.mlp.gate_proj.weight')!;
    await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
    const r = rng(4);
    await m.backward([c.completions.map((comp) => randn(comp.length, r))]);
    const twice = m._native._grad('model.layers.0.mlp.gate_proj.weight')!;
    for (let i = 0; i < once.length; i += 5)
      assert.ok(Math.abs(twice[i]! - 2 * once[i]!) < 1e-5 * Math.max(1, Math.abs(once[i]!)));
  } finally {
    m.dispose();
  }
});

const lora = { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj', 'qkv'], vision: true, seed: 3 };

test('LoRA: adapters only are trainable, a fresh adapter changes nothing, the base stays frozen, setLoraEnabled(false) gives the base', async () => {
  const base = await loadModel(`${c.dir}/policy`);
  const m = await loadModel(`${c.dir}/policy`, { lora });
  try {
    const cfg = m.config,
      H = cfg.hiddenSize,
      D = cfg.headDim,
      E = cfg.vision.embedDim;
    const per = (i: number, o: number) => lora.rank * (i + o);
    const want =
      cfg.numLayers * (per(H, cfg.numHeads * D) + per(H, cfg.numKvHeads * D) + per(cfg.intermediateSize, H)) +
      cfg.vision.depth * per(E, 3 * E);
    assert.equal(m.numParameters.trainable, want);
    assert.equal(m.numParameters.total, base.numParameters.total);
    const names = m._native._names();
    assert.ok(names.includes('model.layers.0.self_attn.q_proj.lora_A.weight'));
    assert.ok(names.includes('visual.blocks.1.attn.qkv.lora_B.weight'));
    const [b0] = await base.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
    const [l0] = await m.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
    assert.equal(maxAbsDiff(b0!.logits![0]!, l0!.logits![0]!), 0, 'B = 0 at init');
    const frozen = m._native._get('model.layers.0.self_attn.q_proj.weight');
    for (let s = 0; s < 2; s++) {
      await backwardOnce(m, 10 + s);
      assert.equal(m._native._grad('model.layers.0.self_attn.q_proj.weight'), null, 'no gradient for the frozen base');
      assert.equal((await m.step({ ...opts, lr: 0.05 })).skipped, false);
    }
    assert.deepEqual(m._native._get('model.layers.0.self_attn.q_proj.weight'), frozen);
    const [l1] = await m.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
    assert.ok(maxAbsDiff(b0!.logits![0]!, l1!.logits![0]!) > 1e-3, 'trained adapters change the logits');
    m.setLoraEnabled(false);
    const [off] = await m.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
    assert.equal(maxAbsDiff(b0!.logits![0]!, off!.logits![0]!), 0, 'adapters off: the base model');
    m.setLoraEnabled(true);
    const [on] = await m.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
    assert.equal(maxAbsDiff(l1!.logits![0]!, on!.logits![0]!), 0);
  } finally {
    base.dispose();
    m.dispose();
  }
});

test('LoRA: adapter gradients by finite differences', async () => {
  const m = await loadModel(`${c.dir}/policy`, { lora });
  try {
    await backwardOnce(m, 20);
    await m.step({ ...opts, lr: 0.05 }); // A and B both non-zero
    const r = rng(21);
    const w = c.completions.map((comp) => randn(comp.length, r));
    const objective = () => weightedLogp(m, c.prompt, c.completions, w);
    await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
    m.zeroGrad();
    await m.backward([w]);
    for (const n of [
      'model.layers.1.mlp.down_proj.lora_A.weight',
      'model.layers.0.self_attn.v_proj.lora_B.weight',
      'visual.blocks.0.attn.qkv.lora_B.weight',
    ]) {
      const p = m._native._get(n),
        g = m._native._grad(n)!;
      let big = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[big]!)) big = i;
      const eps = 1e-2,
        orig = p[big]!;
      p[big] = orig + eps;
      m._native._set(n, p);
      const lp = await objective();
      p[big] = orig - eps;
      m._native._set(n, p);
      const lm = await objective();
      p[big] = orig;
      m._native._set(n, p);
      const fd = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(fd - g[big]!) < 2e-2 * Math.abs(g[big]!) + 1e-4, `${n}: ${g[big]} vs ${fd}`);
    }
  } finally {
    m.dispose();
  }
});

test('LoRA: saveAdapter writes PEFT files that load back to the same model', async () => {
  const m = await loadModel(`${c.dir}/policy`, {
    lora: { ...lora, vision: false, targetModules: ['q_proj', 'o_proj', 'up_proj'] },
  });
  const dir = tmpDir();
  try {
    await backwardOnce(m, 30);
    await m.step({ ...opts, lr: 0.05 });
    await m.saveAdapter(dir);
    const cfg = JSON.parse(readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 8);
    assert.deepEqual(cfg.target_modules, ['q_proj', 'o_proj', 'up_proj']);
    const st = native()._readSafetensors(path.join(dir, 'adapter_model.safetensors'));
    const keys = Object.keys(st.tensors).sort();
    assert.ok(
      keys.includes('base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight'),
      keys.slice(0, 4).join(', '),
    );
    assert.deepEqual(st.tensors['base_model.model.model.language_model.layers.1.mlp.up_proj.lora_B.weight']!.shape, [
      m.config.intermediateSize,
      4,
    ]);
    assert.equal(keys.length, 2 * 3 * m.config.numLayers);
    const back = await loadModel(`${c.dir}/policy`, {
      lora: { ...lora, vision: false, targetModules: ['q_proj', 'o_proj', 'up_proj'] },
      adapter: dir,
    });
    try {
      const [a] = await m.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
      const [b] = await back.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
      assert.equal(maxAbsDiff(a!.logits![1]!, b!.logits![1]!), 0);
    } finally {
      back.dispose();
    }
    assert.ok(!existsSync(path.join(dir, 'model.safetensors')));
  } finally {
    m.dispose();
  }
});
