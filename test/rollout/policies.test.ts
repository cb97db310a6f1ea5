/**
 * The two policies against each other: OpenAIPolicy talking to a real `vqalab serve` on loopback
 * must give exactly what LocalPolicy gives on the same engine (texts, token ids, log-probs), with
 * images as data URLs or file URLs; failures land on their sample; the trainer rolls out through
 * either.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import type { VqaSample } from '../../src/data/types.js';
import { Trainer } from '../../src/grpo/trainer.js';
import { scoreVqa } from '../../src/eval/vqa-metric.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { OpenAIPolicy, parseOpenAISpec } from '../../src/rollout/openai.js';
import { rollout } from '../../src/rollout/runner.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { makeFixture, type Fixture } from './fixtures.js';

let fx: Fixture;
let local: LocalPolicy;
let server: ServeHandle;

before(async () => {
  fx = await makeFixture();
  local = await LocalPolicy.load(undefined, { threads: 1 });
  server = await serve({ policy: local, port: 0, allowedMediaRoot: fx.dir });
});

after(async () => {
  await server?.close();
  local?.dispose();
  fx?.cleanup();
});

const sampling = { n: 4, temperature: 1, maxTokens: 6, seed: 1234 };

test('OpenAIPolicy over vqalab serve gives exactly the LocalPolicy completions (data URLs and file URLs)', async () => {
  const sample = fx.samples[0]!;
  const direct = await local.generate(sample, sampling);
  assert.equal(direct.length, 4);
  for (const images of ['data-url', 'file-url'] as const) {
    const remote = new OpenAIPolicy({ model: 'vqalab', baseURL: server.url, images, tokenIds: true, logprobs: true });
    assert.equal(remote.name, `openai:vqalab@${server.url}`);
    const got = await remote.generate(sample, sampling);
    assert.equal(got.length, 4);
    got.forEach((c, i) => {
      const d = direct[i]!;
      assert.equal(c.finishReason, d.finishReason);
      assert.equal(c.text, d.text, `${images}: completion ${i}`);
      assert.deepEqual(c.tokenIds, d.tokenIds);
      assert.deepEqual(c.logprobs, d.logprobs);
      assert.deepEqual(c.usage, d.usage);
      assert.equal(c.attempts, 1);
      assert.ok(c.latencyMs! > 0);
    });
    assert.equal(new Set(got.map((c) => c.requestId)).size, 1, 'one request for the n completions');
    assert.equal(remote.stats().requests, 1);
    assert.equal(
      remote.stats().completionTokens,
      got.reduce((a, c) => a + c.tokenIds!.length, 0),
    );
  }
});

test('without tokenIds/logprobs the policy still reports text, usage and splits completion tokens exactly', async () => {
  const remote = new OpenAIPolicy({ model: 'vqalab', baseURL: server.url });
  const got = await remote.generate(fx.samples[1]!, sampling);
  const direct = await local.generate(fx.samples[1]!, sampling);
  assert.deepEqual(
    got.map((c) => c.text),
    direct.map((c) => c.text),
  );
  assert.equal(got[0]!.tokenIds, undefined);
  assert.equal(got[0]!.logprobs, undefined);
  assert.equal(
    got.reduce((a, c) => a + c.usage!.completionTokens, 0),
    direct.reduce((a, c) => a + c.tokenIds!.length, 0),
  );
});

test('a bad sample becomes error completions on that sample (no throw), and a rollout batch completes', async () => {
  const missing: VqaSample = { ...fx.samples[0]!, id: 'gone', imagePath: path.join(fx.dir, 'no-such.png') };
  const tooLong: VqaSample = { ...fx.samples[0]!, id: 'long', question: 'red circle '.repeat(3000) };
  const remote = new OpenAIPolicy({ model: 'vqalab', baseURL: server.url, maxRetries: 2, backoffMs: 1 });
  const m = await remote.generate(missing, { ...sampling, n: 2 });
  assert.deepEqual(
    m.map((c) => c.finishReason),
    ['error', 'error'],
  );
  assert.match(m[0]!.error!, /^sample gone: .*no-such\.png: cannot read the image \(ENOENT\)$/);
  const l = await remote.generate(tooLong, { ...sampling, n: 2 });
  assert.deepEqual(
    l.map((c) => c.finishReason),
    ['error', 'error'],
  );
  // far longer than the context: refused by its characters before tokenising (vqalab serve's --max-prompt-chars)
  assert.match(
    l[0]!.error!,
    /^sample long: HTTP 400: the messages hold [\d,]+ characters of text, more than this server's limit of [\d,]+ \(--max-prompt-chars\); no prompt that long fits the context of 1024 tokens/,
  );
  assert.equal(l[0]!.attempts, 1, 'a 400 is not retried');
  const lm = await local.generate(missing, { ...sampling, n: 2 });
  assert.equal(lm[0]!.finishReason, 'error');
  assert.match(lm[0]!.error!, /^sample gone: .*no-such\.png: image file not found$/);
  const ll = await local.generate(tooLong, { ...sampling, n: 1 });
  assert.match(ll[0]!.error!, /^sample long: this model's maximum context length is 1024 tokens/);

  const batch = [fx.samples[0]!, missing, fx.samples[2]!, tooLong, fx.samples[3]!];
  const results = await rollout(remote, batch, { ...sampling, n: 2 }, { nRunners: 3 });
  assert.deepEqual(
    results.map((r) => r.sample.id),
    batch.map((s) => s.id),
  );
  assert.deepEqual(
    results.map((r) => r.completions.every((c) => c.finishReason !== 'error')),
    [true, false, true, false, true],
  );
  assert.ok(results.every((r) => r.completions.length === 2 && r.error === undefined));
});

test('the trainer rolls out through OpenAIPolicy (on the model it trains) and through LocalPolicy', async () => {
  for (const policy of [
    new OpenAIPolicy({ model: 'vqalab', baseURL: server.url, tokenIds: true, logprobs: true }),
    local,
  ]) {
    const trainer = new Trainer({
      model: local.model,
      tokenizer: local.tokenizer,
      train: fx.samples,
      rewards: [(s: VqaSample, c: string) => scoreVqa(c, s.answers).accuracy],
      vqaAccuracy: (p, a) => scoreVqa(p, a).accuracy,
      loadImages: async (s) => [await local.image(s.imagePath)],
      policy,
      config: { promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 4, learningRate: 1e-4, seed: 7 },
    });
    const out = await trainer.step();
    assert.equal(out.groups.length, 2);
    for (const g of out.groups) {
      assert.equal(g.completions.length, 2);
      for (const c of g.completions) {
        assert.notEqual(c.finishReason, 'error', c.errors.join('; '));
        assert.ok(c.tokenIds.length >= 1 && c.tokenIds.length <= 4);
        assert.equal(c.logprobs?.length, c.tokenIds.length);
      }
    }
    assert.ok(Number.isFinite(out.metrics.rolloutSeconds));
  }
});

test('policy specs: openai:<model>@<url>', () => {
  assert.deepEqual(parseOpenAISpec('openai:gpt-4o-mini@http://127.0.0.1:8000/v1'), {
    model: 'gpt-4o-mini',
    baseURL: 'http://127.0.0.1:8000/v1',
  });
  assert.deepEqual(parseOpenAISpec('openai:Qwen/Qwen2-VL-2B-Instruct@https://h:1/v1'), {
    model: 'Qwen/Qwen2-VL-2B-Instruct',
    baseURL: 'https://h:1/v1',
  });
  assert.deepEqual(parseOpenAISpec('openai:user@org/model'.replace('@org', '')), { model: 'user/model' });
  assert.throws(() => parseOpenAISpec('openai:m@localhost:8000'), {
    message: 'Expected an http(s) base URL after @ in "openai:m@localhost:8000" (openai:<model>@http://host:port/v1)',
  });
  assert.throws(() => parseOpenAISpec('openai:@http://x/v1'), {
    message: 'Expected a model name in "openai:@http://x/v1" (openai:<model>@<base-url>)',
  });
});
