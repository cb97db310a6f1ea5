/**
 * `vqalab demo`: the main job of the README (`npm start`). On CPU, with fixed seeds: the embedded
 * tiny Qwen2-VL (assets/tiny-qwen2-vl) gets a short SFT warm start on simple synthetic scenes
 * (one large shape; what colour is it, what shape is it), then GRPO with the official VQA accuracy
 * as its reward; held-out accuracy (official metric) is measured after each phase, and again with
 * every held-out question shown another question's image — the check that the policy answers
 * from the pixels, not from the question alone. Ends with one JSON line for scripts:
 * {"warmStartAccuracy": …, "grpoAccuracy": …, "seconds": …}.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { VqaSample } from '../data/types.js';
import type { Device, ImageInput } from '../engine/types.js';
import { existsSync } from 'node:fs';
import sharp from 'sharp';
import { synthSamples, type SynthDifficulty } from '../data/synth.js';
import type { SynthFamily } from '../data/synth-vocab.js';
import { SYNTH_VIDEO_FAMILIES, type SynthVideoFamily } from '../data/synth-video.js';
import { synthVideoSet } from './demo-video.js';
import { loadModel } from '../engine/index.js';
import { native } from '../engine/native.js';
import { Trainer } from '../grpo/trainer.js';
import type { GrpoConfig } from '../grpo/config.js';
import type { EvalSummary } from '../grpo/evaluate.js';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { vqaAccuracy } from '../reward/basic.js';
import { processorOptionsFrom } from '../vision/processor-config.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../vision/qwen2vl.js';
import { writeFileAtomic } from '../util/fs.js';
import { Progress } from '../util/progress.js';
import { interruptible } from '../util/interrupt.js';
import { type Command } from './command.js';
import { UsageError } from '../util/errors.js';

/** The recipe. Changing any number changes the result; bench/demo.ts reports it. */
export interface DemoOptions {
  /** Seed of the data, the trainer and sampling. Default 0. */
  seed: number;
  /** The policy: a Qwen2-VL model folder (config.json, weights, tokenizer). Default: the embedded tiny model. */
  model: string;
  /** Engine device: 'cpu' (default), 'cuda' or 'cuda:N' (a build with the CUDA backend). */
  device: string;
  /** Engine threads on CPU (default: all cores). */
  threads?: number;
  /** Where metrics.jsonl and result.json go. Default out/demo. */
  out: string;
  /** Synthetic training images (2 questions each) and held-out questions (1 per image). */
  trainImages: number;
  evalQuestions: number;
  difficulty: SynthDifficulty;
  /** Scenes: shapes per image and their radius (fractions of the side), question families (src/data/synth.ts). */
  shapeCount: [number, number];
  shapeSize: [number, number];
  families: SynthFamily[];
  /**
   * The control: every image (training and held-out) replaced by one blank image, so only the
   * question is left to learn from. The gap to a normal run is what the policy learned by looking.
   */
  blankImages: boolean;
  /**
   * Video questions instead of images: the synthetic video set (src/data/synth-video.ts; `trainImages`
   * clips of one question each, `evalQuestions` held out), processed at the frames' own size.
   */
  video: boolean;
  /** Video: frames per clip and families (src/data/synth-video.ts). */
  videoFrames: number;
  videoFamilies: SynthVideoFamily[];
  /** SFT warm start: updates of `sftBatch` samples at `sftLearningRate` (5 warmup steps). */
  sftSteps: number;
  sftBatch: number;
  sftLearningRate: number;
  /** GRPO steps and the trainer config (src/grpo/config.ts). */
  grpoSteps: number;
  grpo: Partial<GrpoConfig>;
  /** Also evaluate the held-out questions with each one shown another question's image (default true). */
  imageCheck: boolean;
  /** No progress lines. */
  quiet: boolean;
  signal?: AbortSignal;
  /** Called after each held-out evaluation (benchmarks, notebooks), while the model is loaded. */
  inspect?: (ctx: {
    phase: 'warm-start' | 'grpo';
    trainer: Trainer;
    heldout: VqaSample[];
    images: Map<string, ImageInput[]>;
  }) => Promise<void>;
}

export const DEMO_DEFAULTS: DemoOptions = {
  seed: 0,
  model: DEFAULT_MODEL_DIR,
  device: 'cpu',
  out: path.join('out', 'demo'),
  trainImages: 500,
  evalQuestions: 300,
  difficulty: 'easy',
  // One large shape per image and questions whose answer is only in the pixels (4 colours, 3
  // shapes): the tiny model can learn to read them in minutes. Counting, positions and
  // comparisons over busier scenes take it far longer (docs/grpo.md).
  shapeCount: [1, 1],
  shapeSize: [0.16, 0.22],
  families: ['color', 'shape'],
  blankImages: false,
  video: false,
  videoFrames: 14,
  videoFamilies: [...SYNTH_VIDEO_FAMILIES],
  // Long enough to learn the answer format and the answers' frequencies, too short to learn to look.
  sftSteps: 25,
  sftBatch: 16,
  sftLearningRate: 2e-3,
  grpoSteps: 100,
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
  imageCheck: true,
  quiet: false,
};

export interface DemoResult {
  warmStart: EvalSummary;
  grpo: EvalSummary;
  /** The same held-out questions, each shown another question's image (when `imageCheck`). */
  warmStartMismatched?: EvalSummary;
  grpoMismatched?: EvalSummary;
  seconds: number;
  stoppedEarly: boolean;
  metricsFile: string;
}

type Write = (line: string) => void;

/** Synthetic samples with their processed images (in memory); `blank`: this image for all of them. */
async function synthSet(
  o: DemoOptions,
  images: number,
  questionsPerImage: number,
  seed: number,
  processor: Qwen2VLImageProcessor,
  into: Map<string, ImageInput[]>,
  blank?: ImageInput[],
): Promise<VqaSample[]> {
  const out: VqaSample[] = [];
  let current: ImageInput[] | undefined;
  const scenes = {
    images,
    questionsPerImage,
    seed,
    difficulty: o.difficulty,
    shapeCount: o.shapeCount,
    shapeSize: o.shapeSize,
    families: o.families,
  };
  for await (const { sample, png } of synthSamples(scenes)) {
    if (png) {
      if (blank) current = blank;
      else {
        const p = await processor.process(png);
        current = [{ pixels: p.pixels, gridThw: p.gridThw }];
      }
    }
    into.set(sample.id, current!);
    out.push(sample);
  }
  return out;
}

/** A plain image of the scenes' background and size: nothing to see. */
async function blankImage(processor: Qwen2VLImageProcessor, size = 112): Promise<ImageInput[]> {
  const png = await sharp({
    create: { width: size, height: size, channels: 3, background: { r: 244, g: 244, b: 244 } },
  })
    .png()
    .toBuffer();
  const p = await processor.process(png);
  return [{ pixels: p.pixels, gridThw: p.gridThw }];
}

/**
 * The held-out questions, each paired with the image of the question `shift` places on (one
 * question per image, so always another scene; videos: shift by the number of families, which come
 * in turn, so each question gets a clip of its own family): a policy that reads the image falls to
 * chance, one that answers from the question alone scores as before.
 */
function mismatched(held: readonly VqaSample[], images: Map<string, ImageInput[]>, shift = 1): VqaSample[] {
  return held.map((s, i) => {
    const other = held[(i + shift) % held.length]!;
    const id = `${s.id}#image-of-${other.id}`;
    images.set(id, images.get(other.id)!);
    return { ...s, id };
  });
}

/** Checks the recipe's device and model folder before any work; the messages name the fix. */
export function checkDemoTarget(o: Pick<DemoOptions, 'device' | 'model'>): void {
  if (typeof o.device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(o.device)) {
    throw new UsageError(`--device must be cpu, cuda or cuda:N; got "${o.device}"`);
  }
  if (o.device !== 'cpu') {
    const cuda = native()._cuda();
    if (!cuda.available) {
      const why = cuda.reason ?? (cuda.built ? 'no CUDA device is visible' : 'this build has no CUDA backend');
      throw new UsageError(
        `--device ${o.device}: ${why}. Use --device cpu, or reinstall vqalab where the CUDA toolkit is found (docs/cuda.md).`,
        1,
      );
    }
  }
  if (!existsSync(path.join(o.model, 'config.json'))) {
    throw new UsageError(
      `--model ${o.model}: not a model folder (no config.json); give a Qwen2-VL checkpoint folder with its tokenizer files`,
    );
  }
}

/** Accuracy per question family (synthetic samples carry theirs in `extra.family`), in percent. */
export function perFamily(samples: readonly VqaSample[], e: EvalSummary): Record<string, number> {
  const family = new Map(
    samples.map((s) => [s.id, String((s.extra as { family?: unknown } | undefined)?.family ?? 'other')]),
  );
  const sums = new Map<string, { s: number; n: number }>();
  for (const r of e.rows) {
    const f = family.get(r.id) ?? 'other';
    const a = sums.get(f) ?? { s: 0, n: 0 };
    a.s += r.accuracy;
    a.n++;
    sums.set(f, a);
  }
  return Object.fromEntries([...sums].map(([f, a]) => [f, Math.round((10000 * a.s) / a.n) / 100]));
}

function accuracyLine(label: string, e: EvalSummary, held: readonly VqaSample[]): string {
  const fams = Object.entries(perFamily(held, e))
    .map(([f, v]) => `${f} ${v.toFixed(2)}`)
    .join(', ');
  return `${label}: ${e.overall.toFixed(2)}% held-out accuracy (official VQA metric, ${e.n} questions; ${fams})`;
}

export async function runDemo(
  options: Partial<DemoOptions> = {},
  io: { out: Write; err: Write } = {
    out: (l) => process.stdout.write(l + '\n'),
    err: (l) => process.stderr.write(l + '\n'),
  },
): Promise<DemoResult> {
  const o: DemoOptions = { ...DEMO_DEFAULTS, ...options, grpo: { ...DEMO_DEFAULTS.grpo, ...options.grpo } };
  checkDemoTarget(o);
  if (o.video && o.blankImages)
    throw new UsageError('--video and --blank-images do not combine (the video control is the mismatched clips)');
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1000;
  mkdirSync(o.out, { recursive: true });

  const tokenizer = VlmTokenizer.load(o.model);
  const model = await loadModel(o.model, {
    device: o.device as Device,
    ...(o.threads === undefined ? {} : { threads: o.threads }),
  });
  const processor = new Qwen2VLImageProcessor(processorOptionsFrom(o.model));
  const images = new Map<string, ImageInput[]>();
  const blank = o.blankImages ? await blankImage(processor) : undefined;
  const clips = (n: number, seed: number, idPrefix: string) =>
    synthVideoSet({ videos: n, seed, frames: o.videoFrames, families: o.videoFamilies, idPrefix }, images);
  const train = o.video
    ? clips(o.trainImages, o.seed + 1, 'train')
    : await synthSet(o, o.trainImages, 2, o.seed + 1, processor, images, blank);
  const held = o.video
    ? clips(o.evalQuestions, o.seed + 2, 'heldout')
    : await synthSet(o, o.evalQuestions, 1, o.seed + 2, processor, images, blank);
  const heldMismatched = o.imageCheck ? mismatched(held, images, o.video ? o.videoFamilies.length : 1) : undefined;
  const input = o.video ? 'clip' : 'image'; // what the wrong-input control swaps, in its lines
  const name = o.model === DEFAULT_MODEL_DIR ? 'tiny Qwen2-VL' : path.basename(path.resolve(o.model));
  const scenes = o.video
    ? `${o.videoFrames}-frame clips; ${o.videoFamilies.join(', ')} questions`
    : `${o.shapeCount[0] === o.shapeCount[1] ? o.shapeCount[0] : o.shapeCount.join('-')} shape${o.shapeCount[1] > 1 ? 's' : ''} per image; ${o.families.join(', ')} questions`;
  io.out(
    `vqalab demo: ${name} (${(model.numParameters.total / 1e6).toFixed(2)}M parameters, ${o.model}, ${o.device}) on synthetic ${o.video ? 'videos' : 'shapes'} (${scenes}${o.blankImages ? '; CONTROL: every image blank' : ''}): ${train.length} training questions, ${held.length} held-out; data ready in ${elapsed().toFixed(1)}s`,
  );
  const check = async (label: string): Promise<EvalSummary | undefined> => {
    if (!heldMismatched) return undefined;
    const e = await trainer.evaluate(heldMismatched, { name: 'heldout-mismatched-images' });
    const fams = Object.entries(perFamily(heldMismatched, e))
      .map(([f, v]) => `${f} ${v.toFixed(2)}`)
      .join(', ');
    io.out(`  ${label}, each question shown another question's ${input}: ${e.overall.toFixed(2)}% (${fams})`);
    return e;
  };

  const trainer = new Trainer({
    model,
    tokenizer,
    train,
    evalSets: { heldout: held },
    rewards: [vqaAccuracy()],
    loadImages: async (s) => images.get(s.id)!,
    imageCacheSize: 0,
    outputDir: o.out,
    modelDir: o.model,
    config: { ...o.grpo, seed: o.seed, totalSteps: Math.max(1, o.grpoSteps) },
    log: o.quiet ? undefined : io.err,
  });
  try {
    // ── SFT warm start ──
    const sftProgress = new Progress({ label: 'SFT warm start', total: o.sftSteps, unit: 'steps', quiet: o.quiet });
    const sft = await interruptible(
      (signal) =>
        trainer.sft({
          steps: o.sftSteps,
          batchSize: o.sftBatch,
          learningRate: o.sftLearningRate,
          warmupSteps: Math.min(5, o.sftSteps),
          signal,
          onStep: () => sftProgress.tick(),
        }),
      o.signal,
    );
    sftProgress.done();
    io.out(
      `SFT warm start: ${sft.length} steps of ${o.sftBatch}, cross-entropy ${sft[0]?.loss.toFixed(3) ?? '-'} → ${sft.at(-1)?.loss.toFixed(3) ?? '-'} (${elapsed().toFixed(1)}s)`,
    );
    const warmStart = await trainer.evaluate('heldout');
    io.out(accuracyLine('warm start', warmStart, held));
    const warmStartMismatched = await check('warm start');
    await o.inspect?.({ phase: 'warm-start', trainer, heldout: held, images });

    // ── GRPO ──
    const grpoProgress = new Progress({ label: 'GRPO', total: o.grpoSteps, unit: 'steps', quiet: o.quiet });
    const run = await trainer.run({ steps: o.grpoSteps, signal: o.signal, onStep: () => grpoProgress.tick() });
    grpoProgress.done();
    const rows = trainer.metrics.history.filter((m) => m.kind === 'grpo');
    const mean = (xs: number[]) => {
      const f = xs.filter(Number.isFinite);
      return f.length ? f.reduce((a, b) => a + b, 0) / f.length : NaN;
    };
    const first = rows.slice(0, 10),
      last = rows.slice(-10);
    io.out(
      `GRPO: ${run.stepsRun} steps of ${o.grpo.promptsPerStep}×${o.grpo.numGenerations} completions${run.stoppedBy === 'abort' ? ' (stopped early)' : ''}; reward ${mean(first.map((m) => m.rewardMean)).toFixed(3)} → ${mean(last.map((m) => m.rewardMean)).toFixed(3)} (first/last 10 steps) (${elapsed().toFixed(1)}s)`,
    );
    const grpo = await trainer.evaluate('heldout');
    io.out(accuracyLine('after GRPO', grpo, held));
    const grpoMismatched = await check('after GRPO');
    const seconds = Math.round(elapsed() * 10) / 10;
    const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)}`;
    io.out(
      `GRPO changed held-out accuracy by ${signed(grpo.overall - warmStart.overall)} points in ${seconds}s; metrics: ${path.join(o.out, 'metrics.jsonl')}`,
    );
    if (grpoMismatched && warmStartMismatched && !o.blankImages) {
      const gap = grpo.overall - grpoMismatched.overall;
      io.out(
        gap >= 5
          ? `the ${input} matters: shown the wrong ${input}, the trained policy drops ${gap.toFixed(2)} points (${grpo.overall.toFixed(2)}% → ${grpoMismatched.overall.toFixed(2)}%); the warm start drops ${(warmStart.overall - warmStartMismatched.overall).toFixed(2)}`
          : `the wrong ${input} costs the trained policy only ${gap.toFixed(2)} points (${grpo.overall.toFixed(2)}% → ${grpoMismatched.overall.toFixed(2)}%): it answers mostly from the question`,
      );
    }
    const result = { warmStartAccuracy: warmStart.overall, grpoAccuracy: grpo.overall, seconds };
    await writeFileAtomic(
      path.join(o.out, 'result.json'),
      JSON.stringify(
        {
          ...result,
          warmStartPerAnswerType: warmStart.perAnswerType,
          grpoPerAnswerType: grpo.perAnswerType,
          grpoSteps: run.stepsRun,
          ...(warmStartMismatched && grpoMismatched
            ? {
                warmStartMismatchedImageAccuracy: warmStartMismatched.overall,
                grpoMismatchedImageAccuracy: grpoMismatched.overall,
              }
            : {}),
          recipe: { ...o, signal: undefined, inspect: undefined },
        },
        null,
        2,
      ) + '\n',
    );
    await o.inspect?.({ phase: 'grpo', trainer, heldout: held, images });
    io.out(JSON.stringify(result));
    return {
      warmStart,
      grpo,
      seconds,
      stoppedEarly: run.stoppedBy === 'abort',
      metricsFile: path.join(o.out, 'metrics.jsonl'),
      ...(warmStartMismatched ? { warmStartMismatched } : {}),
      ...(grpoMismatched ? { grpoMismatched } : {}),
    };
  } finally {
    model.dispose();
  }
}

const usage = `Usage: vqalab demo [options]

SFT warm start, then GRPO, of the embedded tiny Qwen2-VL on simple synthetic scenes (one shape:
what colour is it, what shape is it), on CPU with fixed seeds. Prints held-out accuracy (official
VQA metric) after each phase, and again with every question shown another question's image (a
policy that reads the image drops to chance there). Ends with one JSON line
{"warmStartAccuracy", "grpoAccuracy", "seconds"}. Ctrl-C stops GRPO at a step boundary and still
evaluates.

Options:
  --out DIR          metrics.jsonl and result.json (default out/demo)
  --seed N           default 0
  --model DIR        a Qwen2-VL model folder to train instead of the embedded tiny model
  --device D         cpu (default), cuda or cuda:N (needs a build with the CUDA backend)
  --threads N        engine threads on CPU (default: all cores)
  --sft-steps N      default ${DEMO_DEFAULTS.sftSteps}
  --grpo-steps N     default ${DEMO_DEFAULTS.grpoSteps}
  --sft-lr X         SFT learning rate (default ${DEMO_DEFAULTS.sftLearningRate})
  --grpo-lr X        GRPO learning rate (default ${DEMO_DEFAULTS.grpo.learningRate}; a larger model wants far less)
  --train-images N   synthetic training images, 2 questions each (default ${DEMO_DEFAULTS.trainImages})
  --eval-questions N held-out questions (default ${DEMO_DEFAULTS.evalQuestions})
  --blank-images     the control: every image blank, only the question to learn from
  --video            video questions instead (the synthetic video set, one question a clip:
                     --train-images clips to train on, --eval-questions held out)
  --video-frames N   frames per clip, even (default ${DEMO_DEFAULTS.videoFrames})
  --video-families L comma-separated subset of ${SYNTH_VIDEO_FAMILIES.join(',')}
  --quiet            no progress lines
  -h, --help         show this help
`;

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}; got "${v}"`);
  return n;
}

function rate(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0 || n >= 1)
    throw new UsageError(`--${name} must be a number between 0 and 1 (e.g. 1e-5); got "${v}"`);
  return n;
}

export const demoCommand: Command = {
  name: 'demo',
  summary:
    'SFT warm start then GRPO of the embedded tiny Qwen2-VL on synthetic shapes: it learns to read the image (CPU, a few minutes)',
  usage,
  async run(argv) {
    let values: Record<string, string | boolean | undefined>;
    try {
      ({ values } = parseArgs({
        args: argv,
        strict: true,
        allowPositionals: false,
        options: {
          out: { type: 'string' },
          seed: { type: 'string' },
          threads: { type: 'string' },
          'sft-steps': { type: 'string' },
          'grpo-steps': { type: 'string' },
          'train-images': { type: 'string' },
          'eval-questions': { type: 'string' },
          quiet: { type: 'boolean' },
          model: { type: 'string' },
          device: { type: 'string' },
          'sft-lr': { type: 'string' },
          'grpo-lr': { type: 'string' },
          'blank-images': { type: 'boolean' },
          video: { type: 'boolean' },
          'video-frames': { type: 'string' },
          'video-families': { type: 'string' },
        },
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const opts: Partial<DemoOptions> = {
      quiet: Boolean(values.quiet),
      blankImages: Boolean(values['blank-images']),
      video: Boolean(values.video),
    };
    if (typeof values['video-families'] === 'string') {
      const fams = values['video-families'].split(',').map((f) => f.trim());
      const bad = fams.find((f) => !SYNTH_VIDEO_FAMILIES.includes(f as SynthVideoFamily));
      if (bad !== undefined)
        throw new UsageError(`--video-families: "${bad}" is not one of ${SYNTH_VIDEO_FAMILIES.join(', ')}`);
      opts.videoFamilies = fams as SynthVideoFamily[];
    }
    if (typeof values.out === 'string') opts.out = values.out;
    if (typeof values.model === 'string') opts.model = values.model;
    if (typeof values.device === 'string') opts.device = values.device;
    const sftLr = rate('sft-lr', values['sft-lr'] as string | undefined),
      grpoLr = rate('grpo-lr', values['grpo-lr'] as string | undefined);
    if (sftLr !== undefined) opts.sftLearningRate = sftLr;
    if (grpoLr !== undefined) opts.grpo = { learningRate: grpoLr };
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
    set('videoFrames', 'video-frames', 6);
    if (opts.videoFrames !== undefined && opts.videoFrames % 2 !== 0)
      throw new UsageError(`--video-frames must be even (whole temporal patches of 2); got ${opts.videoFrames}`);
    checkDemoTarget({ ...DEMO_DEFAULTS, ...opts });
    await runDemo(opts);
    return 0;
  },
};
