/**
 * The model: parity with transformers on the committed fixtures, the shared prefix against separate
 * sequences (forward and gradients), and model-level finite differences.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import { checkEngineCase, engineChecker } from '../../src/parity/engine.js';
import { CASES, checkFiniteDifferences, fixture, maxAbs, maxAbsDiff, randn, rng, weightedLogp } from './helpers.js';

for (const name of CASES) {
  test(`parity with transformers 5.17: ${name}`, async () => {
    const c = fixture(name);
    assert.ok(engineChecker.applies(c.dir, c.meta as unknown as Record<string, unknown>));
    const ms = await checkEngineCase(c.dir, c.meta as unknown as Record<string, unknown>, {
      device: 'cpu',
      settings: {},
    });
    assert.ok(ms.length > 20);
    const bad = ms.filter((m) => !(m.value <= m.tolerance));
    assert.deepEqual(bad, [], `beyond tolerance: ${JSON.stringify(bad)}`);
    assert.ok(
      ms.some((m) => m.name.startsWith('grad.')),
      'gradients compared',
    );
  });
}

test('parity checker fails on a wrong expectation (the check can fail)', async () => {
  const c = fixture('gqa3_text_only');
  const meta = { ...c.meta, advantages: c.meta.advantages.map((a) => a + 0.5) } as unknown as Record<string, unknown>;
  const ms = await checkEngineCase(c.dir, meta, { device: 'cpu', settings: {} });
  const bad = ms.filter((m) => !(m.value <= m.tolerance)).map((m) => m.name);
  assert.ok(bad.includes('loss abs/max(1,|loss|)'));
  assert.ok(bad.some((n) => n.startsWith('grad.')));
});

/** Per-token weights for Σ w·logp, seeded. */
function weights(comps: Int32Array[], seed: number): Float32Array[] {
  const r = rng(seed);
  return comps.map((c) => randn(c.length, r));
}

for (const name of ['untied_mqa_two_images', 'tied_gqa2_one_image']) {
  test(`shared prefix equals separate sequences (forward and summed gradients): ${name}`, async () => {
    const c = fixture(name);
    const shared = await loadModel(`${c.dir}/policy`);
    const separate = await loadModel(`${c.dir}/policy`);
    try {
      const w = weights(c.completions, 3);
      const [s] = await shared.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
      shared.zeroGrad();
      await shared.backward([w]);
      // every completion as its own request: the prompt recomputed each time
      const sep = await separate.forward(
        c.completions.map((comp) => ({ prompt: c.prompt, completions: [comp], keepForBackward: true })),
      );
      separate.zeroGrad();
      await separate.backward(w.map((wi) => [wi]));
      c.completions.forEach((_, i) => {
        assert.ok(maxAbsDiff(s!.logprobs[i]!, sep[i]!.logprobs[0]!) < 1e-5, `logprobs ${i}`);
        assert.ok(maxAbsDiff(s!.entropy[i]!, sep[i]!.entropy[0]!) < 1e-5, `entropy ${i}`);
      });
      for (const n of shared._native._names()) {
        const a = shared._native._grad(n)!,
          b = separate._native._grad(n)!;
        const scale = Math.max(maxAbs(b), 1e-6);
        assert.ok(maxAbsDiff(a, b) / scale < 1e-4, `gradient of ${n}: ${maxAbsDiff(a, b)} (scale ${scale})`);
      }
    } finally {
      shared.dispose();
      separate.dispose();
    }
  });
}

test('model-level finite differences: d(Σ w·logp)/dθ for a sample of every tensor kind', async () => {
  const c = fixture('tied_gqa2_one_image');
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const w = weights(c.completions, 5);
    const objective = () => weightedLogp(m, c.prompt, c.completions, w);
    await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
    m.zeroGrad();
    await m.backward([w]);
    const r = rng(9);
    const names = m._native
      ._names()
      .filter((n) =>
        /patch_embed|blocks\.1\.(attn\.qkv\.weight|mlp\.fc1\.bias|norm1\.weight)|merger\.mlp\.0\.weight|embed_tokens|layers\.0\.(self_attn\.(k_proj\.bias|o_proj)|mlp\.up_proj|input_layernorm)|model\.norm/.test(
          n,
        ),
      );
    assert.ok(names.length >= 10, names.join(','));
    await checkFiniteDifferences(m, names, objective, r);
  } finally {
    m.dispose();
  }
});

test('forward of several requests at once equals one at a time', async () => {
  const a = fixture('mha_odd_grid_text_after'),
    b = fixture('mha_odd_grid_text_after');
  const m = await loadModel(`${a.dir}/policy`);
  try {
    const other = {
      ids: Int32Array.from(b.meta.prefix.map((x) => (x === 60 ? 60 : (x * 7) % 57))),
      images: b.prompt.images,
    };
    const both = await m.forward([
      { prompt: a.prompt, completions: a.completions },
      { prompt: other, completions: b.completions.slice(1) },
    ]);
    const [one] = await m.forward([{ prompt: other, completions: b.completions.slice(1) }]);
    one!.logprobs.forEach((lp, i) => assert.ok(maxAbsDiff(lp, both[1]!.logprobs[i]!) === 0));
  } finally {
    m.dispose();
  }
});

test('two models at once (Promise.all) give the same results as one after the other', async () => {
  const c = fixture('untied_mqa_two_images');
  const a = await loadModel(`${c.dir}/policy`);
  const b = await loadModel(`${c.dir}/reference`);
  try {
    const [ra1] = await a.forward([{ prompt: c.prompt, completions: c.completions }]);
    const [rb1] = await b.forward([{ prompt: c.prompt, completions: c.completions }]);
    const [[ra2], [rb2], s1, s2] = await Promise.all([
      a.forward([{ prompt: c.prompt, completions: c.completions }]),
      b.forward([{ prompt: c.prompt, completions: c.completions }]),
      a.sample({ prompt: c.prompt, n: 3, temperature: 1, maxTokens: 5, seed: 4 }),
      b.sample({ prompt: c.prompt, n: 3, temperature: 1, maxTokens: 5, seed: 4 }),
    ]);
    assert.deepEqual(ra2!.logprobs, ra1!.logprobs);
    assert.deepEqual(rb2!.logprobs, rb1!.logprobs);
    assert.deepEqual(s1, await a.sample({ prompt: c.prompt, n: 3, temperature: 1, maxTokens: 5, seed: 4 }));
    assert.deepEqual(s2, await b.sample({ prompt: c.prompt, n: 3, temperature: 1, maxTokens: 5, seed: 4 }));
  } finally {
    a.dispose();
    b.dispose();
  }
});

test('edge cases: empty completions, no completions, a text-only prompt on a vision model', async () => {
  const c = fixture('tied_gqa2_one_image');
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const [r] = await m.forward([
      { prompt: c.prompt, completions: [new Int32Array(0), c.completions[0]!], keepForBackward: true },
    ]);
    assert.equal(r!.logprobs[0]!.length, 0);
    const [ref] = await m.forward([{ prompt: c.prompt, completions: [c.completions[0]!] }]);
    assert.ok(maxAbsDiff(r!.logprobs[1]!, ref!.logprobs[0]!) < 1e-5);
    m.zeroGrad();
    await m.backward([[new Float32Array(0), new Float32Array(c.completions[0]!.length).fill(0.1)]]);
    const [none] = await m.forward([{ prompt: c.prompt, completions: [] }]);
    assert.deepEqual(none!.logprobs, []);
    const text = { ids: Int32Array.from([1, 2, 3, 4, 5]), images: [] };
    const [t] = await m.forward([{ prompt: text, completions: [Int32Array.from([6, 7])], keepForBackward: true }]);
    assert.equal(t!.logprobs[0]!.length, 2);
    m.zeroGrad();
    await m.backward([[Float32Array.from([1, 1])]]);
    // no image: the vision tower gets no gradient
    assert.equal(maxAbs(m._native._grad('visual.patch_embed.proj.weight')!), 0);
    assert.ok(maxAbs(m._native._grad('model.layers.0.mlp.up_proj.weight')!) > 0);
  } finally {
    m.dispose();
  }
});
