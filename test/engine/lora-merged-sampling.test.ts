/**
 * LoRA sampling on merged weights (native/src/model.h, merged_; the CUDA backend's loraMergedSampling):
 * a sampling run that multiplies by W + s·B·A, made once at its start, draws what the run that adds
 * the adapter in every product draws — the same tokens greedily and from the same seed, log-probs
 * within fp32 rounding — and its log-probs are the adapter's, not the base model's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import { fixture, randn, rng } from './helpers.js';

const c = fixture('untied_mqa_two_images');
const lora = {
  rank: 4,
  alpha: 8,
  targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  vision: false,
  seed: 3,
};
type M = Awaited<ReturnType<typeof loadModel>>;

const draw = async (m: M, temperature: number) => {
  const s = await m.sample({ prompt: c.prompt, n: 4, temperature, maxTokens: 8, seed: 17 });
  return { ids: s.tokenIds.map((t) => Array.from(t)), lps: s.logprobs.map((l) => Array.from(l)) };
};

function maxDiff(a: number[][], b: number[][]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++)
    for (let t = 0; t < a[i]!.length; t++) m = Math.max(m, Math.abs(a[i]![t]! - b[i]![t]!));
  return m;
}

test('LoRA merged sampling: the tokens and log-probs of the unmerged adapters, within fp32 rounding', async () => {
  const m = await loadModel(`${c.dir}/policy`, { lora });
  try {
    const r = rng(5);
    for (const n of m._native._names().filter((x) => x.endsWith('lora_B.weight')))
      m._native._set(n, randn(m._native._get(n).length, r, 0.5));
    for (const temperature of [0, 1]) {
      const unmerged = await draw(m, temperature);
      m._native._loraMergedSampling(true);
      const merged = await draw(m, temperature);
      m._native._loraMergedSampling(false);
      assert.deepEqual(merged.ids, unmerged.ids, `temperature ${temperature}: the same tokens`);
      assert.notDeepEqual(merged.lps, unmerged.lps, 'the merged path ran: its fp32 rounding differs somewhere');
      assert.ok(
        maxDiff(merged.lps, unmerged.lps) <= 1e-5,
        `temperature ${temperature}: ${maxDiff(merged.lps, unmerged.lps)}`,
      );
      // the forward (never merged) scores the sampled tokens as the merged run did
      const [f] = await m.forward([{ prompt: c.prompt, completions: merged.ids.map((t) => Int32Array.from(t)) }]);
      assert.ok(
        maxDiff(
          f!.logprobs.map((x) => Array.from(x)),
          merged.lps,
        ) <= 1e-5,
      );
    }
    // the adapters matter here: without them the greedy tokens' log-probs are far from the merged run's
    m._native._loraMergedSampling(true);
    const merged = await draw(m, 0);
    m.setLoraEnabled(false);
    const base = await draw(m, 0); // adapters off: nothing merged, the base model
    m.setLoraEnabled(true);
    m._native._loraMergedSampling(false);
    assert.ok(
      JSON.stringify(base.ids) !== JSON.stringify(merged.ids) || maxDiff(base.lps, merged.lps) > 1e-3,
      'the adapters change the samples: the check proves something',
    );
  } finally {
    m.dispose();
  }
});
