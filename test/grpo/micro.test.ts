/**
 * Micro-batches (src/grpo/micro.ts): the splitter covers every completion of a minibatch exactly
 * once within the token budget, and a trainer step split into micro-batches makes the same update as
 * the unsplit step (the same loss, metrics and, up to float summation order, the same weights) on the
 * native CPU engine.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { EngineModel } from '../../src/engine/types.js';
import { FROZEN_BASE_PIECE_TOKENS, MicroBatchSizer, splitMinibatch, type SplitGroup } from '../../src/grpo/micro.js';
import { Trainer, type TrainerOptions } from '../../src/grpo/trainer.js';
import type { GrpoConfig } from '../../src/grpo/config.js';
import { readSafetensors } from '../../src/util/safetensors.js';
import { tinyImages, tinyModel, tinySamples, tinyShaped, tinyTokenizer } from './helpers/tiny-task.js';

const models: EngineModel[] = [];
const dirs: string[] = [];
after(() => {
  for (const m of models) m.dispose();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function cost(groups: readonly SplitGroup[], piece: { group: number; from: number; to: number }[]): number {
  return piece.reduce(
    (a, p) =>
      a +
      groups[p.group]!.promptTokens +
      groups[p.group]!.completionTokens.slice(p.from, p.to).reduce((x, y) => x + y, 0),
    0,
  );
}

test('splitMinibatch: every completion once, in order, each piece within the budget unless it is one completion', () => {
  const groups: SplitGroup[] = [
    { promptTokens: 10, completionTokens: [3, 5, 2, 7] },
    { promptTokens: 4, completionTokens: [1] },
    { promptTokens: 30, completionTokens: [2, 2] },
    { promptTokens: 6, completionTokens: [9, 1, 1, 1, 1] },
  ];
  assert.deepEqual(splitMinibatch(groups, Infinity), [
    groups.map((g, i) => ({ group: i, from: 0, to: g.completionTokens.length })),
  ]);
  for (const budget of [1, 5, 12, 17, 20, 33, 40, 64, 200]) {
    const pieces = splitMinibatch(groups, budget);
    const seen = pieces
      .flat()
      .flatMap((p) => Array.from({ length: p.to - p.from }, (_, k) => `${p.group}:${p.from + k}`));
    const all = groups.flatMap((g, i) => g.completionTokens.map((_, k) => `${i}:${k}`));
    assert.deepEqual(seen, all, `budget ${budget}: each completion once, in order`);
    for (const piece of pieces) {
      assert.ok(piece.length > 0 && piece.every((p) => p.to > p.from), `budget ${budget}: no empty piece`);
      const single = piece.length === 1 && piece[0]!.to - piece[0]!.from === 1;
      assert.ok(
        single || cost(groups, piece) <= budget,
        `budget ${budget}: piece ${JSON.stringify(piece)} costs ${cost(groups, piece)}`,
      );
    }
    const groupCost = (g: SplitGroup) => g.promptTokens + g.completionTokens.reduce((a, b) => a + b, 0);
    if (groups.every((g) => groupCost(g) <= budget)) {
      // Every group fits whole: none is split, and the pieces are the fewest and most even that whole
      // groups in order allow (checked against every way to cut the list).
      assert.ok(
        pieces.every((piece) => piece.every((p) => p.from === 0 && p.to === groups[p.group]!.completionTokens.length)),
        `budget ${budget}: a group was split`,
      );
      const best = bestWholeSplit(groups.map(groupCost), budget);
      assert.equal(pieces.length, best.count, `budget ${budget}: the fewest pieces`);
      assert.equal(Math.max(...pieces.map((p) => cost(groups, p))), best.largest, `budget ${budget}: the most even`);
    } else {
      // Greedy: two neighbouring pieces would not have fit as one.
      for (let i = 1; i < pieces.length; i++) {
        const merged = [...pieces[i - 1]!, ...pieces[i]!];
        const saving =
          pieces[i - 1]!.at(-1)!.group === pieces[i]![0]!.group ? groups[pieces[i]![0]!.group]!.promptTokens : 0;
        assert.ok(
          cost(groups, merged) - saving > budget,
          `budget ${budget}: pieces ${i - 1} and ${i} would fit together`,
        );
      }
    }
  }
});

/** Every cut of `costs` (in order) into pieces within `budget`: the fewest pieces, then the smallest largest one. */
function bestWholeSplit(costs: number[], budget: number): { count: number; largest: number } {
  let best = { count: Infinity, largest: Infinity };
  for (let mask = 0; mask < 1 << (costs.length - 1); mask++) {
    const sums = [costs[0]!];
    for (let i = 1; i < costs.length; i++) {
      if (mask & (1 << (i - 1))) sums.push(costs[i]!);
      else sums[sums.length - 1]! += costs[i]!;
    }
    const largest = Math.max(...sums);
    if (largest > budget) continue;
    if (sums.length < best.count || (sums.length === best.count && largest < best.largest))
      best = { count: sums.length, largest };
  }
  return best;
}

test('splitMinibatch: the trainer workload (16 groups of 298 + 8 × 16 tokens) in two even pieces of whole groups', () => {
  const groups: SplitGroup[] = Array.from({ length: 16 }, () => ({
    promptTokens: 298,
    completionTokens: Array(8).fill(16),
  }));
  // The free memory's budget would take 8 groups and a third of the ninth; the old greedy split cut it.
  const pieces = splitMinibatch(groups, 4096);
  assert.deepEqual(
    pieces.map((p) => p.map((x) => x.group)),
    [
      [0, 1, 2, 3, 4, 5, 6, 7],
      [8, 9, 10, 11, 12, 13, 14, 15],
    ],
  );
  // Many unequal groups: more pieces only when needed.
  const mixed: SplitGroup[] = [5, 1, 9, 2, 2, 7, 3, 3, 8, 1].map((n) => ({
    promptTokens: 10,
    completionTokens: Array(n).fill(4),
  }));
  for (const budget of [50, 60, 80, 100, 150, 400]) {
    const got = splitMinibatch(mixed, budget);
    const best = bestWholeSplit(
      mixed.map((g) => g.promptTokens + 4 * g.completionTokens.length),
      budget,
    );
    assert.equal(got.length, best.count, `budget ${budget}`);
    assert.equal(Math.max(...got.map((p) => cost(mixed, p))), best.largest, `budget ${budget}`);
  }
});

test('MicroBatchSizer: the budget is at most the device pack, unless one prompt and completion is larger', () => {
  const { model } = fakePool(1_000_000);
  const packed = { ...model, packRows: 4096 } as EngineModel;
  const sizer = new MicroBatchSizer(packed, 0);
  const small = [{ promptTokens: 298, completionTokens: [16, 16] }];
  assert.ok(sizer.budget() > 4096, 'the free memory alone would allow more');
  assert.equal(sizer.budgetFor(small).budget, 4096);
  const long = [{ promptTokens: 298, completionTokens: [5000] }];
  const b = sizer.budgetFor(long);
  assert.equal(b.budget, 5298);
  assert.equal(b.switched, false, 'the pack cap never turns checkpointing on');
  // A fixed budget stays as configured.
  assert.equal(new MicroBatchSizer(packed, 9000).budgetFor(small).budget, 9000);
  // No pack size (the CPU): the memory's budget.
  assert.equal(new MicroBatchSizer(model, 0).budgetFor(small).budget, new MicroBatchSizer(model, 0).budget());
});

test('MicroBatchSizer: a frozen base (LoRA) caps pieces at 2k tokens: the trainer workload in four pieces, not two', () => {
  const { model } = fakePool(1_000_000);
  const lora = {
    ...model,
    packRows: 4096,
    numParameters: { total: 2_208_985_600, trainable: 73_859_072 },
  } as EngineModel;
  const full = {
    ...model,
    packRows: 4096,
    numParameters: { total: 2_208_985_600, trainable: 2_208_985_600 },
  } as EngineModel;
  const groups: SplitGroup[] = Array.from({ length: 16 }, () => ({
    promptTokens: 298,
    completionTokens: Array(8).fill(16),
  }));
  const budgetLora = new MicroBatchSizer(lora, 0).budgetFor(groups).budget;
  assert.equal(budgetLora, FROZEN_BASE_PIECE_TOKENS);
  assert.equal(new MicroBatchSizer(full, 0).budgetFor(groups).budget, 4096, 'full fine-tuning keeps the pack cap');
  const pieces = splitMinibatch(groups, budgetLora);
  assert.deepEqual(
    pieces.map((p) => p.length),
    [4, 4, 4, 4],
  );
  assert.ok(pieces.every((p) => cost(groups, p) <= 2048));
  // one prompt and completion over the cap still gets its own piece; a smaller pack stays the cap
  assert.equal(new MicroBatchSizer(lora, 0).budgetFor([{ promptTokens: 298, completionTokens: [3000] }]).budget, 3298);
  assert.equal(new MicroBatchSizer({ ...lora, packRows: 1024 } as EngineModel, 0).budgetFor(groups).budget, 1024);
  // the CPU (no pack): no cap
  const cpu = { ...model, numParameters: lora.numParameters } as EngineModel;
  assert.equal(new MicroBatchSizer(cpu, 0).budgetFor(groups).budget, new MicroBatchSizer(cpu, 0).budget());
});

function options(model: EngineModel, reference: EngineModel, config: Partial<GrpoConfig>): TrainerOptions {
  return {
    model,
    reference,
    tokenizer: tinyTokenizer(),
    train: tinySamples(32),
    rewards: [tinyShaped],
    loadImages: tinyImages,
    recordFacts: false,
    config: {
      promptsPerStep: 4,
      numGenerations: 4,
      maxCompletionLength: 3,
      learningRate: 1e-3,
      seed: 5,
      beta: 0.04,
      ...config,
    },
  };
}

async function weights(model: EngineModel): Promise<Map<string, Float32Array>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-micro-'));
  dirs.push(dir);
  await model.save(dir);
  const { tensors } = await readSafetensors(path.join(dir, 'model.safetensors'));
  return new Map([...tensors].map(([k, t]) => [k, t.data as Float32Array]));
}

/** A device pool as the CUDA engine reports it: reading with reset starts a new peak window. */
function fakePool(totalMiB = 10_000, checkpointCalls?: boolean[]) {
  const pool = { used: 100, peak: 100 };
  const model = {
    // Qwen2-VL-2B's text dims: checkpointing cuts the sizer's per-token estimate about 6×.
    config: { hiddenSize: 1536, intermediateSize: 8960, numLayers: 28, vocabSize: 151936 },
    deviceMemory(reset = false) {
      const m = { usedMiB: pool.used, peakMiB: pool.peak, availableMiB: totalMiB - pool.used, totalMiB };
      if (reset) pool.peak = pool.used;
      return m;
    },
    ...(checkpointCalls && {
      setCheckpointActivations(on: boolean) {
        checkpointCalls.push(on);
        return true;
      },
    }),
  } as unknown as EngineModel;
  const alloc = (mib: number) => {
    pool.used += mib;
    pool.peak = Math.max(pool.peak, pool.used);
  };
  return { model, alloc };
}

test("MicroBatchSizer.takePeak: a step's peak counts what came before a pass reset the pool's window", () => {
  const { model, alloc } = fakePool();
  const sizer = new MicroBatchSizer(model, 0);
  sizer.takePeak(); // the step starts
  alloc(800); // the rollout's KV caches
  alloc(-800);
  const before = sizer.begin(); // a training pass: resets the pool's window
  alloc(300);
  alloc(-300);
  sizer.end(before, 100);
  assert.equal(sizer.takePeak(), 900);
  // The next window starts at the pool's use, not at the last step's peak.
  assert.equal(sizer.takePeak(), 100);
});

test('MicroBatchSizer.budgetFor turns activation checkpointing on only when a prompt with one completion does not fit', () => {
  // 100 MiB beyond the 1 GiB reserve: 16 tokens at the plain estimate, 98 with checkpointing.
  const calls: boolean[] = [];
  const sizer = new MicroBatchSizer(fakePool(1224, calls).model, 0);
  const small = [{ promptTokens: 10, completionTokens: [3, 5] }];
  assert.deepEqual(sizer.budgetFor(small), { budget: 16, switched: false, unsplittable: 15 });
  assert.deepEqual(calls, []);
  const long = [{ promptTokens: 30, completionTokens: [5, 10] }, small[0]!];
  assert.deepEqual(sizer.budgetFor(long), { budget: 98, switched: true, unsplittable: 40 });
  assert.deepEqual(calls, [true]);
  assert.equal(sizer.budgetFor(long).switched, false, 'on once, for good');
  assert.equal(sizer.checkpoint(), false);
  assert.deepEqual(calls, [true]);
  // A device without checkpointing, or a fixed budget: nothing to switch.
  assert.equal(new MicroBatchSizer(fakePool(1224).model, 0).budgetFor(long).switched, false);
  assert.equal(new MicroBatchSizer(fakePool(1224, calls).model, 12).budgetFor(long).switched, false);
  assert.deepEqual(calls, [true]);
});

/**
 * The tiny CPU model behind a simulated device with `freeMiB` beyond the sizer's 1 GiB reserve: a
 * training forward of n tokens needs n × `plainMiB` (n × `ckptMiB` with checkpointing on) and throws
 * the engine's out-of-memory error when that is more. Everything else is the real model.
 */
function simulatedDevice(model: EngineModel, o: { freeMiB: number; plainMiB: number; ckptMiB: number }) {
  const state = { checkpointing: false, peak: 0, outOfMemory: 0 };
  const device = new Proxy(model, {
    get(target, key) {
      if (key === 'deviceMemory')
        return (reset = false) => {
          const m = { usedMiB: 0, peakMiB: state.peak, availableMiB: 1024 + o.freeMiB, totalMiB: 1024 + o.freeMiB };
          if (reset) state.peak = 0;
          return m;
        };
      if (key === 'setCheckpointActivations')
        return (on: boolean) => {
          state.checkpointing = on;
          return true;
        };
      if (key === 'forward')
        return async (reqs: Parameters<EngineModel['forward']>[0]) => {
          if (reqs.some((r) => r.keepForBackward)) {
            const n = reqs.reduce(
              (a, r) => a + r.prompt.ids.length + r.completions.reduce((x, c) => x + c.length, 0),
              0,
            );
            const need = n * (state.checkpointing ? o.ckptMiB : o.plainMiB);
            if (need > o.freeMiB) {
              state.outOfMemory++;
              throw new Error(`out of GPU memory (simulated: ${n} tokens need ${need} MiB)`);
            }
            state.peak = Math.max(state.peak, need);
          }
          return target.forward(reqs);
        };
      const v = Reflect.get(target, key, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { device, state };
}

test('out of memory at one completion a piece: the minibatch starts again with checkpointing on and makes the same update', async () => {
  const [a, b, refA, refB] = await Promise.all([tinyModel(), tinyModel(), tinyModel(), tinyModel()]);
  models.push(a, b, refA, refB);
  // A prompt with one completion is ~33 tokens: over 20 MiB without checkpointing, ~1.7 MiB with.
  const { device, state } = simulatedDevice(b, { freeMiB: 20, plainMiB: 1, ckptMiB: 0.05 });
  const logs: string[] = [];
  const whole = new Trainer(options(a, refA, {}));
  const limited = new Trainer({ ...options(device, refB, {}), log: (m: string) => logs.push(m) });
  const x = await whole.step(),
    y = await limited.step();
  assert.ok(state.outOfMemory >= 2, `halved first, then checkpointed (${state.outOfMemory} out-of-memory errors)`);
  assert.ok(state.checkpointing);
  assert.ok(
    logs.some((l) => /activation checkpointing on/.test(l)),
    logs.join('\n'),
  );
  assert.ok(Math.abs(x.metrics.loss - y.metrics.loss) <= 1e-5 * Math.max(1, Math.abs(x.metrics.loss)));
  assert.ok(Math.abs(x.metrics.gradNorm - y.metrics.gradNorm) <= 1e-4 * x.metrics.gradNorm);
  assert.ok(Number.isFinite(y.metrics.gpuPeakMiB!) && y.metrics.gpuPeakMiB! <= 20);
});

test('a step in micro-batches of a few tokens makes the update of the unsplit step', async () => {
  const [a, b, refA, refB] = await Promise.all([tinyModel(), tinyModel(), tinyModel(), tinyModel()]);
  models.push(a, b, refA, refB);
  // The tiny task's prompts are ~30 tokens: a budget of 40 puts one or two completions in a piece
  // and splits every group. The KL term (beta) keeps groups whose advantages are all 0 in the pass.
  const whole = new Trainer(options(a, refA, {}));
  const split = new Trainer(options(b, refB, { microBatchTokens: 40 }));
  for (let s = 0; s < 2; s++) {
    const x = await whole.step(),
      y = await split.step();
    assert.deepEqual(
      y.groups.map((g) => g.completions.map((c) => c.text)),
      x.groups.map((g) => g.completions.map((c) => c.text)),
      `step ${s}: the same rollouts`,
    );
    assert.ok(
      Math.abs(x.metrics.loss - y.metrics.loss) <= 1e-5 * Math.max(1, Math.abs(x.metrics.loss)),
      `step ${s}: loss ${x.metrics.loss} vs ${y.metrics.loss}`,
    );
    assert.ok(Math.abs(x.metrics.kl - y.metrics.kl) <= 1e-6, `step ${s}: kl ${x.metrics.kl} vs ${y.metrics.kl}`);
    assert.ok(
      Math.abs(x.metrics.gradNorm - y.metrics.gradNorm) <= 1e-4 * x.metrics.gradNorm,
      `step ${s}: gradient norm ${x.metrics.gradNorm} vs ${y.metrics.gradNorm}`,
    );
    assert.equal(y.metrics.skippedUpdates, 0);
    assert.ok(y.metrics.trainTokensPerSecond! > 0);
  }
  const wa = await weights(a),
    wb = await weights(b);
  const start = await weights(refA);
  let moved = 0,
    diff2 = 0,
    step2 = 0;
  for (const [name, va] of wa) {
    const vb = wb.get(name)!,
      v0 = start.get(name)!;
    for (let i = 0; i < va.length; i++) {
      if (va[i] !== v0[i]) moved++;
      diff2 += (va[i]! - vb[i]!) ** 2;
      step2 += (va[i]! - v0[i]!) ** 2;
    }
  }
  assert.ok(moved > 1000, `the steps moved ${moved} weights`);
  // Summation order changes the gradient in its last bits; Adam passes that on elementwise (most for
  // gradients near its epsilon), so compare the whole update's norm.
  const rel = Math.sqrt(diff2 / step2);
  assert.ok(rel < 1e-3, `|split − whole| / |update| = ${rel}`);
});
