/**
 * LocalPolicy on folders a user points at (a trainer checkpoint, a run folder, a PEFT adapter),
 * `vqalab serve --model` on a trained checkpoint, and the package entry's rollout exports.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import * as vqalab from '../../src/index.js';
import { loadModel } from '../../src/engine/model.js';
import { scoreVqa } from '../../src/eval/vqa-metric.js';
import { Trainer } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { resolveModelFolder } from '../../src/engine/folder.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { makeFixture, type Fixture } from './fixtures.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
let fx: Fixture;
let work: string;

before(async () => {
  fx = await makeFixture();
  work = mkdtempSync(path.join(tmpdir(), 'vqalab-local-'));
});

after(() => {
  fx?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

const greedy = { n: 1, temperature: 0, maxTokens: 6 };

test('a trainer checkpoint and its run folder load as policies, with the trained weights', async () => {
  const policy = await LocalPolicy.load(undefined, { threads: 1 });
  const before = await policy.generate(fx.samples[0]!, { ...greedy, temperature: 1, seed: 4, n: 2 });
  const trainer = new Trainer({
    model: policy.model,
    tokenizer: policy.tokenizer,
    train: fx.samples,
    rewards: [(s, c) => scoreVqa(c, s.answers).accuracy],
    vqaAccuracy: (p, a) => scoreVqa(p, a).accuracy,
    loadImages: async (s) => [await policy.image(s.imagePath)],
    outputDir: path.join(work, 'run'),
    config: { promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 4, seed: 1 },
  });
  await trainer.sft({ steps: 3, batchSize: 4, learningRate: 1e-2 });
  const ckpt = await trainer.save();
  const after = await policy.generate(fx.samples[0]!, { ...greedy, temperature: 1, seed: 4, n: 2 });
  assert.notDeepEqual(
    after.map((c) => c.logprobs),
    before.map((c) => c.logprobs),
    'SFT changed the weights',
  );
  assert.deepEqual(resolveModelFolder(ckpt), {
    modelDir: path.join(ckpt, 'model'),
    tokenizerDir: path.join(ckpt, 'model'),
  });
  for (const dir of [ckpt, path.join(work, 'run')]) {
    const loaded = await LocalPolicy.load(dir, { threads: 1 });
    const got = await loaded.generate(fx.samples[0]!, { ...greedy, temperature: 1, seed: 4, n: 2 });
    assert.deepEqual(
      got.map((c) => c.tokenIds),
      after.map((c) => c.tokenIds),
    );
    assert.deepEqual(
      got.map((c) => c.logprobs),
      after.map((c) => c.logprobs),
    );
    loaded.dispose();
  }
  policy.dispose();

  // vqalab serve --model <run folder> answers with the trained weights.
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--model', path.join(work, 'run'), '--port', '0', '--quiet', '--threads', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${out}`)));
    });
    const res = await new OpenAI({ baseURL: url, apiKey: 'x' }).chat.completions.create({
      model: 'vqalab',
      temperature: 1,
      seed: 4,
      n: 2,
      max_tokens: 6,
      logprobs: true,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: fx.dataUrl } },
            { type: 'text', text: fx.samples[0]!.question },
          ],
        },
      ],
    });
    assert.deepEqual(
      res.choices.map((c) => c.logprobs!.content!.map((t) => t.logprob)),
      after.map((c) => c.logprobs),
    );
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});

test('a PEFT adapter folder loads as LoRA on its base; fresh adapters (B = 0) leave the base policy unchanged', async () => {
  const lora = { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], vision: false };
  const model = await loadModel(DEFAULT_MODEL_DIR, { threads: 1, lora });
  const adapter = path.join(work, 'adapter');
  await model.saveAdapter(adapter);
  model.dispose();
  const r = resolveModelFolder(adapter);
  assert.equal(path.resolve(r.modelDir), path.resolve(DEFAULT_MODEL_DIR));
  assert.deepEqual(r.lora, { ...lora });
  const withAdapter = await LocalPolicy.load(adapter, { threads: 1 });
  assert.ok(withAdapter.model.numParameters.trainable < withAdapter.model.numParameters.total);
  const base = await LocalPolicy.load(undefined, { threads: 1 });
  const a = await withAdapter.generate(fx.samples[1]!, { ...greedy, temperature: 1, seed: 9, n: 2 });
  const b = await base.generate(fx.samples[1]!, { ...greedy, temperature: 1, seed: 9, n: 2 });
  assert.deepEqual(
    a.map((c) => c.tokenIds),
    b.map((c) => c.tokenIds),
  );
  withAdapter.dispose();
  base.dispose();
  assert.throws(() => resolveModelFolder(fx.dir), {
    message: `${fx.dir}: not a model folder (no config.json), a vqalab checkpoint (trainer.json + model/, or checkpoints/latest) nor a PEFT adapter (adapter_config.json)`,
  });
});

test("the LocalPolicy prompt is the trainer's, and top log-probs come with each token", async () => {
  const policy = await LocalPolicy.load(undefined, { threads: 1 });
  const img = await policy.image(fx.samples[0]!.imagePath);
  const prompt = policy.prompt(policy.messagesFor(fx.samples[0]!), [img]);
  assert.deepEqual(
    prompt.ids,
    policy.tokenizer.buildPrompt(VlmTokenizer.vqaMessages(fx.samples[0]!.question, 1), [img]).ids,
  );
  const [c] = await policy.generate(fx.samples[0]!, { n: 1, temperature: 1, seed: 2, maxTokens: 4, topLogprobs: 3 });
  assert.equal(c!.topLogprobs!.length, c!.tokenIds!.length);
  c!.topLogprobs!.forEach((row, k) => {
    assert.equal(row.length, 3);
    assert.ok(c!.logprobs![k]! <= row[0]!.logprob + 1e-5);
  });
  policy.dispose();
});

test('the package entry exports the rollout API', () => {
  for (const name of ['LocalPolicy', 'OpenAIPolicy', 'evaluatePolicies', 'serve']) {
    assert.equal(typeof (vqalab as Record<string, unknown>)[name], 'function', name);
  }
  for (const name of ['RequestScheduler', 'rollout', 'policyFromSpec'])
    assert.equal(typeof (vqalab.rollout as Record<string, unknown>)[name], 'function', `rollout.${name}`);
  assert.equal(typeof vqalab.display.showComparison, 'function');
  assert.equal(typeof vqalab.rollout.runPool, 'function');
  assert.equal(typeof vqalab.rollout.readSamplesFile, 'function');
});
