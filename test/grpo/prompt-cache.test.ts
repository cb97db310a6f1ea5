/**
 * PromptBuilder's prompt cache: a sample's prompt is built once (template and tokenizer) while its images
 * stay cached, `prefetch` builds the next step's prompts ahead, an evicted sample or a changed question is
 * built anew. Real tokenizer (the embedded model's) and the real image processor.
 */
import assert from 'node:assert/strict';
import test from 'node:test';
import type { VqaSample } from '../../src/data/types.js';
import type { ImageInput } from '../../src/engine/types.js';
import { PromptBuilder } from '../../src/grpo/rollout.js';
import { tinyImages, tinySamples, tinyTokenizer } from './helpers/tiny-task.js';

/** A builder over the tiny task whose tokenizer and image loads are counted. */
function counted(cacheSize?: number) {
  const tok = tinyTokenizer();
  const counts = { builds: 0, loads: 0 };
  const tokenizer = Object.create(tok) as typeof tok;
  tokenizer.buildPrompt = (...args: Parameters<typeof tok.buildPrompt>) => {
    counts.builds++;
    return tok.buildPrompt(...args);
  };
  const loadImages = (s: VqaSample): Promise<ImageInput[]> => {
    counts.loads++;
    return tinyImages(s);
  };
  return { builder: new PromptBuilder({ tokenizer, loadImages, ...(cacheSize ? { cacheSize } : {}) }), counts };
}

test('promptFor builds a sample prompt once and returns the same one after', async () => {
  const { builder, counts } = counted();
  const [s] = tinySamples(1);
  const a = await builder.promptFor(s!);
  const b = await builder.promptFor(s!);
  assert.equal(b, a);
  assert.deepEqual(counts, { builds: 1, loads: 1 });
  assert.match(a.text, /What color is the circle\?/);
});

test('prefetch builds the prompts ahead: the step that asks for them builds nothing', async () => {
  const { builder, counts } = counted();
  const samples = tinySamples(4);
  builder.prefetch(samples);
  // the prefetch's work is in flight; asking for the same samples waits on it rather than loading again
  const got = await Promise.all(samples.map((s) => builder.promptFor(s)));
  assert.equal(counts.loads, 4);
  const builds = counts.builds;
  const again = await Promise.all(samples.map((s) => builder.promptFor(s)));
  assert.equal(counts.builds, builds, 'no build once prefetched');
  again.forEach((p, i) => assert.equal(p, got[i]));
  assert.ok(builds <= 8, `at most one build per sample per caller, got ${builds}`);
});

test('an evicted sample and a changed question are built anew', async () => {
  const { builder, counts } = counted(1);
  const [s0, s1] = tinySamples(2);
  const first = await builder.promptFor(s0!);
  await builder.promptFor(s1!); // evicts s0 (cache of 1)
  const rebuilt = await builder.promptFor(s0!);
  assert.notEqual(rebuilt, first);
  assert.deepEqual(rebuilt.prompt.ids, first.prompt.ids);
  assert.equal(counts.loads, 3);
  const edited = { ...s0!, question: 'What color is the square?' };
  const other = await builder.promptFor(edited);
  assert.notEqual(other, rebuilt);
  assert.match(other.text, /square/);
  assert.notDeepEqual(other.prompt.ids, rebuilt.prompt.ids);
});
