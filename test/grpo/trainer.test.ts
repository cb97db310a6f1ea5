import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Trainer, AbortError, type TrainerOptions } from '../../src/grpo/trainer.js';
import { resetInterrupt } from '../../src/util/interrupt.js';
import type { GrpoConfig } from '../../src/grpo/config.js';
import { ToyEngine } from './helpers/toy-engine.js';
import { exactMatch, shapedReward, toyImages, toySamples, toyTokenizer } from './helpers/toy-task.js';

const tokenizer = toyTokenizer();

function options(model: ToyEngine, config: Partial<GrpoConfig> = {}, extra: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    model, tokenizer, train: toySamples(32), evalSets: { val: toySamples(8, 1000) }, rewards: [exactMatch],
    loadImages: toyImages, loadModel: (dir) => ToyEngine.load(dir),
    config: { promptsPerStep: 4, numGenerations: 4, maxCompletionLength: 4, learningRate: 0.05, seed: 3, ...config },
    ...extra,
  };
}

function tmp(): string {
  return mkdtempSync(path.join(tmpdir(), 'vqalab-trainer-'));
}

/** A toy model after a short SFT warm start (10 steps: about half right; fewer: weaker). */
async function warmStarted(seed = 1, steps = 10): Promise<ToyEngine> {
  const model = new ToyEngine(tokenizer.vocabSize, 16, seed);
  await new Trainer(options(model)).sft({ steps, batchSize: 8, learningRate: 0.05 });
  return model;
}

test('a step returns groups with completions, rewards, advantages, log-probs, and complete metrics', async () => {
  const model = await warmStarted(1, 4);
  const t = new Trainer(options(model, {}, { rewards: [exactMatch, { reward: shapedReward, weight: 0.5, name: 'shaped' }] }));
  const out = await t.step();
  assert.equal(out.step, 0);
  assert.equal(t.globalStep, 1);
  assert.equal(out.groups.length, 4);
  for (const g of out.groups) {
    assert.equal(g.completions.length, 4);
    assert.match(g.promptText, /<\|vision_start\|><\|image_pad\|><\|vision_end\|>What color is the circle\?<\|im_end\|>\n<\|im_start\|>assistant\n$/);
    assert.equal(g.imagePaths.length, 1);
    for (const c of g.completions) {
      assert.ok(c.tokenIds.length >= 1 && c.tokenIds.length <= 4);
      assert.equal(c.logprobs!.length, c.tokenIds.length);
      assert.ok(Number.isFinite(c.advantage));
      assert.equal(c.reward, c.rewardParts.exactMatch! + 0.5 * c.rewardParts.shaped!);
      assert.equal(c.rewardParts['shaped.exact'], c.rewardParts.exactMatch);
    }
    const sum = g.completions.reduce((a, c) => a + c.advantage, 0);
    assert.ok(Math.abs(sum) < 1e-9, 'advantages of a group sum to 0');
  }
  const m = out.metrics;
  for (const key of ['rewardMean', 'rewardStd', 'accuracy', 'entropy', 'learningRate', 'completionLength', 'zeroVarianceFraction', 'tokensPerSecond', 'stepSeconds', 'memoryMiB'] as const) {
    assert.ok(Number.isFinite(m[key]), `${key} is ${m[key]}`);
  }
  assert.equal(m.kind, 'grpo');
  assert.equal(m.groups, 4);
  assert.ok('exactMatch' in m.rewardParts && 'exactMatch.exact' in m.rewardParts);
  assert.equal(t.metrics.history.at(-1), m);
});

test('GRPO raises the reward after a short warm start (toy task)', async () => {
  const model = await warmStarted(2);
  const t = new Trainer(options(model, { promptsPerStep: 8, numGenerations: 8 }));
  const before = await t.evaluate('val');
  await t.run({ steps: 12, handleSigint: false });
  const after = await t.evaluate('val');
  assert.ok(after.overall > before.overall + 10, `accuracy ${before.overall} → ${after.overall}`);
  assert.deepEqual(Object.keys(after.perAnswerType), ['other']);
});

test('a few steps change every trainable tensor', async () => {
  const model = await warmStarted(3);
  const before = Object.fromEntries(Object.entries(model.params).map(([k, v]) => [k, Float32Array.from(v)]));
  const t = new Trainer(options(model, { promptsPerStep: 8, numGenerations: 8 }));
  await t.run({ steps: 3, handleSigint: false });
  for (const [name, old] of Object.entries(before)) {
    if (old.length === 0) continue; // no adapters on this model
    const now = model.params[name as keyof typeof model.params];
    assert.ok(now.some((v, i) => v !== old[i]), `Parameter ${name} has not changed.`);
  }
});

test('resume from a checkpoint equals the uninterrupted run, bit for bit', async () => {
  const dir = tmp();
  try {
    const cfg = { numIterations: 2, miniBatchPrompts: 2, dynamicSampling: true, maxSamplingRounds: 2 } as const;
    const a = new Trainer(options(await warmStarted(4), cfg));
    await a.run({ steps: 4, handleSigint: false });

    const b = new Trainer(options(await warmStarted(4), cfg, { outputDir: path.join(dir, 'run') }));
    await b.run({ steps: 2, handleSigint: false, checkpointEvery: 2 });
    const c = await Trainer.resume(path.join(dir, 'run'), { ...options(new ToyEngine(1, 1, 0)), loadModel: (d) => ToyEngine.load(d), outputDir: path.join(dir, 'run') });
    assert.equal(c.globalStep, 2);
    await c.run({ steps: 2, handleSigint: false });

    const wa = (a.model as unknown as ToyEngine).params, wc = (c.model as unknown as ToyEngine).params;
    for (const k of Object.keys(wa) as (keyof typeof wa)[]) assert.deepEqual(wc[k], wa[k], `tensor ${k} differs after resume`);
    const strip = (m: typeof a.metrics.history) => m.filter((x) => x.kind === 'grpo').map((x) => [x.step, x.rewardMean, x.loss, x.gradNorm, x.entropy, x.groups]);
    assert.deepEqual(strip(c.metrics.history), strip(a.metrics.history));
    const lines = readFileSync(path.join(dir, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; step: number });
    assert.deepEqual(lines.filter((l) => l.kind === 'grpo').map((l) => l.step), [0, 1, 2, 3]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an abort during a rollout leaves the trainer as before the step; going on equals never stopping', async () => {
  const a = new Trainer(options(await warmStarted(5)));
  await a.run({ steps: 3, handleSigint: false });

  const controller = new AbortController();
  let calls = 0;
  const aborting = { reward: (s: Parameters<typeof exactMatch>[0], c: string, ctx: Parameters<typeof exactMatch>[2]) => {
    // Abort in the middle of step 1's rewards.
    if (ctx.step === 1 && ++calls === 3) controller.abort();
    return exactMatch(s, c, ctx);
  }, name: 'exactMatch' };
  const b = new Trainer(options(await warmStarted(5), {}, { rewards: [aborting] }));
  const r = await b.run({ steps: 3, signal: controller.signal, handleSigint: false });
  assert.equal(r.stoppedBy, 'abort');
  assert.equal(r.stepsRun, 1);
  assert.equal(b.globalStep, 1);
  await assert.rejects(b.step({ signal: controller.signal }), AbortError);
  assert.equal(b.globalStep, 1);
  await b.run({ steps: 2, handleSigint: false });
  const wa = (a.model as unknown as ToyEngine).params, wb = (b.model as unknown as ToyEngine).params;
  for (const k of Object.keys(wa) as (keyof typeof wa)[]) assert.deepEqual(wb[k], wa[k], `tensor ${k} differs`);
});

test('a throwing reward is counted and excluded; the trainer goes on', async () => {
  const lines: string[] = [];
  const flaky = { reward: (s: Parameters<typeof exactMatch>[0], c: string) => {
    if (s.id.endsWith('1')) throw new Error('judge unavailable');
    return c.trim() === s.answer ? 1 : 0;
  }, name: 'flaky' };
  const t = new Trainer(options(await warmStarted(6), {}, { rewards: [flaky], log: (l) => lines.push(l) }));
  const r = await t.run({ steps: 3, handleSigint: false });
  assert.equal(r.stepsRun, 3);
  const failures = t.metrics.history.filter((m) => m.kind === 'grpo').reduce((a, m) => a + m.rewardFailures, 0);
  assert.ok(failures > 0, 'failures are counted');
  assert.ok(lines.some((l) => /^reward "flaky" on sample toy-\d*1 \(group \d+, completion \d+\): threw Error: judge unavailable; completion excluded$/.test(l)), lines[0]);
  for (const g of t.lastGroups) for (const c of g.completions) {
    if (g.sample.id.endsWith('1')) { assert.ok(Number.isNaN(c.reward)); assert.equal(c.advantage, 0); assert.equal(c.errors.length, 1); }
  }
  // With a fallback score instead.
  const f = new Trainer(options(await warmStarted(6), {}, { rewards: [flaky], onRewardError: { fallback: -1 } }));
  const out = await f.step();
  for (const g of out.groups) if (g.sample.id.endsWith('1')) for (const c of g.completions) assert.equal(c.reward, -1);
});

test('a NaN loss skips the update, leaves the weights untouched, and the next step trains', async () => {
  const model = await warmStarted(7, 4);
  const lines: string[] = [];
  const t = new Trainer(options(model, { promptsPerStep: 8, numGenerations: 8 }, { rewards: [shapedReward], log: (l) => lines.push(l) }));
  const before = Float32Array.from(model.params.out);
  model.poisonNextForward = true;
  const out = await t.step();
  assert.equal(out.metrics.skippedUpdates, 1);
  assert.deepEqual(model.params.out, before);
  assert.ok(lines.some((l) => l.includes('the loss is NaN; update skipped')));
  const next = await t.step();
  assert.equal(next.metrics.skippedUpdates, 0);
  assert.notDeepEqual(model.params.out, before);
});

test('SIGINT (the process-wide interrupt) stops run() at the next step boundary', async () => {
  const t = new Trainer(options(await warmStarted(8)));
  const r = await t.run({ steps: 50, handleSigint: true, onStep: (o) => { if (o.step === 1) process.emit('SIGINT', 'SIGINT'); } });
  assert.equal(r.stoppedBy, 'abort');
  assert.equal(r.stepsRun, 2);
  assert.equal(t.globalStep, 2);
  assert.equal(process.listenerCount('SIGINT'), 0);
  resetInterrupt(); // a script would exit here; the test goes on in a fresh interrupt scope
  const again = await t.run({ steps: 1 });
  assert.equal(again.stepsRun, 1);
});

test('dynamic sampling drops tied groups and refills', async () => {
  const constant = { reward: () => 0.5, name: 'constant' };
  const t = new Trainer(options(await warmStarted(9), { dynamicSampling: true, maxSamplingRounds: 3 }, { rewards: [constant] }));
  const out = await t.step();
  assert.equal(out.groups.length, 0);
  assert.equal(out.metrics.samplingRounds, 3);
  assert.equal(out.metrics.zeroVarianceFraction, 1);
  assert.ok(Number.isNaN(out.metrics.loss));
});

test('β > 0 loads a frozen reference copy; KL starts at 0 and grows', async () => {
  const dir = tmp();
  try {
    const t = new Trainer(options(await warmStarted(10), { beta: 0.1, promptsPerStep: 8, numGenerations: 8 }, { outputDir: dir }));
    const first = await t.step();
    assert.ok(Math.abs(first.metrics.kl) < 1e-6, `kl ${first.metrics.kl}`);
    await t.step();
    const third = await t.step();
    assert.ok(third.metrics.kl > 0, `kl ${third.metrics.kl}`);
    const noRef = new Trainer(options(await warmStarted(10), { beta: 0 }, { loadModel: undefined }));
    assert.ok(Number.isNaN((await noRef.step()).metrics.kl));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SFT lowers the answer cross-entropy; evaluate reports per answer type', async () => {
  const model = new ToyEngine(tokenizer.vocabSize, 16, 11);
  const t = new Trainer(options(model));
  const m = await t.sft({ steps: 8, batchSize: 8, learningRate: 0.05 });
  assert.ok(m.at(-1)!.loss < m[0]!.loss / 2, `loss ${m[0]!.loss} → ${m.at(-1)!.loss}`);
  const e = await t.evaluate('val');
  assert.equal(e.n, 8);
  assert.equal(e.rows.length, 8);
  assert.ok(e.overall >= 0 && e.overall <= 100);
  await assert.rejects(t.evaluate('test'), { message: 'no evaluation split "test"; the trainer has "val"' });
});

test('with LoRA, β > 0 takes reference log-probs from the base (adapters disabled) and trains only the adapters', async () => {
  const model = ToyEngine.withLora(await warmStarted(12, 6));
  const base = Float32Array.from(model.params.out);
  const t = new Trainer(options(model, { beta: 0.2, promptsPerStep: 8, numGenerations: 8, learningRate: 0.1 }, { rewards: [shapedReward], loadModel: undefined }));
  const first = await t.step();
  assert.ok(Math.abs(first.metrics.kl) < 1e-6, `kl ${first.metrics.kl}`);
  await t.run({ steps: 3, handleSigint: false });
  assert.ok(t.metrics.history.at(-1)!.kl > 0);
  assert.deepEqual(model.params.out, base, 'the base stays frozen');
  assert.ok(model.params.lora.some((x) => x !== 0), 'the adapters trained');
  assert.throws(() => new Trainer(options(new ToyEngine(tokenizer.vocabSize, 4, 1), { beta: 0.1, reference: 'lora-base' })),
    { message: 'reference "lora-base" needs a LoRA model (the base with adapters disabled); load the model with LoRA or set reference: "copy"' });
});

test('rollouts from another Policy (text only) are tokenized for training, the stop token appended', async () => {
  const model = await warmStarted(13, 6);
  // A policy that returns text only, as an OpenAI-compatible server without token ids would.
  const textPolicy = {
    name: 'text-only',
    async generate(sample: Parameters<typeof exactMatch>[0], o: { n: number; temperature: number; maxTokens: number; seed?: number }) {
      const { prompt } = { prompt: tokenizer.buildPrompt(
        [{ role: 'user', content: [{ type: 'image' as const }, { type: 'text' as const, text: sample.question }] }], await toyImages(sample)) };
      const r = await model.sample({ prompt, n: o.n, temperature: o.temperature, maxTokens: o.maxTokens, stopTokenIds: tokenizer.stopTokenIds, seed: o.seed ?? 0 });
      return r.tokenIds.map((ids, i) => ({ text: tokenizer.decodeCompletion(ids).text, finishReason: r.finishReason[i]! }));
    },
  };
  const t = new Trainer(options(model, {}, { policy: textPolicy, rewards: [shapedReward] }));
  const out = await t.step();
  let stopped = 0;
  for (const g of out.groups) for (const c of g.completions) {
    if (c.finishReason === 'stop') { stopped++; assert.equal(c.tokenIds.at(-1), tokenizer.special.imEnd); }
    assert.equal(c.logprobs, undefined);
  }
  assert.ok(stopped > 0);
  assert.ok(model.calls.backward > 0);
});
