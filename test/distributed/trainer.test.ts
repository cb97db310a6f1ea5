/**
 * Data-parallel GRPO on CPU ranks (src/distributed): real rank processes started by the launcher, the
 * rendezvous over loopback TCP, the native cpu collective for the gradients. Two ranks train as one rank
 * does with the same prompts and seeds (the same loss, weights within 1e-6 relative); a checkpoint of the
 * two-rank run resumes on one rank and goes on as the one-rank run; a rank that crashes or hangs stops
 * the run with an error naming it, every rank process ends, and the last checkpoint stays valid.
 * Timeouts here only detect faults: every passing outcome is an event awaited.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/engine/native.js';
import { DistributedError, DistributedTrainer } from '../../src/distributed/index.js';
import { Trainer, type StepOutput } from '../../src/grpo/trainer.js';
import { readCheckpoint } from '../../src/grpo/checkpoint.js';
import { recipe, type TestRecipeArgs } from './fixtures/recipe.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const RECIPE = path.join(here, 'fixtures', 'recipe.js');
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'vqalab-dist-'));
  dirs.push(d);
  return d;
}

const launch = (
  devices: number,
  extra: Partial<Parameters<typeof DistributedTrainer.launch>[0]> & { args?: TestRecipeArgs } = {},
) =>
  DistributedTrainer.launch({
    devices: Array.from({ length: devices }, () => 'cpu' as const),
    recipe: { module: RECIPE, args: extra.args ?? {} },
    timeoutMs: 300_000,
    env: { VQALAB_THREADS: '1' },
    ...extra,
  });

/** Tensors of a saved model.safetensors, by name. */
function weights(file: string): Map<string, Float32Array> {
  const t = native()._readSafetensors(file).tensors;
  return new Map(Object.entries(t).map(([k, v]) => [k, v.data]));
}

/**
 * How far `a` is from `b`: ‖a − b‖ / ‖b‖ over every weight (the relative difference of the weights),
 * and for the message the largest absolute difference and how many weights differ at all.
 */
function distance(a: Map<string, Float32Array>, b: Map<string, Float32Array>) {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let num = 0,
    den = 0,
    maxAbs = 0,
    differ = 0,
    total = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) {
      const d = x[i]! - y[i]!;
      num += d * d;
      den += y[i]! * y[i]!;
      maxAbs = Math.max(maxAbs, Math.abs(d));
      if (d !== 0) differ++;
      total++;
    }
  }
  return { relative: Math.sqrt(num / den), maxAbs, differ, total };
}

/** What a step trained on: each group's sample and completions (tokens, rewards, advantages). */
const trained = (o: StepOutput) =>
  o.groups.map((g) => ({
    id: g.sample.id,
    completions: g.completions.map((c) => ({ ids: [...c.tokenIds], reward: c.reward, advantage: c.advantage })),
  }));

test('two CPU ranks train as one rank; their checkpoint resumes on one rank as the one-rank run goes on', async () => {
  // One rank, in this process: three steps, weights saved after the second and the third.
  const one = recipe({ rank: 0, worldSize: 1, localRank: 0, nodeRank: 0, device: 'cpu', args: {} });
  const model = await one.load(one.modelDir, { loadOptimizer: false });
  const ref = new Trainer({ ...one.options, model });
  const refSteps = [await ref.step(), await ref.step()];
  const refEval = await ref.evaluate('val');
  const refAt2 = path.join(tmp(), 'w2');
  await model.save(refAt2);
  refSteps.push(await ref.step());
  const refAt3 = path.join(tmp(), 'w3');
  await model.save(refAt3);
  model.dispose();
  assert.ok(
    refSteps.every((s) => Number.isFinite(s.metrics.loss) && s.metrics.loss !== 0),
    'the reference steps trained',
  );

  // Two ranks: the same two steps.
  const out = tmp();
  const two = await launch(2, { outputDir: out });
  assert.equal(two.worldSize, 2);
  const steps = [await two.step(), await two.step()];
  const evaluated = await two.evaluate('val'); // greedy answers shared between the ranks too
  const ckpt = await two.save();
  const hash = await two.checkWeights();
  await two.close();
  assert.match(hash, /^[0-9a-f]{16}$/);
  for (const i of [0, 1]) {
    assert.equal(steps[i]!.step, i);
    assert.deepEqual(trained(steps[i]!), trained(refSteps[i]!), `step ${i}: the groups trained on`);
    assert.equal(steps[i]!.metrics.loss, refSteps[i]!.metrics.loss, `step ${i}: the loss`);
    assert.equal(steps[i]!.metrics.rewardMean, refSteps[i]!.metrics.rewardMean);
  }
  assert.deepEqual(
    evaluated.rows.map((r) => [r.id, r.prediction, r.accuracy]),
    refEval.rows.map((r) => [r.id, r.prediction, r.accuracy]),
  );
  assert.equal(evaluated.overall, refEval.overall);
  const d2 = distance(
    weights(path.join(ckpt, 'model', 'model.safetensors')),
    weights(path.join(refAt2, 'model.safetensors')),
  );
  assert.ok(d2.relative <= 1e-6, `two ranks' weights after 2 steps differ from one rank's: ${JSON.stringify(d2)}`);

  // Its checkpoint on one rank: step 2 as the one-rank run took it.
  const resumed = await launch(1, { resume: out, outputDir: out });
  assert.equal(resumed.globalStep, 2);
  const s3 = await resumed.step();
  const ckpt3 = await resumed.save();
  await resumed.close();
  assert.deepEqual(trained(s3), trained(refSteps[2]!));
  assert.ok(Math.abs(s3.metrics.loss - refSteps[2]!.metrics.loss) <= 1e-6 * Math.abs(refSteps[2]!.metrics.loss));
  const d3 = distance(
    weights(path.join(ckpt3, 'model', 'model.safetensors')),
    weights(path.join(refAt3, 'model.safetensors')),
  );
  assert.ok(
    d3.relative <= 1e-6,
    `resumed on one rank, the weights after step 3 differ from one rank's: ${JSON.stringify(d3)}`,
  );
  process.stderr.write(
    `two ranks vs one: after 2 steps ${JSON.stringify(d2)}; resumed on one rank, after 3 ${JSON.stringify(d3)}\n`,
  );
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('a rank that crashes stops the run naming it; every rank ends; the last checkpoint stays valid and resumes', async () => {
  const out = tmp();
  const d = await launch(2, { outputDir: out, args: { crash: { rank: 1, step: 1 } } });
  const pids = d.pids;
  await d.step();
  const saved = await d.save();
  const err = await d.step().then(
    () => assert.fail('the step with a crashed rank succeeded'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof DistributedError, String(err));
  assert.equal(err.rank, 1);
  assert.match(err.message, /rank 1 \(pid \d+/);
  for (const pid of pids) assert.equal(alive(pid), false, `rank process ${pid} still runs`);
  await assert.rejects(d.step(), /closed/);
  const ck = readCheckpoint(out);
  assert.equal(ck.dir, saved);
  assert.equal(ck.state.step, 1);
  const again = await launch(1, { resume: out });
  assert.equal(again.globalStep, 1);
  assert.equal((await again.step()).step, 1);
  await again.close();
});

test('a rank that hangs is named once the others have waited the timeout; every rank ends', async () => {
  // 20 s for the hang; starting the ranks on a busy machine may take longer, and is no fault here
  const d = await launch(2, { timeoutMs: 20_000, startupTimeoutMs: 300_000, args: { hang: { rank: 0, step: 0 } } });
  const pids = d.pids;
  const err = await d.step().then(
    () => assert.fail('the step with a hung rank succeeded'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof DistributedError, String(err));
  assert.equal(err.rank, 0);
  assert.match(err.message, /rank 0 \(pid \d+ on .*\) did not (reach gather|finish step)/);
  for (const pid of pids) assert.equal(alive(pid), false, `rank process ${pid} still runs`);
});

test('with β > 0 the reference copy is shared too: two ranks take the one-rank step (loss, KL, weights)', async () => {
  const config = { beta: 0.04, numIterations: 2 }; // a frozen reference and old log-probs: every forward kind
  const one = recipe({ rank: 0, worldSize: 1, localRank: 0, nodeRank: 0, device: 'cpu', args: { config } });
  const model = await one.load(one.modelDir, { loadOptimizer: false });
  const ref = new Trainer({
    ...one.options,
    model,
    loadModel: (dir, { role }) => one.load(dir, { loadOptimizer: role === 'resume' }),
  });
  const want = await ref.step();
  const refDir = path.join(tmp(), 'w');
  await model.save(refDir);
  model.dispose();
  assert.ok(Number.isFinite(want.metrics.kl), 'the reference step has a KL term');

  const out = tmp();
  const two = await launch(2, { outputDir: out, args: { config } });
  const got = await two.step();
  const ckpt = await two.save();
  await two.close();
  assert.deepEqual(trained(got), trained(want));
  // μ = 2: the second pass sees weights updated once, which differ from one rank's by rounding (the
  // summation order of the gradient): its loss and KL agree to about 1e-6, not to the bit.
  const close = (a: number, b: number, what: string) =>
    assert.ok(Math.abs(a - b) <= 1e-5 * Math.abs(b), `${what}: ${a} on two ranks, ${b} on one`);
  close(got.metrics.loss, want.metrics.loss, 'loss');
  close(got.metrics.kl, want.metrics.kl, 'kl');
  const d = distance(
    weights(path.join(ckpt, 'model', 'model.safetensors')),
    weights(path.join(refDir, 'model.safetensors')),
  );
  assert.ok(d.relative <= 1e-6, `weights: ${JSON.stringify(d)}`);
});
