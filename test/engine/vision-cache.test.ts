/**
 * The vision feature cache (native/src/vision_cache.h, docs/engine.md): merged image features kept by
 * image key for the version of the vision weights they were computed with. Every check runs the same
 * calls on a model with the cache and on one without (`_visionCache(0)`), holding the same weights,
 * and asks for the same numbers; the cache's counts show that it was used (or, where it must not be,
 * that it was not), so a check cannot pass by never touching it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import type { Prompt } from '../../src/engine/types.js';
import { fixture, randn, rng } from './helpers.js';

const c = fixture('untied_mqa_two_images');
type M = Awaited<ReturnType<typeof loadModel>>;
const lora = { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], vision: false, seed: 3 };
const adamw = { lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 };

const logprobs = async (m: M, prompt: Prompt = c.prompt) => {
  const [f] = await m.forward([{ prompt, completions: c.completions }]);
  return f!.logprobs.map((x) => Array.from(x));
};
const greedy = async (m: M) => {
  const s = await m.sample({ prompt: c.prompt, n: 2, temperature: 0, maxTokens: 5, seed: 0 });
  return { ids: s.tokenIds.map((t) => Array.from(t)), lps: s.logprobs.map((l) => Array.from(l)) };
};
const stats = (m: M) => m._native._visionCache();

/** Two models with the same weights: `on` with the cache, `off` without. */
async function pair(options: Parameters<typeof loadModel>[1] = {}): Promise<{ on: M; off: M }> {
  const on = await loadModel(`${c.dir}/policy`, options);
  const off = await loadModel(`${c.dir}/policy`, options);
  off._native._visionCache(0);
  assert.ok(stats(on).maxBytes > 0, 'the cache is on by default');
  // LoRA's B starts at zero: give every adapter the same non-zero B so that it changes the output
  const r = rng(5);
  for (const n of on._native._names().filter((x) => x.endsWith('lora_B.weight'))) {
    const b = randn(on._native._get(n).length, r, 0.5);
    on._native._set(n, b);
    off._native._set(n, b);
  }
  return { on, off };
}

/** A forward that keeps activations, a backward of fixed gradients, and the named gradients after it. */
async function trainForward(m: M, names: string[]): Promise<{ lps: number[][]; grads: (number[] | null)[] }> {
  m.zeroGrad();
  const [f] = await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
  const r = rng(11);
  await m.backward([c.completions.map((comp) => randn(comp.length, r))]);
  const grads = names.map((n) => {
    const g = m._native._grad(n);
    return g ? Array.from(g) : null;
  });
  return { lps: f!.logprobs.map((x) => Array.from(x)), grads };
}

test('vision cache: LoRA on the LM — the rollout computes the features once, the reference and policy forwards reuse them, exactly', async () => {
  const { on, off } = await pair({ lora });
  try {
    const loraNames = on._native._names().filter((n) => n.includes('lora_'));
    for (let step = 0; step < 2; step++) {
      const s0 = stats(on);
      assert.deepEqual(await greedy(on), await greedy(off)); // the rollout
      const s1 = stats(on);
      if (step === 0) assert.equal(s1.misses - s0.misses, 2, 'the rollout runs the tower on both images');
      else assert.equal(s1.hits - s0.hits, 2, 'the next step: same images, same vision weights');
      on.setLoraEnabled(false); // the reference forward
      off.setLoraEnabled(false);
      assert.deepEqual(await logprobs(on), await logprobs(off));
      on.setLoraEnabled(true);
      off.setLoraEnabled(true);
      const a = await trainForward(on, loraNames); // the policy forward and backward
      const b = await trainForward(off, loraNames);
      assert.deepEqual(a, b);
      assert.ok(a.grads.every((g) => g !== null));
      const s2 = stats(on);
      assert.equal(s2.hits - s1.hits, 4, 'the reference and the policy forward took both images from the cache');
      assert.equal(s2.misses, s1.misses);
      assert.equal(s2.entries, 2);
      assert.equal((await on.step(adamw)).skipped, false); // moves the adapters only: the features stay valid
      assert.equal((await off.step(adamw)).skipped, false);
    }
    assert.equal(stats(off).hits + stats(off).misses, 0, 'the model without the cache never consults it');
  } finally {
    on.dispose();
    off.dispose();
  }
});

test('vision cache: one image cached and one new in the same prompt', async () => {
  const { on, off } = await pair({ lora });
  try {
    await logprobs(on); // caches both
    // the same pixels in a new array: a new key, so a miss for that image and a hit for the other
    const p: Prompt = {
      ids: c.prompt.ids,
      images: [c.prompt.images[0]!, { ...c.prompt.images[1]!, pixels: c.prompt.images[1]!.pixels.slice() }],
    };
    const s0 = stats(on);
    const a = await logprobs(on, p);
    const s1 = stats(on);
    assert.equal(s1.hits - s0.hits, 1);
    assert.equal(s1.misses - s0.misses, 1);
    const b = await logprobs(off, p);
    for (let g = 0; g < a.length; g++)
      for (let t = 0; t < a[g]!.length; t++)
        assert.ok(Math.abs(a[g]![t]! - b[g]![t]!) <= 1e-6, `completion ${g} token ${t}`);
  } finally {
    on.dispose();
    off.dispose();
  }
});

test('vision cache: a write to a vision weight invalidates the cached features', async () => {
  const { on, off } = await pair();
  try {
    const before = await logprobs(on);
    assert.deepEqual(await logprobs(on), before);
    assert.equal(stats(on).hits, 2, 'the second forward took the features from the cache');
    const name = on._native._names().find((n) => n.startsWith('visual.blocks.0.') && n.endsWith('qkv.weight'))!;
    const w = on._native._get(name);
    const noise = randn(w.length, rng(7), 0.5);
    for (let i = 0; i < w.length; i++) w[i] = w[i]! + noise[i]!;
    on._native._set(name, w);
    off._native._set(name, w);
    const after = await logprobs(on);
    assert.notDeepEqual(after, before, 'the perturbation changed nothing: the check would prove nothing');
    assert.deepEqual(after, await logprobs(off));
    assert.equal(stats(on).misses, 4, 'both images computed again');
  } finally {
    on.dispose();
    off.dispose();
  }
});

test('vision cache: full fine-tuning — no cached features in a training forward, none reused after a step', async () => {
  const { on, off } = await pair();
  try {
    const visionNames = on._native
      ._names()
      .filter((n) => n.startsWith('visual.'))
      .slice(0, 4);
    assert.deepEqual(await greedy(on), await greedy(off)); // the rollout fills the cache
    const s0 = stats(on);
    assert.equal(s0.entries, 2);
    const a = await trainForward(on, visionNames);
    const b = await trainForward(off, visionNames);
    assert.equal(stats(on).hits, s0.hits, 'a training forward of a trainable tower runs the tower');
    assert.deepEqual(a, b);
    assert.ok(
      a.grads.every((g) => g !== null && g.some((x) => x !== 0)),
      'gradients reach the vision tower',
    );
    assert.equal((await on.step(adamw)).skipped, false);
    assert.equal((await off.step(adamw)).skipped, false);
    const s1 = stats(on);
    const lps = await logprobs(on);
    assert.deepEqual(lps, await logprobs(off));
    const s2 = stats(on);
    assert.equal(s2.hits, s1.hits, 'features from before the step must not be reused');
    assert.equal(s2.misses - s1.misses, 2);
    assert.deepEqual(await greedy(on), await greedy(off)); // the next rollout: the new features
    assert.equal(stats(on).hits - s2.hits, 2);
  } finally {
    on.dispose();
    off.dispose();
  }
});

test('vision cache: adapters on the tower — toggling them changes the features', async () => {
  const withVision = { rank: 4, alpha: 8, targetModules: ['qkv', 'fc1', 'q_proj'], vision: true, seed: 3 };
  const { on, off } = await pair({ lora: withVision });
  try {
    for (const enabled of [true, false, true, false]) {
      on.setLoraEnabled(enabled);
      off.setLoraEnabled(enabled);
      assert.deepEqual(await logprobs(on), await logprobs(off), `adapters ${enabled ? 'on' : 'off'}`);
    }
    on.setLoraEnabled(true);
    const a = await logprobs(on);
    on.setLoraEnabled(false);
    assert.notDeepEqual(await logprobs(on), a, 'the vision adapters change the output: the check proves something');
  } finally {
    on.dispose();
    off.dispose();
  }
});

test('vision cache: pixels changed in place under the same key are not served stale features', async () => {
  const { on, off } = await pair({ lora });
  try {
    const px = c.prompt.images.map((im) => im.pixels.slice());
    const p: Prompt = { ids: c.prompt.ids, images: c.prompt.images.map((im, i) => ({ ...im, pixels: px[i]! })) };
    const before = await logprobs(on, p);
    for (const a of px) for (let i = 0; i < a.length; i++) a[i] = a[i]! * 0.5 + 0.1;
    const after = await logprobs(on, p);
    assert.notDeepEqual(after, before);
    assert.deepEqual(after, await logprobs(off, p));
  } finally {
    on.dispose();
    off.dispose();
  }
});

test('vision cache: the bound in bytes evicts the least recently used', async () => {
  const { on, off } = await pair({ lora });
  try {
    await logprobs(on);
    const full = stats(on);
    assert.equal(full.entries, 2);
    on._native._visionCache(full.bytes - 1); // room for one of the two
    assert.equal(stats(on).entries, 1);
    assert.deepEqual(await logprobs(on), await logprobs(off));
    on._native._visionCache(0);
    assert.deepEqual({ entries: stats(on).entries, bytes: stats(on).bytes }, { entries: 0, bytes: 0 });
  } finally {
    on.dispose();
    off.dispose();
  }
});
