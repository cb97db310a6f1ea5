/**
 * The trainer on the real native CPU engine and the embedded tiny Qwen2-VL (test/grpo/helpers/
 * tiny-task.ts: "What color is the circle?" over coloured images, real processor, real tokenizer).
 * Only the NaN-loss test uses the TypeScript toy engine: it needs a forward that returns NaN on
 * demand, which a correct engine never does.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/index.js';
import { Trainer, AbortError, type TrainerOptions } from '../../src/grpo/trainer.js';
import { resetInterrupt } from '../../src/util/interrupt.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { readSafetensors } from '../../src/util/safetensors.js';
import type { RewardFn } from '../../src/reward/types.js';
import { ToyEngine } from './helpers/toy-engine.js';
import { shapedReward, toyImages, toySamples, toyTokenizer } from './helpers/toy-task.js';
import { tinyExact, tinyImages, tinySamples, tinyShaped, tinyTokenizer } from './helpers/tiny-task.js';
import { tinyTrainer } from './helpers/tiny-trainer.js';

const tokenizer = tinyTokenizer();
const { fresh, own, tmp, options, warmStarted, weightsOf } = tinyTrainer({
  tmpPrefix: 'vqalab-trainer-',
  evalSize: 8,
  rewards: [tinyExact],
  seed: 3,
});

test('a step returns groups with completions, rewards, advantages, log-probs, and complete metrics', async () => {
  const model = await warmStarted();
  const t = new Trainer(
    options(model, {}, { rewards: [tinyExact, { reward: tinyShaped, weight: 0.5, name: 'shaped' }] }),
  );
  const out = await t.step();
  assert.equal(out.step, 0);
  assert.equal(t.globalStep, 1);
  assert.equal(out.groups.length, 4);
  for (const g of out.groups) {
    assert.equal(g.completions.length, 4);
    assert.match(
      g.promptText,
      /<\|vision_start\|><\|image_pad\|><\|vision_end\|>What color is the circle\?<\|im_end\|>\n<\|im_start\|>assistant\n$/,
    );
    assert.equal(g.imagePaths.length, 1);
    assert.equal(
      g.prompt.ids.filter((id) => id === tokenizer.special.imagePad).length,
      16,
      'a 112×112 image is 16 image tokens',
    );
    for (const c of g.completions) {
      assert.ok(c.tokenIds.length >= 1 && c.tokenIds.length <= 3);
      assert.equal(c.logprobs!.length, c.tokenIds.length);
      assert.ok(c.logprobs!.every((x) => x <= 0));
      assert.ok(Number.isFinite(c.advantage));
      assert.equal(c.reward, c.rewardParts.tinyExact! + 0.5 * c.rewardParts.shaped!);
      assert.equal(c.rewardParts['shaped.exact'], c.rewardParts.tinyExact);
    }
    const sum = g.completions.reduce((a, c) => a + c.advantage, 0);
    assert.ok(Math.abs(sum) < 1e-9, 'advantages of a group sum to 0');
  }
  const m = out.metrics;
  for (const key of [
    'rewardMean',
    'rewardStd',
    'accuracy',
    'entropy',
    'learningRate',
    'completionLength',
    'zeroVarianceFraction',
    'tokensPerSecond',
    'stepSeconds',
    'memoryMiB',
  ] as const) {
    assert.ok(Number.isFinite(m[key]), `${key} is ${m[key]}`);
  }
  assert.equal(m.kind, 'grpo');
  assert.equal(m.groups, 4);
  assert.ok('tinyExact' in m.rewardParts && 'tinyExact.exact' in m.rewardParts);
  assert.equal(t.metrics.history.at(-1), m);
});

test('GRPO raises the reward after a short warm start (the sampled policy gets the colours right)', async () => {
  const model = await warmStarted();
  const t = new Trainer(
    options(model, { promptsPerStep: 8, numGenerations: 8 }, { evalSets: { val: tinySamples(16, 1000) } }),
  );
  const before = await t.evaluate('val');
  await t.run({ steps: 8, handleSigint: false });
  const after = await t.evaluate('val');
  const rewards = t.metrics.history.filter((m) => m.kind === 'grpo').map((m) => m.rewardMean);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  // The warm start's greedy answers are mostly right already; its samples at temperature 1 are not.
  assert.ok(
    mean(rewards.slice(-2)) > mean(rewards.slice(0, 2)) + 0.3,
    `sampled reward by step: ${rewards.map((r) => r.toFixed(2)).join(' ')}`,
  );
  assert.ok(after.overall >= before.overall, `held-out accuracy ${before.overall} → ${after.overall}`);
  assert.deepEqual(Object.keys(after.perAnswerType), ['other']);
});

test('resume from a checkpoint equals the uninterrupted run, bit for bit (μ = 2, minibatches, dynamic sampling)', async () => {
  const dir = tmp();
  const cfg = { numIterations: 2, miniBatchPrompts: 2, dynamicSampling: true, maxSamplingRounds: 2 } as const;
  const a = new Trainer(options(await warmStarted(), cfg, { rewards: [tinyShaped] }));
  await a.run({ steps: 4, handleSigint: false });

  const run = path.join(dir, 'run');
  const b = new Trainer(options(await warmStarted(), cfg, { rewards: [tinyShaped], outputDir: run }));
  await b.run({ steps: 2, handleSigint: false, checkpointEvery: 2 });
  const { model: _unused, ...deps } = options(b.model, cfg, { rewards: [tinyShaped], outputDir: run });
  const c = await Trainer.resume(run, { ...deps, loadModel: deps.loadModel! });
  assert.equal(c.globalStep, 2);
  await c.run({ steps: 2, handleSigint: false });

  assert.ok(
    (await weightsOf(c.model)).equals(await weightsOf(a.model)),
    'weights after 2 + resume + 2 steps differ from 4 uninterrupted steps',
  );
  const strip = (m: typeof a.metrics.history) =>
    m.filter((x) => x.kind === 'grpo').map((x) => [x.step, x.rewardMean, x.loss, x.gradNorm, x.entropy, x.groups]);
  assert.deepEqual(strip(c.metrics.history), strip(a.metrics.history));
  const lines = readFileSync(path.join(run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; step: number });
  assert.deepEqual(
    lines.filter((l) => l.kind === 'grpo').map((l) => l.step),
    [0, 1, 2, 3],
  );
});

test('an abort during a rollout leaves the trainer as before the step; going on equals never stopping', async () => {
  const a = new Trainer(options(await warmStarted()));
  await a.run({ steps: 3, handleSigint: false });

  const controller = new AbortController();
  let calls = 0;
  const aborting = {
    reward: ((s, c, ctx) => {
      // Abort in the middle of step 1's rewards.
      if (ctx.step === 1 && ++calls === 3) controller.abort();
      return tinyExact(s, c, ctx);
    }) as RewardFn,
    name: 'tinyExact',
  };
  const b = new Trainer(options(await warmStarted(), {}, { rewards: [aborting] }));
  const r = await b.run({ steps: 3, signal: controller.signal, handleSigint: false });
  assert.equal(r.stoppedBy, 'abort');
  assert.equal(r.stepsRun, 1);
  assert.equal(b.globalStep, 1);
  await assert.rejects(b.step({ signal: controller.signal }), AbortError);
  assert.equal(b.globalStep, 1);
  await b.run({ steps: 2, handleSigint: false });
  assert.ok(
    (await weightsOf(b.model)).equals(await weightsOf(a.model)),
    'weights differ from the run that was never stopped',
  );
});

test('a throwing reward is counted and excluded; the trainer goes on', async () => {
  const lines: string[] = [];
  const flaky = {
    reward: ((s, c) => {
      if (s.id.endsWith('1')) throw new Error('judge unavailable');
      return c.trim() === s.answer ? 1 : 0;
    }) as RewardFn,
    name: 'flaky',
  };
  const t = new Trainer(options(await warmStarted(), {}, { rewards: [flaky], log: (l) => lines.push(l) }));
  const r = await t.run({ steps: 3, handleSigint: false });
  assert.equal(r.stepsRun, 3);
  const failures = t.metrics.history.filter((m) => m.kind === 'grpo').reduce((a, m) => a + m.rewardFailures, 0);
  assert.ok(failures > 0, 'failures are counted');
  assert.ok(
    lines.some((l) =>
      /^reward "flaky" on sample tiny-\d*1 \(group \d+, completion \d+\): threw Error: judge unavailable; completion excluded$/.test(
        l,
      ),
    ),
    lines[0],
  );
  for (const g of t.lastGroups)
    for (const c of g.completions) {
      if (g.sample.id.endsWith('1')) {
        assert.ok(Number.isNaN(c.reward));
        assert.equal(c.advantage, 0);
        assert.equal(c.errors.length, 1);
      }
    }
  // With a fallback score instead.
  const f = new Trainer(options(await warmStarted(), {}, { rewards: [flaky], onRewardError: { fallback: -1 } }));
  const out = await f.step();
  for (const g of out.groups) if (g.sample.id.endsWith('1')) for (const c of g.completions) assert.equal(c.reward, -1);
});

test('a NaN loss skips the update, leaves the weights untouched, and the next step trains (toy engine: a forward that returns NaN)', async () => {
  const toyTok = toyTokenizer();
  const model = new ToyEngine(toyTok.vocabSize, 16, 7);
  const toy = (extra: Partial<TrainerOptions>): TrainerOptions => ({
    model,
    tokenizer: toyTok,
    train: toySamples(32),
    rewards: [shapedReward],
    loadImages: toyImages,
    config: { promptsPerStep: 8, numGenerations: 8, maxCompletionLength: 4, learningRate: 0.05, seed: 3 },
    recordFacts: false,
    ...extra,
  });
  await new Trainer(toy({})).sft({ steps: 4, batchSize: 8, learningRate: 0.05 });
  const lines: string[] = [];
  const t = new Trainer(toy({ log: (l) => lines.push(l) }));
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
  const t = new Trainer(options(await warmStarted()));
  const r = await t.run({
    steps: 50,
    handleSigint: true,
    onStep: (o) => {
      if (o.step === 1) process.emit('SIGINT', 'SIGINT');
    },
  });
  assert.equal(r.stoppedBy, 'abort');
  assert.equal(r.stepsRun, 2);
  assert.equal(t.globalStep, 2);
  assert.equal(process.listenerCount('SIGINT'), 0);
  resetInterrupt(); // a script would exit here; the test goes on in a fresh interrupt scope
  const again = await t.run({ steps: 1 });
  assert.equal(again.stepsRun, 1);
});

test('dynamic sampling drops tied groups and refills; metrics still describe every sampled completion', async () => {
  const constant = { reward: (() => 0.5) as RewardFn, name: 'constant' };
  const model = await warmStarted();
  const before = await weightsOf(model);
  const t = new Trainer(options(model, { dynamicSampling: true, maxSamplingRounds: 3 }, { rewards: [constant] }));
  const out = await t.step();
  assert.equal(out.groups.length, 0);
  assert.equal(out.metrics.samplingRounds, 3);
  assert.equal(out.metrics.zeroVarianceFraction, 1);
  assert.ok(Number.isNaN(out.metrics.loss));
  assert.equal(out.metrics.rewardMean, 0.5, 'the reward of the 3 rounds × 4 groups sampled');
  assert.equal(out.metrics.rewardStd, 0);
  assert.ok(Number.isFinite(out.metrics.completionLength));
  assert.ok((await weightsOf(model)).equals(before), 'nothing to learn from: no update');
});

test('β > 0 loads a frozen reference copy; KL starts at 0 and grows', async () => {
  const dir = tmp();
  const t = new Trainer(
    options(
      await warmStarted(),
      { beta: 0.1, promptsPerStep: 8, numGenerations: 8 },
      { rewards: [tinyShaped], outputDir: dir },
    ),
  );
  const first = await t.step();
  assert.ok(Math.abs(first.metrics.kl) < 1e-6, `kl ${first.metrics.kl}`);
  await t.step();
  const third = await t.step();
  assert.ok(third.metrics.kl > 0, `kl ${third.metrics.kl}`);
  assert.ok(
    readFileSync(path.join(dir, 'reference', 'model.safetensors')).length > 0,
    'the reference copy is saved in the run folder',
  );
  const noRef = new Trainer(options(await warmStarted(), { beta: 0 }, { loadModel: undefined }));
  assert.ok(Number.isNaN((await noRef.step()).metrics.kl));
});

test('SFT lowers the answer cross-entropy; evaluate reports per answer type', async () => {
  const t = new Trainer(options(await fresh()));
  const m = await t.sft({ steps: 6, batchSize: 8, learningRate: 1e-3 });
  assert.ok(m.at(-1)!.loss < m[0]!.loss / 2, `loss ${m[0]!.loss} → ${m.at(-1)!.loss}`);
  const e = await t.evaluate('val');
  assert.equal(e.n, 8);
  assert.equal(e.rows.length, 8);
  assert.ok(e.overall >= 0 && e.overall <= 100);
  assert.deepEqual(Object.keys(e.perAnswerType), ['other']);
  await assert.rejects(t.evaluate('test'), { message: 'no evaluation split "test"; the trainer has "val"' });
  const named = await t.evaluate(tinySamples(3, 500), { name: 'extra' });
  assert.deepEqual([named.split, named.n, t.metrics.history.at(-1)!.extra!.split], ['extra', 3, 'extra']);
});

test('with LoRA, β > 0 takes reference log-probs from the base (adapters disabled) and trains only the adapters', async () => {
  const model = await loadModel(DEFAULT_MODEL_DIR, {
    threads: 2,
    lora: { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'up_proj'], vision: false },
  });
  own(model);
  assert.ok(model.numParameters.trainable < model.numParameters.total);
  const base = await weightsOf(model);
  const t = new Trainer(
    options(
      model,
      { beta: 0.2, promptsPerStep: 8, numGenerations: 8, learningRate: 5e-3 },
      { rewards: [tinyShaped], loadModel: undefined },
    ),
  );
  const first = await t.step();
  assert.ok(Math.abs(first.metrics.kl) < 1e-6, `kl ${first.metrics.kl}`);
  await t.run({ steps: 3, handleSigint: false });
  assert.ok(t.metrics.history.at(-1)!.kl > 0, `kl ${t.metrics.history.at(-1)!.kl}`);
  assert.ok((await weightsOf(model)).equals(base), 'the base stays frozen');
  const adapter = path.join(tmp(), 'adapter');
  await model.saveAdapter(adapter);
  const { tensors } = await readSafetensors(path.join(adapter, 'adapter_model.safetensors'));
  const b = [...tensors].filter(([name]) => name.includes('lora_B'));
  assert.ok(
    b.length > 0 && b.some(([, x]) => (x.data as Float32Array).some((v) => v !== 0)),
    'the adapters trained (B starts at 0)',
  );
  const full = await fresh();
  assert.throws(() => new Trainer(options(full, { beta: 0.1, reference: 'lora-base' })), {
    message:
      'reference "lora-base" needs a LoRA model (the base with adapters disabled); load the model with LoRA or set reference: "copy"',
  });
});

test('rollouts from another Policy (text only) are tokenized for training, the stop token appended', async () => {
  const model = await warmStarted(4);
  const before = await weightsOf(model);
  // A policy that returns text only, as an OpenAI-compatible server without token ids would.
  const textPolicy = {
    name: 'text-only',
    async generate(
      sample: Parameters<RewardFn>[0],
      o: { n: number; temperature: number; maxTokens: number; seed?: number },
    ) {
      const prompt = tokenizer.buildPrompt(
        [{ role: 'user', content: [{ type: 'image' as const }, { type: 'text' as const, text: sample.question }] }],
        await tinyImages(sample),
      );
      const r = await model.sample({
        prompt,
        n: o.n,
        temperature: o.temperature,
        maxTokens: o.maxTokens,
        stopTokenIds: tokenizer.stopTokenIds,
        seed: o.seed ?? 0,
      });
      return r.tokenIds.map((ids, i) => ({
        text: tokenizer.decodeCompletion(ids).text,
        finishReason: r.finishReason[i]!,
      }));
    },
  };
  const t = new Trainer(options(model, {}, { policy: textPolicy, rewards: [tinyShaped] }));
  const out = await t.step();
  let stopped = 0;
  for (const g of out.groups)
    for (const c of g.completions) {
      if (c.finishReason === 'stop') {
        stopped++;
        assert.equal(c.tokenIds.at(-1), tokenizer.special.imEnd);
      }
      assert.equal(c.logprobs, undefined);
    }
  assert.ok(stopped > 0);
  assert.equal(out.metrics.skippedUpdates, 0);
  assert.ok(!(await weightsOf(model)).equals(before), 'the policy trained on the re-tokenized completions');
});
