/**
 * The trainer on the batched engine path (issue 13) and its hardening (issue 20), on the native
 * CPU engine and the embedded tiny Qwen2-VL:
 * - a batched step (every prompt of a round in one engine run) gives exactly the groups, rewards,
 *   advantages, metrics and weights of a sequential step (one prompt at a time) with the same seeds;
 * - a checkpoint before the first optimizer update (checkpointEvery on an untrained model) saves,
 *   and the resumed run continues bit-exactly;
 * - temporary folders of a killed save are removed by the next save and by resume;
 * - bad rows (an unreadable image, a prompt too long) are skipped by sample id, the step trains
 *   on the others, and maxBadSampleFraction stops a step with too many.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/index.js';
import type { EngineModel } from '../../src/engine/types.js';
import { Trainer, type StepOutput, type TrainerOptions } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import type { RewardFn } from '../../src/reward/types.js';
import type { VqaSample } from '../../src/data/types.js';
import { tinyExact, tinyImages, tinySamples, tinyShaped } from './helpers/tiny-task.js';
import { tinyTrainer } from './helpers/tiny-trainer.js';

const { fresh, own, tmp, options, warmStarted, weightsOf } = tinyTrainer({
  tmpPrefix: 'vqalab-batched-',
  evalSize: 12,
  rewards: [tinyShaped],
  seed: 5,
  extra: { recordFacts: false },
});

/** What a step produced, without wall-clock numbers. */
function content(out: StepOutput): unknown {
  const {
    time,
    stepSeconds,
    rolloutSeconds,
    rewardSeconds,
    trainSeconds,
    tokensPerSecond,
    trainTokensPerSecond,
    memoryMiB,
    gpuPeakMiB,
    ...m
  } = out.metrics;
  void [
    time,
    stepSeconds,
    rolloutSeconds,
    rewardSeconds,
    trainSeconds,
    tokensPerSecond,
    trainTokensPerSecond,
    memoryMiB,
    gpuPeakMiB,
  ];
  return {
    step: out.step,
    metrics: m,
    skipped: out.skipped,
    groups: out.groups.map((g) => ({
      id: g.sample.id,
      prompt: Array.from(g.promptIds),
      zeroVariance: g.zeroVariance,
      completions: g.completions.map((c) => ({
        text: c.text,
        ids: Array.from(c.tokenIds),
        finish: c.finishReason,
        reward: c.reward,
        parts: c.rewardParts,
        advantage: c.advantage,
        logprobs: Array.from(c.logprobs ?? []),
        errors: c.errors,
      })),
    })),
  };
}

test('a batched step equals the sequential step: same groups, rewards, advantages, metrics and weights; one engine run per round', async () => {
  const a = await warmStarted();
  const b = await warmStarted();
  assert.ok((await weightsOf(a)).equals(await weightsOf(b)), 'the same start');
  const batched = new Trainer(options(a, { dynamicSampling: true, maxSamplingRounds: 2 }));
  const sequential = new Trainer(
    options(b, { dynamicSampling: true, maxSamplingRounds: 2 }, { rolloutMode: 'sequential' }),
  );
  const stats = (m: EngineModel) => m.sampleStats!();
  for (let s = 0; s < 3; s++) {
    const runsA = stats(a).runs,
      runsB = stats(b).runs;
    const x = await batched.step();
    const y = await sequential.step();
    assert.deepEqual(content(x), content(y), `step ${s}`);
    assert.ok(x.groups.length > 0 && x.groups[0]!.completions[0]!.logprobs!.length > 0);
    // Batched: one native sampling run per rollout round; sequential: one per prompt.
    assert.equal(stats(a).runs - runsA, x.metrics.samplingRounds, `step ${s}: runs of the batched step`);
    assert.ok(stats(b).runs - runsB >= 4, `step ${s}: runs of the sequential step`);
  }
  assert.ok((await weightsOf(a)).equals(await weightsOf(b)), 'the same weights after three steps');
  // Step metrics carry the time split and throughput.
  const m = batched.metrics.last!;
  for (const k of [
    'rolloutSeconds',
    'rewardSeconds',
    'trainSeconds',
    'tokensPerSecond',
    'trainTokensPerSecond',
  ] as const)
    assert.ok(Number.isFinite(m[k]) && m[k]! >= 0, `${k} ${m[k]}`);
  assert.ok(Number.isNaN(m.gpuPeakMiB), 'no GPU peak on the CPU engine');

  // evaluate(): many questions at once, the same answers as one at a time.
  const many = await batched.evaluate('val');
  const one = await new Trainer(options(a, {}, { evalBatchSize: 1 })).evaluate('val');
  assert.deepEqual(
    many.rows.map((r) => r.prediction),
    one.rows.map((r) => r.prediction),
  );
  assert.equal(many.overall, one.overall);
});

test('evaluate(): a chunk that runs out of GPU memory is asked again in halves, and later chunks take the smaller size', async () => {
  const model = await fresh();
  // The card's limit, played by a wrapper (no GPU here): a sample call made while 5 others are running
  // fails as the CUDA backend's allocator fails. All 12 questions form one chunk, so the pieces it is
  // split into run one after another and what fails is known: 7 of 12, then 1 of 6, then none.
  const limit = 5;
  let inFlight = 0,
    peak = 0,
    refused = 0;
  const tight = new Proxy(model, {
    get(target, key) {
      if (key === 'sample')
        return async (req: Parameters<EngineModel['sample']>[0]) => {
          inFlight++;
          try {
            if (inFlight > limit) {
              refused++;
              throw new Error('out of GPU memory: sampling needs 512 MiB (free 0 of 81079 MiB on cuda:0)');
            }
            peak = Math.max(peak, inFlight);
            return await target.sample(req);
          } finally {
            inFlight--;
          }
        };
      const v = Reflect.get(target, key, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const logs: string[] = [];
  const got = await new Trainer(options(tight, {}, { evalBatchSize: 12, log: (l) => logs.push(l) })).evaluate('val');
  const want = await new Trainer(options(model, {}, { evalBatchSize: 1 })).evaluate('val');
  assert.deepEqual(
    got.rows.map((r) => [r.prediction, 'error' in r]),
    want.rows.map((r) => [r.prediction, false]),
    'every question answered, as one at a time',
  );
  assert.equal(got.overall, want.overall);
  assert.deepEqual([refused, peak], [8, limit]);
  assert.deepEqual(logs, [
    'evaluate: out of GPU memory answering 12 questions at once; going on in chunks of 6 (evalBatchSize 12)',
    'evaluate: out of GPU memory answering 6 questions at once; going on in chunks of 3 (evalBatchSize 12)',
  ]);
});

test("the next step's images load during this step's update, once: the next rollout finds them cached", async () => {
  const model = await fresh();
  const loads: { id: string; at: string }[] = [];
  let phase = 'before';
  const trainer = new Trainer(
    options(
      model,
      { promptsPerStep: 4 },
      {
        loadImages: (s: VqaSample) => {
          loads.push({ id: s.id, at: phase });
          return tinyImages(s);
        },
        // a small cache: only what a step needs
        imageCacheSize: 16,
      },
    ),
  );
  phase = 'step 0';
  await trainer.step();
  phase = 'step 1';
  const out = await trainer.step();
  const step1 = [...out.groups.map((g) => g.sample.id), ...out.skipped.map((x) => x.sampleId)];
  assert.equal(step1.length, 4);
  // Step 1's samples were asked for during step 0 (after its rollout), each once.
  for (const id of step1) {
    const mine = loads.filter((l) => l.id === id);
    assert.equal(mine.length, 1, `${id}: loaded ${mine.length} times`);
    assert.equal(mine[0]!.at, 'step 0', `${id}: loaded during step 0`);
  }
});

test('checkpointEvery before any optimizer update saves (empty optimizer state), and the resumed run continues bit-exactly', async () => {
  // Step 0's rewards all tie (an untrained model's first steps often do): no update happens.
  const lateReward: RewardFn = (s, c, ctx) => (ctx.step === 0 ? 0 : (tinyShaped(s, c, ctx) as { score: number }).score);
  const dir = tmp();
  const model = await warmStartedFresh();
  const t = new Trainer(options(model, {}, { rewards: [lateReward], outputDir: dir }));
  const steps = model.stepCount;
  const r = await t.run({ steps: 1, checkpointEvery: 1, handleSigint: false });
  assert.equal(model.stepCount, steps, 'no optimizer update in step 0');
  assert.equal(r.checkpoints.length, 1);
  assert.ok(existsSync(path.join(r.checkpoints[0]!, 'model', 'optimizer.safetensors')));
  await t.run({ steps: 1, handleSigint: false });
  const resumed = await Trainer.resume(r.checkpoints[0]!, {
    ...options(model, {}, { rewards: [lateReward] }),
    loadModel: options(model).loadModel!,
  });
  assert.equal(resumed.globalStep, 1);
  await resumed.step();
  assert.ok(
    (await weightsOf(resumed.model)).equals(await weightsOf(model)),
    'resumed from before the first update, the same weights',
  );
});

/** A fresh model with no optimizer state at all (no SFT). */
async function warmStartedFresh(): Promise<EngineModel> {
  const model = await fresh();
  assert.equal(model.stepCount, 0);
  return model;
}

/** A pid that no longer runs (a process that ran and exited). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('temporary folders of a killed save are removed by the next save and by resume; live ones are kept', async () => {
  const dir = tmp();
  const ckpts = path.join(dir, 'checkpoints');
  const plant = (name: string) => {
    mkdirSync(path.join(ckpts, name, 'model'), { recursive: true });
    writeFileSync(path.join(ckpts, name, 'model', 'model.safetensors'), 'partial');
  };
  const dead = deadPid();
  plant(`.checkpoint-000001.tmp-${dead}-0a1b2c3d`);
  plant(`.checkpoint-000001.tmp-${process.pid}-0a1b2c3d`); // this process's: a save in progress
  const t = new Trainer(options(await warmStarted(), {}, { outputDir: dir }));
  await t.save();
  assert.deepEqual(
    readdirSync(ckpts).filter((n) => n.includes('.tmp-')),
    [`.checkpoint-000001.tmp-${process.pid}-0a1b2c3d`],
  );
  plant(`.checkpoint-000000.tmp-${dead}-ffff0000`);
  const r = await Trainer.resume(dir, { ...options(t.model), loadModel: options(t.model).loadModel! });
  assert.equal(r.globalStep, 0);
  assert.deepEqual(
    readdirSync(ckpts).filter((n) => n.includes('.tmp-')),
    [`.checkpoint-000001.tmp-${process.pid}-0a1b2c3d`],
  );
});

test('bad rows are skipped by sample id; the step trains on the others; too many stop the step with a clear error', async () => {
  // A context of 96 tokens: the tiny prompts (~40 tokens with 16 image pads) fit, a long question does not.
  const model = await loadModel(DEFAULT_MODEL_DIR, { threads: 2, maxSequenceLength: 96 });
  own(model);
  const good = tinySamples(6);
  const broken: VqaSample = { ...good[1]!, id: 'broken-1' };
  const long: VqaSample = { ...good[2]!, id: 'long-2', question: 'What color is the circle? '.repeat(40) };
  const train = [good[0]!, broken, long, good[3]!];
  const loadImages = async (s: VqaSample) => {
    if (s.id.startsWith('broken-')) throw new Error('not a PNG file');
    return tinyImages(s);
  };
  const lines: string[] = [];
  const t = new Trainer(
    options(
      model,
      { maxBadSampleFraction: 0.5, learningRate: 1e-2 },
      { train, loadImages, rewards: [tinyShaped], log: (l) => lines.push(l) },
    ),
  );
  const before = await weightsOf(model);
  const out = await t.step();
  assert.deepEqual(out.skipped.map((s) => [s.sampleId, s.kind]).sort(), [
    ['broken-1', 'image'],
    ['long-2', 'length'],
  ]);
  assert.match(
    out.skipped.find((s) => s.kind === 'length')!.message,
    /^sample long-2: its prompt has \d+ tokens \(images included\) and maxCompletionLength is 3; the model takes at most 96 tokens/,
  );
  assert.match(
    out.skipped.find((s) => s.kind === 'image')!.message,
    /^sample broken-1: cannot load its image .*not a PNG file$/,
  );
  assert.equal(out.metrics.badSamples, 2);
  assert.deepEqual((out.metrics.extra!.skipped as { id: string }[]).map((s) => s.id).sort(), ['broken-1', 'long-2']);
  assert.deepEqual(out.groups.map((g) => g.sample.id).sort(), [good[0]!.id, good[3]!.id]);
  assert.ok(!(await weightsOf(model)).equals(before), 'the step trained on the good samples');
  assert.ok(
    lines.some((l) => l.startsWith('step 0: skipped sample long-2')),
    lines.join('\n'),
  );

  // Three of four bad: more than half → the step stops, naming each; the trainer is as before it.
  const worse = [broken, long, { ...broken, id: 'broken-3' }, good[0]!];
  const u = new Trainer(options(model, { maxBadSampleFraction: 0.5 }, { train: worse, loadImages }));
  await assert.rejects(u.step(), (err: Error) => {
    assert.equal(err.name, 'BadSamplesError');
    assert.match(err.message, /^step 0: 3 of 4 samples failed, more than maxBadSampleFraction \(0\.5\) allows/);
    for (const id of ['broken-1', 'long-2', 'broken-3']) assert.ok(err.message.includes(`sample ${id}:`), id);
    return true;
  });
  assert.equal(u.globalStep, 0);
  // maxBadSampleFraction 1: never stops.
  const v = new Trainer(options(model, { maxBadSampleFraction: 1 }, { train: worse, loadImages }));
  assert.equal((await v.step()).skipped.length, 3);

  // SFT skips them too, by id; evaluate scores them 0 and names them.
  const sft = await new Trainer(options(model, {}, { train, loadImages })).sft({
    steps: 1,
    batchSize: 4,
    learningRate: 1e-4,
  });
  assert.equal(sft[0]!.badSamples, 2);
  assert.equal(sft[0]!.groups, 2);
  const e = await new Trainer(options(model, {}, { train, loadImages, evalSets: { val: train } })).evaluate('val');
  assert.equal(e.n, 4);
  assert.deepEqual(
    e.rows
      .filter((r) => (r as { error?: string }).error)
      .map((r) => r.id)
      .sort(),
    ['broken-1', 'long-2'],
  );
});

test('run() events: subscribers see every step, evaluation and checkpoint; control.shouldStop ends the run at a step boundary', async () => {
  const dir = tmp();
  const seen: string[] = [];
  const t = new Trainer(
    options(
      await warmStarted(),
      {},
      {
        outputDir: dir,
        callbacks: [
          {
            onRunBegin: (_t, run) => {
              seen.push(`begin ${run.firstStep}+${run.steps}`);
            },
            onStepEnd: (_t, out, control) => {
              seen.push(`step ${out.step}`);
              if (out.step === 2) control.shouldStop = true;
            },
            onEvaluate: (_t, s, info) => {
              seen.push(`eval ${s.split} ${info.at}`);
            },
            onSave: (_t, d, info) => {
              seen.push(`save ${path.basename(d)} ${info.step}`);
            },
            onRunEnd: (_t, r) => {
              seen.push(`end ${r.stoppedBy} ${r.stepsRun}`);
            },
          },
        ],
      },
    ),
  );
  const r = await t.run({ steps: 10, evalEvery: 2, checkpointEvery: 2, handleSigint: false });
  assert.equal(r.stepsRun, 3);
  assert.deepEqual(seen, [
    'begin 0+10',
    'step 0',
    'step 1',
    'eval val grpo2',
    'save checkpoint-000002 2',
    'step 2',
    'end abort 3',
  ]);
  await assert.rejects(
    t.run({ steps: 1, handleSigint: false, wandb: true } as never),
    /run\(\{ wandb \}\) needs the layer that reads it/,
  );
  void tinyExact;
});

test('src/grpo imports nothing from src/display or src/report (they subscribe to its events)', () => {
  const dir = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..', 'src', 'grpo');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const text = readFileSync(path.join(dir, f), 'utf8');
    assert.doesNotMatch(text, /from '\.\.\/(display|report)\//, `src/grpo/${f}`);
    assert.doesNotMatch(text, /import\(['"]\.\.\/(display|report)\//, `src/grpo/${f}`);
  }
});

test("with a Policy, a round's requests go out concurrently, at most policyConcurrency at a time, and give the sequential groups", async () => {
  // A policy that answers from the seed it is given (a deterministic stand-in for a server), and
  // counts the requests in flight.
  let inFlight = 0,
    most = 0;
  const colors = ['red', 'green', 'blue', 'yellow'];
  const policy = {
    name: 'seeded',
    async generate(_s: VqaSample, o: { n: number; seed?: number }) {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setImmediate(r));
      inFlight--;
      return Array.from({ length: o.n }, (_, i) => ({
        text: colors[((o.seed ?? 0) + i * 7) % 4]!,
        finishReason: 'stop' as const,
      }));
    },
  };
  const model = await fresh();
  const run = async (extra: Partial<TrainerOptions>) => {
    inFlight = 0;
    most = 0;
    const t = new Trainer(options(model, { promptsPerStep: 8, learningRate: 0 }, { policy, ...extra }));
    const out = await t.step();
    return {
      groups: out.groups.map((g) => [g.sample.id, g.completions.map((c) => [c.text, c.reward, c.advantage])]),
      most,
    };
  };
  const bounded = await run({ policyConcurrency: 3 });
  assert.equal(bounded.most, 3);
  const sequential = await run({ rolloutMode: 'sequential' });
  assert.equal(sequential.most, 1);
  assert.deepEqual(bounded.groups, sequential.groups);
  assert.equal(bounded.groups.length, 8);
});

test('rolloutMode, evalBatchSize and policyConcurrency are checked', async () => {
  const model = await fresh();
  assert.throws(() => new Trainer(options(model, {}, { rolloutMode: 'parallel' as never })), {
    message: 'Expected one of "batched", "sequential" for rolloutMode but received "parallel" of type string',
  });
  assert.throws(() => new Trainer(options(model, {}, { evalBatchSize: 0 })), /evalBatchSize/);
  assert.throws(() => new Trainer(options(model, {}, { policyConcurrency: 1.5 })), /policyConcurrency/);
});
