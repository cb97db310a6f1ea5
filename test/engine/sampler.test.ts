/** Sampling with the KV cache: seeds, temperature 0, max tokens, stop ids, batch independence. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import { fixture, maxAbsDiff } from './helpers.js';

const c = fixture('untied_mqa_two_images');

test('sampler: the same seed gives the same completions, another seed others', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const req = { prompt: c.prompt, n: 4, temperature: 1.0, maxTokens: 8, seed: 42 };
    const a = await m.sample(req);
    const b = await m.sample(req);
    assert.deepEqual(a.tokenIds, b.tokenIds);
    assert.deepEqual(a.logprobs, b.logprobs);
    const d = await m.sample({ ...req, seed: 43 });
    assert.notDeepEqual(d.tokenIds, a.tokenIds);
    // samples of one call differ from each other (n streams, not one repeated)
    assert.ok(new Set(a.tokenIds.map((t) => t.join(','))).size > 1);
  } finally {
    m.dispose();
  }
});

test('sampler: sample g does not depend on n (a pure function of seed, g and step)', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const big = await m.sample({ prompt: c.prompt, n: 5, temperature: 0.9, topP: 0.95, maxTokens: 6, seed: 7 });
    const small = await m.sample({ prompt: c.prompt, n: 2, temperature: 0.9, topP: 0.95, maxTokens: 6, seed: 7 });
    assert.deepEqual(small.tokenIds, big.tokenIds.slice(0, 2));
    assert.deepEqual(small.logprobs, big.logprobs.slice(0, 2));
  } finally {
    m.dispose();
  }
});

test('sampler: temperature 0 follows the argmax of the forward pass, and its log-probs match forward', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const s = await m.sample({ prompt: c.prompt, n: 2, temperature: 0, maxTokens: 7, seed: 1 });
    assert.deepEqual(s.tokenIds[0], s.tokenIds[1]);
    const [f] = await m.forward([{ prompt: c.prompt, completions: [s.tokenIds[0]!], returnLogits: true }]);
    const V = m.config.vocabSize,
      Lp = c.prompt.ids.length;
    const logits = f!.logits![0]!;
    s.tokenIds[0]!.forEach((tok, t) => {
      const row = logits.subarray((Lp - 1 + t) * V, (Lp + t) * V);
      let arg = 0;
      for (let j = 1; j < V; j++) if (row[j]! > row[arg]!) arg = j;
      assert.equal(tok, arg, `step ${t}`);
    });
    // the cache path (sampling) and the packed path (forward) agree on log-probs
    assert.ok(maxAbsDiff(s.logprobs[0]!, f!.logprobs[0]!) < 1e-5);
    // and the fixture's greedy continuation from transformers' generate
    const g = fixture('untied_mqa_two_images').meta.greedy_completion!;
    assert.deepEqual(Array.from(s.tokenIds[0]!.subarray(0, g.length)), g.slice(0, 7));
  } finally {
    m.dispose();
  }
});

test('sampler: maxTokens bounds every completion; finishReason is length', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    for (const maxTokens of [1, 3, 9]) {
      const s = await m.sample({ prompt: c.prompt, n: 3, temperature: 1, maxTokens, seed: 5 });
      s.tokenIds.forEach((t) => assert.equal(t.length, maxTokens));
      assert.deepEqual(s.finishReason, ['length', 'length', 'length']);
    }
  } finally {
    m.dispose();
  }
});

test('sampler: a stop id ends a completion (and is its last token); the others go on', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const free = await m.sample({ prompt: c.prompt, n: 6, temperature: 1.5, maxTokens: 10, seed: 11 });
    // choose as stop id the second token of sample 0: sample 0 must stop right there
    const stop = free.tokenIds[0]![1]!;
    const s = await m.sample({
      prompt: c.prompt,
      n: 6,
      temperature: 1.5,
      maxTokens: 10,
      seed: 11,
      stopTokenIds: [stop],
    });
    s.tokenIds.forEach((toks, g) => {
      const full = Array.from(free.tokenIds[g]!);
      const at = full.indexOf(stop);
      if (at >= 0) {
        assert.deepEqual(Array.from(toks), full.slice(0, at + 1), `sample ${g} stops at its first stop id`);
        assert.equal(s.finishReason[g], 'stop');
      } else {
        assert.deepEqual(Array.from(toks), full);
        assert.equal(s.finishReason[g], 'length');
      }
    });
    assert.equal(s.finishReason[0], 'stop');
    assert.ok(s.tokenIds[0]!.length <= 2);
  } finally {
    m.dispose();
  }
});

test('sampler: top-k 1 is greedy; returned log-probs are those of the unfiltered policy', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const greedy = await m.sample({ prompt: c.prompt, n: 1, temperature: 0, maxTokens: 5, seed: 0 });
    const k1 = await m.sample({ prompt: c.prompt, n: 1, temperature: 0.7, topK: 1, maxTokens: 5, seed: 3 });
    assert.deepEqual(k1.tokenIds, greedy.tokenIds);
    const hot = await m.sample({ prompt: c.prompt, n: 3, temperature: 2, topK: 5, topP: 0.9, maxTokens: 5, seed: 9 });
    const [f] = await m.forward([{ prompt: c.prompt, completions: hot.tokenIds }]);
    hot.logprobs.forEach((lp, g) => assert.ok(maxAbsDiff(lp, f!.logprobs[g]!) < 1e-5));
  } finally {
    m.dispose();
  }
});

test('sampler and forward: an AbortSignal stops the call with its reason; the model works on afterwards', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const ac = new AbortController();
    ac.abort(new Error('stop now'));
    await assert.rejects(
      m.sample({ prompt: c.prompt, n: 2, temperature: 1, maxTokens: 4, seed: 0, signal: ac.signal }),
      { message: 'stop now' },
    );
    await assert.rejects(m.forward([{ prompt: c.prompt, completions: c.completions }], { signal: ac.signal }), {
      message: 'stop now',
    });
    // aborted while running: a long sampling run (32 samples x 200 tokens) stops early. The abort
    // comes from the run's own progress (after 5 tokens per sample), not from a clock.
    const long = { prompt: c.prompt, n: 32, temperature: 1, maxTokens: 200, seed: 1, stopTokenIds: [] };
    const live = new AbortController();
    let tokens = 0;
    const started = m.sample({
      ...long,
      signal: live.signal,
      onToken: () => {
        if (++tokens === 32 * 5) live.abort(new Error('interrupted by the test'));
      },
    });
    await assert.rejects(started, { message: 'interrupted by the test' });
    assert.ok(tokens < (32 * 200) / 2, `the native call stopped early (${tokens} of ${32 * 200} tokens streamed)`);
    const s = await m.sample({ prompt: c.prompt, n: 1, temperature: 0, maxTokens: 3, seed: 0 });
    assert.equal(s.tokenIds[0]!.length, 3);
    await assert.rejects(
      m.sample({
        prompt: c.prompt,
        n: 1,
        temperature: 0,
        maxTokens: 3,
        seed: 0,
        signal: 'x' as unknown as AbortSignal,
      }),
      { message: 'Expected AbortSignal for request.signal but received "x" of type string' },
    );
  } finally {
    m.dispose();
  }
});
