/**
 * `vqalab demo`: the main job of the README (`npm start`). On CPU, with fixed seeds: the embedded
 * tiny Qwen2-VL (assets/tiny-qwen2-vl) gets a short SFT warm start on the synthetic shapes set,
 * then GRPO with the official VQA accuracy as its reward; held-out accuracy (official metric) is
 * measured after each phase. Ends with one JSON line for scripts:
 * {"warmStartAccuracy": …, "grpoAccuracy": …, "seconds": …}.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { VqaSample } from '../data/types.js';
import type { ImageInput } from '../engine/types.js';
import { synthSamples, type SynthDifficulty } from '../data/synth.js';
import { loadModel } from '../engine/index.js';
import { Trainer } from '../grpo/trainer.js';
import type { GrpoConfig } from '../grpo/config.js';
import type { EvalSummary } from '../grpo/evaluate.js';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { vqaAccuracy } from '../reward/basic.js';
import { processorOptionsFrom } from '../rollout/local.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../vision/qwen2vl.js';
import { writeFileAtomic } from '../util/fs.js';
import { Progress } from '../util/progress.js';
import { interruptible } from '../util/interrupt.js';
import { UsageError, type Command } from './command.js';

/** The recipe. Changing any number changes the result; bench/demo.ts reports it. */
export interface DemoOptions {
  /** Seed of the data, the trainer and sampling. Default 0. */
  seed: number;
  /** Engine threads (default: all cores). */
  threads?: number;
  /** Where metrics.jsonl and result.json go. Default out/demo. */
  out: string;
  /** Synthetic training images (2 questions each) and held-out questions (1 per image). */
  trainImages: number;
  evalQuestions: number;
  difficulty: SynthDifficulty;
  /** SFT warm start: updates of `sftBatch` samples at `sftLearningRate` (5 warmup steps). */
  sftSteps: number;
  sftBatch: number;
  sftLearningRate: number;
  /** GRPO steps and the trainer config (src/grpo/config.ts). */
  grpoSteps: number;
  grpo: Partial<GrpoConfig>;
  /** No progress lines. */
  quiet: boolean;
  signal?: AbortSignal;
  /** Called after each held-out evaluation (benchmarks, notebooks), while the model is loaded. */
  inspect?: (ctx: { phase: 'warm-start' | 'grpo'; trainer: Trainer; heldout: VqaSample[]; images: Map<string, ImageInput[]> }) => Promise<void>;
}

export const DEMO_DEFAULTS: DemoOptions = {
  seed: 0,
  out: path.join('out', 'demo'),
  trainImages: 500,
  evalQuestions: 300,
  difficulty: 'easy',
  sftSteps: 40,
  sftBatch: 16,
  sftLearningRate: 2e-3,
  grpoSteps: 150,
  grpo: {
    promptsPerStep: 8,
    numGenerations: 8,
    maxCompletionLength: 4,
    learningRate: 5e-4,
    epsilonHigh: 0.28,
    dynamicSampling: true,
    maxSamplingRounds: 3,
    evalMaxTokens: 4,
  },
  quiet: false,
};

export interface DemoResult {
  warmStart: EvalSummary;
  grpo: EvalSummary;
  seconds: number;
  stoppedEarly: boolean;
  metricsFile: string;
}

type Write = (line: string) => void;

/** Synthetic samples with their processed images (in memory). */
async function synthSet(images: number, questionsPerImage: number, seed: number, difficulty: SynthDifficulty, processor: Qwen2VLImageProcessor, into: Map<string, ImageInput[]>): Promise<VqaSample[]> {
  const out: VqaSample[] = [];
  let current: ImageInput[] | undefined;
  for await (const { sample, png } of synthSamples({ images, questionsPerImage, seed, difficulty })) {
    if (png) {
      const p = await processor.process(png);
      current = [{ pixels: p.pixels, gridThw: p.gridThw }];
    }
    into.set(sample.id, current!);
    out.push(sample);
  }
  return out;
}

function accuracyLine(label: string, e: EvalSummary): string {
  const types = Object.entries(e.perAnswerType).map(([t, v]) => `${t} ${v.toFixed(2)}`).join(', ');
  return `${label}: ${e.overall.toFixed(2)}% held-out accuracy (official VQA metric, ${e.n} questions; ${types})`;
}

export async function runDemo(options: Partial<DemoOptions> = {}, io: { out: Write; err: Write } = { out: (l) => process.stdout.write(l + '\n'), err: (l) => process.stderr.write(l + '\n') }): Promise<DemoResult> {
  const o: DemoOptions = { ...DEMO_DEFAULTS, ...options, grpo: { ...DEMO_DEFAULTS.grpo, ...options.grpo } };
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  mkdirSync(o.out, { recursive: true });

  const tokenizer = VlmTokenizer.load(DEFAULT_MODEL_DIR);
  const model = await loadModel(DEFAULT_MODEL_DIR, o.threads === undefined ? {} : { threads: o.threads });
  const processor = new Qwen2VLImageProcessor(processorOptionsFrom(DEFAULT_MODEL_DIR));
  const images = new Map<string, ImageInput[]>();
  const train = await synthSet(o.trainImages, 2, o.seed + 1, o.difficulty, processor, images);
  const held = await synthSet(o.evalQuestions, 1, o.seed + 2, o.difficulty, processor, images);
  io.out(`vqalab demo: tiny Qwen2-VL (${(model.numParameters.total / 1e6).toFixed(2)}M parameters, ${DEFAULT_MODEL_DIR}) on the synthetic shapes set (${o.difficulty}): ${train.length} training questions, ${held.length} held-out; data ready in ${elapsed().toFixed(1)}s`);

  const trainer = new Trainer({
    model, tokenizer, train, evalSets: { heldout: held }, rewards: [vqaAccuracy()],
    loadImages: async (s) => images.get(s.id)!, imageCacheSize: 0, outputDir: o.out,
    config: { ...o.grpo, seed: o.seed, totalSteps: Math.max(1, o.grpoSteps) },
    log: o.quiet ? undefined : io.err,
  });
  try {
    // ── SFT warm start ──
    const sftProgress = new Progress({ label: 'SFT warm start', total: o.sftSteps, unit: 'steps', quiet: o.quiet });
    const sft = await interruptible((signal) => trainer.sft({
      steps: o.sftSteps, batchSize: o.sftBatch, learningRate: o.sftLearningRate, warmupSteps: Math.min(5, o.sftSteps), signal,
      onStep: () => sftProgress.tick(),
    }), o.signal);
    sftProgress.done();
    io.out(`SFT warm start: ${sft.length} steps of ${o.sftBatch}, cross-entropy ${sft[0]?.loss.toFixed(3) ?? '-'} → ${sft.at(-1)?.loss.toFixed(3) ?? '-'} (${elapsed().toFixed(1)}s)`);
    const warmStart = await trainer.evaluate('heldout');
    io.out(accuracyLine('warm start', warmStart));
    await o.inspect?.({ phase: 'warm-start', trainer, heldout: held, images });

    // ── GRPO ──
    const grpoProgress = new Progress({ label: 'GRPO', total: o.grpoSteps, unit: 'steps', quiet: o.quiet });
    const run = await trainer.run({ steps: o.grpoSteps, signal: o.signal, onStep: () => grpoProgress.tick() });
    grpoProgress.done();
    const rows = trainer.metrics.history.filter((m) => m.kind === 'grpo');
    const mean = (xs: number[]) => { const f = xs.filter(Number.isFinite); return f.length ? f.reduce((a, b) => a + b, 0) / f.length : NaN; };
    const first = rows.slice(0, 10), last = rows.slice(-10);
    io.out(`GRPO: ${run.stepsRun} steps of ${o.grpo.promptsPerStep}×${o.grpo.numGenerations} completions${run.stoppedBy === 'abort' ? ' (stopped early)' : ''}; reward ${mean(first.map((m) => m.rewardMean)).toFixed(3)} → ${mean(last.map((m) => m.rewardMean)).toFixed(3)} (first/last 10 steps) (${elapsed().toFixed(1)}s)`);
    const grpo = await trainer.evaluate('heldout');
    io.out(accuracyLine('after GRPO', grpo));
    const seconds = Math.round(elapsed() * 10) / 10;
    io.out(`GRPO changed held-out accuracy by ${(grpo.overall - warmStart.overall >= 0 ? '+' : '')}${(grpo.overall - warmStart.overall).toFixed(2)} points in ${seconds}s; metrics: ${path.join(o.out, 'metrics.jsonl')}`);
    const result = { warmStartAccuracy: warmStart.overall, grpoAccuracy: grpo.overall, seconds };
    await writeFileAtomic(path.join(o.out, 'result.json'), JSON.stringify({
      ...result, warmStartPerAnswerType: warmStart.perAnswerType, grpoPerAnswerType: grpo.perAnswerType, grpoSteps: run.stepsRun,
      recipe: { ...o, signal: undefined, inspect: undefined },
    }, null, 2) + '\n');
    await o.inspect?.({ phase: 'grpo', trainer, heldout: held, images });
    io.out(JSON.stringify(result));
    return { warmStart, grpo, seconds, stoppedEarly: run.stoppedBy === 'abort', metricsFile: path.join(o.out, 'metrics.jsonl') };
  } finally {
    model.dispose();
  }
}

const usage = `Usage: vqalab demo [options]

SFT warm start, then GRPO, of the embedded tiny Qwen2-VL on the synthetic shapes set, on CPU with
fixed seeds. Prints held-out accuracy (official VQA metric) after each phase and ends with one JSON
line {"warmStartAccuracy", "grpoAccuracy", "seconds"}. Ctrl-C stops GRPO at a step boundary and
still evaluates.

Options:
  --out DIR          metrics.jsonl and result.json (default out/demo)
  --seed N           default 0
  --threads N        engine threads (default: all cores)
  --sft-steps N      default ${DEMO_DEFAULTS.sftSteps}
  --grpo-steps N     default ${DEMO_DEFAULTS.grpoSteps}
  --train-images N   synthetic training images, 2 questions each (default ${DEMO_DEFAULTS.trainImages})
  --eval-questions N held-out questions (default ${DEMO_DEFAULTS.evalQuestions})
  --quiet            no progress lines
  -h, --help         show this help
`;

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}; got "${v}"`);
  return n;
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'SFT warm start then GRPO of the embedded tiny Qwen2-VL on synthetic shapes (CPU, a few minutes)',
  usage,
  async run(argv) {
    let values: Record<string, string | boolean | undefined>;
    try {
      ({ values } = parseArgs({
        args: argv, strict: true, allowPositionals: false,
        options: {
          out: { type: 'string' }, seed: { type: 'string' }, threads: { type: 'string' }, 'sft-steps': { type: 'string' },
          'grpo-steps': { type: 'string' }, 'train-images': { type: 'string' }, 'eval-questions': { type: 'string' }, quiet: { type: 'boolean' },
        },
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const opts: Partial<DemoOptions> = { quiet: Boolean(values.quiet) };
    if (typeof values.out === 'string') opts.out = values.out;
    const set = <K extends keyof DemoOptions>(key: K, flag: string, min: number) => {
      const v = int(flag, values[flag] as string | undefined, min);
      if (v !== undefined) (opts as Record<string, unknown>)[key] = v;
    };
    set('seed', 'seed', 0);
    set('threads', 'threads', 1);
    set('sftSteps', 'sft-steps', 0);
    set('grpoSteps', 'grpo-steps', 0);
    set('trainImages', 'train-images', 1);
    set('evalQuestions', 'eval-questions', 1);
    await runDemo(opts);
    return 0;
  },
};
