/**
 * OpenAIPolicy refuses to train on a server that returns no token ids (issue 16): the trainer's
 * rollouts ask for them (`return_token_ids`) and a reply without them, or a server that refuses
 * the field, stops the step with a message naming the fix, instead of re-encoding the text into
 * other ids than were sampled. Evaluation (no `forTraining`) works with any server, and
 * `retokenize: true` re-encodes knowingly. `vqalab serve` returns the ids without being asked twice.
 * The servers are real HTTP on loopback: a scripted OpenAI-like one and `vqalab serve`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import { scoreVqa } from '../../src/eval/vqa-metric.js';
import { Trainer } from '../../src/grpo/trainer.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { OpenAIPolicy, TokenIdsRequiredError } from '../../src/rollout/openai.js';
import type { Policy } from '../../src/rollout/types.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { startOpenAIServer, type OpenAIServer } from '../helpers/openai-server.js';
import { makeFixture, type Fixture } from './fixtures.js';

let fx: Fixture;
let local: LocalPolicy;
let vqalab: ServeHandle;
let plain: OpenAIServer;

before(async () => {
  fx = await makeFixture();
  local = await LocalPolicy.load(undefined, { threads: 1 });
  vqalab = await serve({ policy: local, port: 0 });
  // Answers like a server that knows nothing of token ids (OpenAI's own API).
  plain = await startOpenAIServer({ defaultReply: { content: 'red' } });
});

after(async () => {
  await vqalab?.close();
  await plain?.close();
  local?.dispose();
  fx?.cleanup();
});

const sampling = { n: 2, temperature: 1, maxTokens: 4, seed: 3 };

test('a training request to a server without token ids is refused, naming the fix; evaluation still works', async () => {
  const policy = new OpenAIPolicy({ model: 'm', baseURL: plain.url });
  plain.reset();
  await assert.rejects(policy.generate(fx.samples[0]!, { ...sampling, forTraining: true }), (err: unknown) => {
    assert.ok(err instanceof TokenIdsRequiredError);
    assert.match(
      err.message,
      /^http:\/\/127\.0\.0\.1:\d+\/v1: the reply to a training request has no token ids \(choices\[0\]/,
    );
    assert.match(err.message, /pass retokenize: true to OpenAIPolicy/);
    return true;
  });
  assert.equal(plain.chatRequests()[0]!.body.return_token_ids, true, 'training asks for the ids');
  const evalOut = await policy.generate(fx.samples[0]!, { ...sampling, n: 1, temperature: 0 });
  assert.deepEqual(
    evalOut.map((c) => [c.text, c.finishReason]),
    [['red', 'stop']],
  );
  assert.equal(plain.chatRequests()[1]!.body.return_token_ids, undefined, 'evaluation does not ask');

  const knowingly = new OpenAIPolicy({ model: 'm', baseURL: plain.url, retokenize: true });
  const out = await knowingly.generate(fx.samples[0]!, { ...sampling, forTraining: true });
  assert.deepEqual(
    out.map((c) => c.text),
    ['red', 'red'],
  );
  assert.equal(out[0]!.tokenIds, undefined);
  assert.equal(plain.chatRequests()[2]!.body.return_token_ids, undefined);
});

test('a server that refuses return_token_ids is refused for training with the same advice', async () => {
  const policy = new OpenAIPolicy({ model: 'm', baseURL: plain.url });
  plain.enqueue({
    status: 400,
    error: { message: 'Unrecognized request argument supplied: return_token_ids', type: 'invalid_request_error' },
  });
  await assert.rejects(
    policy.generate(fx.samples[0]!, { ...sampling, forTraining: true }),
    /the server refused return_token_ids \(.*Unrecognized request argument supplied: return_token_ids.*\)\. Training needs the ids the server sampled/,
  );
});

function trainer(policy: Policy): Trainer {
  return new Trainer({
    model: local.model,
    tokenizer: local.tokenizer,
    train: fx.samples,
    rewards: [(s: VqaSample, c: string) => scoreVqa(c, s.answers).accuracy],
    vqaAccuracy: (p, a) => scoreVqa(p, a).accuracy,
    loadImages: async (s) => [await local.image(s.imagePath)],
    policy,
    recordFacts: false,
    config: { promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 4, learningRate: 1e-4, seed: 7 },
  });
}

test('the trainer stops on such a server; with retokenize it trains on the re-encoded text; vqalab serve gives the ids', async () => {
  // Every sample fails the same way, so the step stops (maxBadSampleFraction), each sample naming why.
  await assert.rejects(
    trainer(new OpenAIPolicy({ model: 'm', baseURL: plain.url })).step(),
    /2 of 2 samples failed[^]*sample 1c: http:\/\/127\.0\.0\.1:\d+\/v1: the reply to a training request has no token ids[^]*pass retokenize: true to OpenAIPolicy/,
  );
  const re = await trainer(new OpenAIPolicy({ model: 'm', baseURL: plain.url, retokenize: true })).step();
  for (const g of re.groups)
    for (const c of g.completions) assert.deepEqual([...c.tokenIds.slice(0, -1)], local.tokenizer.encode('red'));

  // vqalab serve: the ids come back for a training request without `tokenIds: true`, and they are
  // the ids the engine sampled (those LocalPolicy gives with the same seed).
  const remote = new OpenAIPolicy({ model: 'vqalab', baseURL: vqalab.url });
  const got = await remote.generate(fx.samples[1]!, { ...sampling, forTraining: true });
  const direct = await local.generate(fx.samples[1]!, sampling);
  assert.deepEqual(
    got.map((c) => c.tokenIds),
    direct.map((c) => c.tokenIds),
  );
  const out = await trainer(remote).step();
  assert.ok(out.groups.every((g) => g.completions.every((c) => c.finishReason !== 'error' && c.tokenIds.length > 0)));
});
