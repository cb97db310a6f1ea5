/**
 * `Trainer.step()` and `Trainer.evaluate()` through the TypeScript API at the issue 13 workload:
 * Qwen2-VL-2B dimensions with random weights (full fine-tune), 16 prompts × G 8, 448² images
 * (256 image tokens each), 16-token completions — the workload of the native `bench_grpo`
 * (native/dev/bench_grpo.cu), which scripts/gpu/bench-trainer.sh runs in the same call.
 *
 *   node trainer.mjs make-model DIR [--preset qwen2-vl-2b] [--threads N] [--hidden N --layers N ...]
 *        what `vqalab model init DIR --preset NAME` writes (default qwen2-vl-2b: config.json as the Hugging
 *        Face checkpoint's, vocab 151,936, hidden 1536, 28 layers, MLP 8960, 12/2 heads, vision 32 × 1280;
 *        issue 14's qwen2.5-vl-3b and qwen3-vl-2b too), BF16 random weights, the real Qwen tokenizer, chat
 *        template and configs; the size flags of `vqalab model init` shrink it (a CPU check of the bench)
 *   node trainer.mjs bench DIR [--device cuda] [--steps 3] [--prompts 16] [--g 8] [--max 16] [--eval 128] [--eval-one 16]
 *        [--lora RANK] (LoRA on every linear module of the language model, alpha 2·rank) [--seq 0] (skip the
 *        sequential step) [--micro TOKENS] (a fixed micro-batch budget; default: sized from free memory)
 *        [--beta 0.04] (as bench_grpo and bench/torch/grpo_reference.py: a reference forward per update;
 *        full fine-tune: a second copy of the model on the device; LoRA: the base with adapters off)
 *        [--bf16-moments 1] (AdamW moments in bf16 on the device: what lets a 3B full fine-tune with its
 *        reference copy fit 80 GB; docs/cuda.md "Memory")
 *
 * Images are processed as the folder's preprocessor_config.json says (patch 14 for Qwen2-VL and Qwen2.5-VL:
 * 448² is 32 × 32 patches, 256 image tokens; patch 16 for Qwen3-VL: 28 × 28 patches, 196 tokens), and the
 * prompt is the folder's chat template over them (the first JSON line after loading gives both counts).
 *
 * Prints one JSON line per measurement and a table: warm-up step excluded, then `steps` batched
 * steps, one sequential step (one prompt at a time: the old path), evaluate() of `eval`
 * questions batched and of `eval-one` questions one at a time.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../src/engine/model.js';
import { native } from '../src/engine/native.js';
import { Trainer } from '../src/grpo/trainer.js';
import { Rng } from '../src/util/rng.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../src/vision/qwen2vl.js';
import { processorOptionsFrom } from '../src/vision/processor-config.js';
import { initModelFolder } from '../src/model/init-folder.js';
import type { DimOverrides } from '../src/model/presets.js';
import type { VqaSample } from '../src/data/types.js';
import type { ImageInput } from '../src/engine/types.js';
import type { RewardFn } from '../src/reward/types.js';

/** The size flags of `vqalab model init` that make-model takes (for a narrow folder to check the bench on a CPU). */
const SIZE_FLAGS: Record<string, keyof DimOverrides> = {
  '--hidden': 'hidden',
  '--layers': 'layers',
  '--heads': 'heads',
  '--kv-heads': 'kvHeads',
  '--intermediate': 'intermediate',
  '--head-dim': 'headDim',
  '--vision-depth': 'visionDepth',
  '--vision-dim': 'visionDim',
  '--vision-heads': 'visionHeads',
  '--vision-intermediate': 'visionIntermediate',
};

/** `vqalab model init DIR --preset NAME`: random BF16 weights, the real Qwen tokenizer and configs. */
async function makeModel(dir: string, args: string[]): Promise<void> {
  const t0 = performance.now();
  const preset = flag(args, '--preset', 'qwen2-vl-2b');
  const overrides: DimOverrides = {};
  for (const [name, key] of Object.entries(SIZE_FLAGS)) {
    const v = flag(args, name, '');
    if (v === '') continue;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer; got "${v}"`);
    (overrides as Record<string, number>)[key] = n;
  }
  const threads = Number(flag(args, '--threads', '0'));
  const r = await initModelFolder(dir, { preset, overrides, force: true, ...(threads > 0 ? { threads } : {}) });
  process.stdout.write(
    `${JSON.stringify({ made: dir, preset, parameters: r.parameters, seconds: (performance.now() - t0) / 1000 })}\n`,
  );
}

function flag(args: string[], name: string, def: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : def;
}

/** config.json's model_type (the family), for the bench's report. */
function modelType(dir: string): string {
  const c = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8')) as { model_type?: unknown };
  return typeof c.model_type === 'string' ? c.model_type : '?';
}

async function bench(dir: string, args: string[]): Promise<void> {
  const device = flag(args, '--device', 'cuda') as 'cuda' | 'cpu';
  const steps = Number(flag(args, '--steps', '3'));
  const prompts = Number(flag(args, '--prompts', '16'));
  const G = Number(flag(args, '--g', '8'));
  const maxT = Number(flag(args, '--max', '16'));
  const nEval = Number(flag(args, '--eval', '128'));
  const nEvalOne = Number(flag(args, '--eval-one', '16'));
  // --eval-batch 128,256: evaluate() again at these evalBatchSize values after the default's run (a
  // comparison of chunk sizes; the table's row is the default's)
  const evalBatches = flag(args, '--eval-batch', '')
    .split(',')
    .filter((x) => x !== '')
    .map(Number);
  const side = Number(flag(args, '--side', '448'));
  const loraRank = Number(flag(args, '--lora', '0'));
  const withSequential = flag(args, '--seq', '1') !== '0';
  const micro = Number(flag(args, '--micro', '0'));
  const bf16Moments = flag(args, '--bf16-moments', '0') !== '0';
  // The KL term of bench_grpo and the PyTorch reference (beta 0.04 with a frozen reference forward).
  const beta = Number(flag(args, '--beta', '0.04'));
  // --profile 1: per-call wall times of the engine calls of each step and the CUDA model's phase
  // times (VQALAB_CUDA_PROFILE=1 must be set before the model loads: the bench sets it).
  const profile = flag(args, '--profile', '0') !== '0';
  if (profile) process.env.VQALAB_CUDA_PROFILE = '1';
  const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

  let t = performance.now();
  const lora =
    loraRank > 0
      ? {
          rank: loraRank,
          alpha: 2 * loraRank,
          targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
          vision: false,
        }
      : undefined;
  const cuda = device === 'cuda' && bf16Moments ? { bf16Moments: true } : undefined;
  const model = await loadModel(dir, { device, lora, ...(cuda ? { cuda } : {}) });
  const family = modelType(dir);
  out({
    loaded: dir,
    family,
    device,
    bf16Moments: Boolean(cuda),
    seconds: (performance.now() - t) / 1000,
    parameters: model.numParameters.total,
    trainable: model.numParameters.trainable,
    memory: model.deviceMemory?.(),
  });
  // The reference only runs forward: it holds its bf16 weights, no optimizer state (the cuda options are the policy's).
  const reference = beta > 0 && !lora ? await loadModel(dir, { device, ...(cuda ? { cuda } : {}) }) : undefined;
  const calls: { what: string; start: number; ms: number }[] = [];
  let callsT0 = performance.now();
  if (profile)
    for (const [m, tag] of [
      [model, 'policy'],
      [reference, 'reference'],
    ] as const) {
      if (!m) continue;
      for (const k of ['sample', 'forward', 'backward', 'step'] as const) {
        const orig = (m[k] as (...a: unknown[]) => Promise<unknown>).bind(m);
        (m as unknown as Record<string, unknown>)[k] = (...a: unknown[]) => {
          const start = performance.now();
          return orig(...a).finally(() =>
            calls.push({ what: `${tag}.${k}`, start: start - callsT0, ms: performance.now() - start }),
          );
        };
      }
    }
  const profileReport = (label: string) => {
    if (!profile) return;
    const by = new Map<string, { n: number; ms: number; first: number; last: number }>();
    for (const c of calls) {
      const e = by.get(c.what) ?? { n: 0, ms: 0, first: Infinity, last: 0 };
      e.n++;
      e.ms += c.ms;
      e.first = Math.min(e.first, c.start);
      e.last = Math.max(e.last, c.start + c.ms);
      by.set(c.what, e);
    }
    const lines = [...by].map(
      ([k, e]) =>
        `  ${k.padEnd(20)} ${e.n} calls, ${e.ms.toFixed(1)} ms summed, from +${e.first.toFixed(1)} to +${e.last.toFixed(1)} ms`,
    );
    process.stdout.write(
      `profile ${label} (engine calls, wall ms from the step's start):\n${lines.join('\n')}\n${native()._cudaProfile() ?? ''}\n`,
    );
    calls.length = 0;
    callsT0 = performance.now();
  };
  const tokenizer = VlmTokenizer.load(dir);
  // The folder's processor settings: Qwen3-VL's patch 16 makes 448² 28 × 28 patches (196 image tokens).
  const processor = new Qwen2VLImageProcessor(processorOptionsFrom(dir));
  const samples = (count: number, offset: number): VqaSample[] =>
    Array.from({ length: count }, (_, i) => ({
      id: `b-${offset + i}`,
      imagePath: `memory:${offset + i}`,
      question: 'What is shown in the picture?',
      answer: 'a',
      answers: Array(10).fill('a'),
    }));
  const loadImages = async (s: VqaSample): Promise<ImageInput[]> => {
    const rng = new Rng(Number(s.id.slice(2)));
    const data = new Uint8Array(side * side * 3);
    for (let i = 0; i < data.length; i++) data[i] = rng.nextU32() & 255;
    const img = await processor.process({ data, width: side, height: side });
    return [{ pixels: img.pixels, gridThw: img.gridThw }];
  };
  // The completion's place in its group: rewards never tie, so every step updates.
  const spread: RewardFn = (_s, c, ctx) => (ctx.index ?? 0) / G + 0.001 * c.length;
  const train = samples(prompts * (steps + 3), 0);
  const base = {
    model,
    reference,
    tokenizer,
    train,
    evalSets: { val: samples(nEval, 100_000) },
    rewards: [spread],
    loadImages,
    recordFacts: false,
    // Every image the bench processes stays cached (about 5 MB each at 448²): what is timed is the
    // engine path, not reprocessing images evicted by a small cache.
    imageCacheSize: prompts * (steps + 3) + nEval + nEvalOne + 16,
    config: {
      promptsPerStep: prompts,
      numGenerations: G,
      maxCompletionLength: maxT,
      learningRate: 1e-6,
      evalMaxTokens: maxT,
      seed: 1,
      microBatchTokens: micro,
      beta,
    },
    log: (line: string) => out({ log: line }),
  };
  const trainer = new Trainer(base);
  // Images are processed once and cached by the trainer (by sample id): process them all before
  // timing (as after a first epoch); a warm-up step fills the engine's pools.
  t = performance.now();
  await Promise.all([...train, ...base.evalSets.val].map((s) => trainer['prompts'].images(s)));
  out({ imagesProcessed: train.length + nEval, seconds: (performance.now() - t) / 1000 });
  // What one prompt is: the reference (bench/torch/grpo_reference.py) builds prompts of the same length.
  const first = (await trainer['prompts'].promptFor(train[0]!)).prompt;
  const grid = first.images[0]!.gridThw;
  const imageTokens = (grid[0] * grid[1] * grid[2]) / 4;
  out({ family, promptTokens: first.ids.length, imageTokens, patchGrid: grid });
  profileReport('(before the warm-up)');
  const warm = await trainer.step();
  out({ warmup: true, ...pick(warm.metrics) });
  profileReport('warm-up step');
  const rows: ReturnType<typeof pick>[] = [];
  for (let s = 0; s < steps; s++) {
    const o = await trainer.step();
    rows.push(pick(o.metrics));
    out({ mode: 'batched', ...rows.at(-1)! });
    profileReport(`step ${o.metrics.step}`);
  }
  let seqRollout = NaN;
  if (withSequential) {
    const seq = new Trainer({ ...base, train: train.slice(0), rolloutMode: 'sequential' as const });
    // The same (already processed) images: the sequential trainer's first step draws other samples, so warm its cache too.
    await Promise.all(train.map((s) => seq['prompts'].images(s)));
    const so = await seq.step();
    seqRollout = so.metrics.rolloutSeconds;
    out({ mode: 'sequential', ...pick(so.metrics) });
    profileReport('sequential step');
  }

  let evalBatched = NaN,
    evalOne = NaN,
    evalN = 0;
  if (nEval > 0) {
    t = performance.now();
    const e = await trainer.evaluate('val');
    evalN = e.n;
    evalBatched = (performance.now() - t) / 1000;
    profileReport('evaluate (batched)');
    const one = new Trainer({ ...base, evalBatchSize: 1, evalSets: { val: samples(nEvalOne, 100_000) } });
    await Promise.all(samples(nEvalOne, 100_000).map((s) => one['prompts'].images(s)));
    t = performance.now();
    await one.evaluate('val');
    evalOne = (performance.now() - t) / 1000;
    for (const b of evalBatches) {
      const other = new Trainer({ ...base, evalBatchSize: b });
      await Promise.all(base.evalSets.val.map((s) => other['prompts'].images(s)));
      t = performance.now();
      const r = await other.evaluate('val');
      const sec = (performance.now() - t) / 1000;
      profileReport(`evaluate (evalBatchSize ${b})`);
      out({
        evaluateAt: {
          evalBatchSize: b,
          questions: r.n,
          seconds: sec,
          perQuestion: sec / r.n,
          vsOne: evalOne / nEvalOne / (sec / r.n),
        },
      });
    }
    out({
      evaluate: {
        batched: { questions: e.n, seconds: evalBatched, perQuestion: evalBatched / e.n },
        oneAtATime: { questions: nEvalOne, seconds: evalOne, perQuestion: evalOne / nEvalOne },
      },
    });
  }

  const mean = (k: keyof ReturnType<typeof pick>) => rows.reduce((a, r) => a + (r[k] as number), 0) / rows.length;
  const peak = Math.max(...rows.map((r) => r.gpuPeakMiB));
  process.stdout.write(
    `\nTrainer.step() ${family}, ${prompts} prompts × G ${G}, ${maxT} tokens, ${side}² images (${imageTokens} image tokens, ${first.ids.length}-token prompts), ${device}${lora ? `, LoRA r ${loraRank}` : `, full fine-tune${cuda ? ' (bf16 moments)' : ''}`}, mean of ${steps} steps after a warm-up:\n` +
      `  step ${mean('stepSeconds').toFixed(3)} s = rollout ${mean('rolloutSeconds').toFixed(3)} + reward ${mean('rewardSeconds').toFixed(3)} + update ${mean('trainSeconds').toFixed(3)} s;` +
      ` ${mean('tokensPerSecond').toFixed(0)} sampled tokens/s; engine pool peak ${peak} MiB\n` +
      (withSequential
        ? `  sequential rollout (one prompt at a time): ${seqRollout.toFixed(3)} s → batched is ${(seqRollout / mean('rolloutSeconds')).toFixed(2)}× faster\n`
        : '') +
      (nEval > 0
        ? `  evaluate(): ${((evalBatched / evalN) * 1000).toFixed(1)} ms/question batched (${evalN}) vs ${((evalOne / nEvalOne) * 1000).toFixed(1)} ms one at a time (${nEvalOne}): ${(evalOne / nEvalOne / (evalBatched / evalN)).toFixed(1)}×\n`
        : ''),
  );
  out({
    summary: {
      family,
      promptTokens: first.ids.length,
      imageTokens,
      bf16Moments: Boolean(cuda),
      prompts,
      G,
      maxT,
      lora: loraRank,
      beta,
      stepSeconds: mean('stepSeconds'),
      rolloutSeconds: mean('rolloutSeconds'),
      trainSeconds: mean('trainSeconds'),
      peakMiB: peak,
      seqRollout,
      evalBatchedPerQ: evalBatched / evalN,
      evalOnePerQ: evalOne / nEvalOne,
    },
  });
  model.dispose();
  reference?.dispose();
}

function pick(m: Trainer['metrics']['history'][number]) {
  return {
    step: m.step,
    stepSeconds: m.stepSeconds,
    rolloutSeconds: m.rolloutSeconds,
    rewardSeconds: m.rewardSeconds,
    trainSeconds: m.trainSeconds,
    tokensPerSecond: m.tokensPerSecond,
    trainTokensPerSecond: m.trainTokensPerSecond ?? NaN,
    gpuPeakMiB: m.gpuPeakMiB ?? NaN,
    completionLength: m.completionLength,
    groups: m.groups,
    skippedUpdates: m.skippedUpdates,
    memoryMiB: m.memoryMiB,
  };
}

const [cmd, dir, ...rest] = process.argv.slice(2);
if (cmd === 'make-model' && dir) await makeModel(dir, rest);
else if (cmd === 'bench' && dir) await bench(dir, rest);
else {
  process.stdout.write(
    'usage: trainer.mjs make-model DIR [--preset NAME] [--threads N] [--hidden N ...] | bench DIR [--device cuda|cpu] [--steps N] [--prompts N] [--g N] [--max N] [--eval N] [--eval-one N] [--eval-batch B,B] [--side PX] [--bf16-moments 1]\n',
  );
  process.exitCode = 2;
}
