/**
 * The packed-weight cache of the CPU sampler (native/src/model.h, packed_): a sampling run packs the
 * language model's weights and keeps them for later runs and forwards. Whatever changes the weights
 * (a write through _set, a full-parameter optimizer step) must make the next run use the new ones:
 * each check compares the model against a fresh one loaded with the same weights (no cache), bit for
 * bit, and against what the model gave before the change (which must differ, or the check proves
 * nothing). LoRA adapters sit on top of the packed product, so toggling them needs no repacking.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import { fixture, randn, rng } from './helpers.js';

const c = fixture('tied_gqa2_one_image');
type M = Awaited<ReturnType<typeof loadModel>>;

const greedy = async (m: M) => {
  const s = await m.sample({ prompt: c.prompt, n: 1, temperature: 0, maxTokens: 6, seed: 0 });
  return { ids: Array.from(s.tokenIds[0]!), lps: Array.from(s.logprobs[0]!) };
};
const logprobs = async (m: M) => {
  const [f] = await m.forward([{ prompt: c.prompt, completions: c.completions }]);
  return f!.logprobs.map((x) => Array.from(x));
};
/** A fresh model (nothing packed) holding `m`'s current weights. */
async function twin(m: M): Promise<M> {
  const t = await loadModel(`${c.dir}/policy`);
  for (const n of m._native._names()) t._native._set(n, m._native._get(n));
  return t;
}

test('packed cache: a write through _set reaches the next sampling run and forward', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const before = await greedy(m); // packs
    await greedy(m); // reuses
    const r = rng(3);
    for (const n of [
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.1.mlp.down_proj.weight',
      'model.embed_tokens.weight',
    ]) {
      const p = m._native._get(n);
      const noise = randn(p.length, r);
      for (let i = 0; i < p.length; i++) p[i] = p[i]! + 0.5 * noise[i]!;
      m._native._set(n, p);
    }
    const after = await greedy(m);
    assert.notDeepEqual(after.lps, before.lps, 'the perturbation changed nothing: the check would prove nothing');
    const t = await twin(m);
    try {
      assert.deepEqual(after, await greedy(t));
      assert.deepEqual(await logprobs(m), await logprobs(t));
    } finally {
      t.dispose();
    }
  } finally {
    m.dispose();
  }
});

test('packed cache: a full-parameter optimizer step reaches the next sampling run', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const before = await greedy(m); // packs
    await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
    const r = rng(1);
    m.zeroGrad();
    await m.backward([c.completions.map((comp) => randn(comp.length, r))]);
    assert.equal(
      (await m.step({ lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 })).skipped,
      false,
    );
    const after = await greedy(m);
    assert.notDeepEqual(after.lps, before.lps);
    const t = await twin(m);
    try {
      assert.deepEqual(after, await greedy(t));
    } finally {
      t.dispose();
    }
  } finally {
    m.dispose();
  }
});

test('packed cache: LoRA toggled on and off between runs gives the adapter and the base model', async () => {
  const lora = { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], vision: false, seed: 3 };
  const m = await loadModel(`${c.dir}/policy`, { lora });
  const base = await loadModel(`${c.dir}/policy`);
  try {
    // B starts at zero: give every adapter non-zero B so that it changes the output
    const r = rng(5);
    for (const n of m._native._names().filter((x) => x.endsWith('lora_B.weight')))
      m._native._set(
        n,
        randn(m._native._get(n).length, r).map((x) => x * 0.5),
      );
    const on = await greedy(m);
    m.setLoraEnabled(false);
    const off = await greedy(m);
    m.setLoraEnabled(true);
    const onAgain = await greedy(m);
    assert.notDeepEqual(on.lps, off.lps);
    assert.deepEqual(off, await greedy(base));
    assert.deepEqual(onAgain, on);
  } finally {
    m.dispose();
    base.dispose();
  }
});
