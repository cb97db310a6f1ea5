/**
 * What `vqalab train` builds before it trains (src/cli/train-run.ts): the checked config, the tokenizer,
 * the training and validation samples (a Parquet split, or the embedded default's synthetic shapes), how
 * images are loaded, how a model folder is loaded on the device, and the Trainer's common options. The
 * one-process run and each rank of a multi-GPU run (src/cli/train-recipe.ts) build the same.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { VqaDataset } from '../data/dataset.js';
import { synthSamples } from '../data/synth.js';
import type { VqaSample } from '../data/types.js';
import { loadModel } from '../engine/index.js';
import { readConfig } from '../engine/config.js';
import { sampleVisuals, videoProcessorFor, type VideoProcessor } from '../vision/video.js';
import type { Device, EngineModel, ImageInput, LoadOptions } from '../engine/types.js';
import { scoreAnswer } from '../eval/vqa-metric.js';
import { grpoConfig, type GrpoConfig } from '../grpo/config.js';
import { vqaAccuracy } from '../reward/basic.js';
import { resolveModelFolder } from '../engine/folder.js';
import { processorOptionsFrom, videoProcessorOptionsFrom } from '../vision/processor-config.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../vision/qwen2vl.js';
import { DEMO_DEFAULTS } from './demo.js';
import { UsageError } from '../util/errors.js';
import type { TrainOptions } from './train-run.js';

const LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function fail(message: string, code = 2): never {
  throw new UsageError(message, code);
}

/** Where the run stands, as runTrain resolved it. */
export interface SetupContext {
  modelArg: string;
  resolved: ReturnType<typeof resolveModelFolder>;
  device: string;
  out: string;
  maxSteps: number;
  seed: number;
  embeddedData: boolean;
  log: ((line: string) => void) | undefined;
}

/** Load a Parquet split; errors name the flag, the file and what was expected. */
async function readSplit(flag: string, file: string, limit: number | undefined): Promise<VqaSample[]> {
  if (!existsSync(file)) fail(`--${flag} ${file}: no such file`);
  if (statSync(file).isDirectory())
    fail(`--${flag} ${file}: is a folder; expected a Parquet file (vqalab data convert / vqalab data synth write one)`);
  let ds: VqaDataset;
  try {
    ds = await VqaDataset.fromParquet(file);
  } catch (err) {
    fail(`--${flag} ${(err as Error).message.startsWith(file) ? '' : `${file}: `}${(err as Error).message}`);
  }
  if (ds.size === 0) fail(`--${flag} ${file}: no rows`);
  const n = Math.min(ds.size, limit ?? ds.size);
  const out: VqaSample[] = [];
  for (let i = 0; i < n; i++) {
    const s = ds.get(i);
    if (s.answers.length === 0)
      fail(`--${flag} ${file}: row ${i} (id ${s.id}): no answer; every row needs "answer" (or "answers")`);
    const visuals = sampleVisuals(s);
    for (const p of visuals.images) {
      if (!existsSync(p))
        fail(
          `--${flag} ${file}: row ${i} (id ${s.id}): image ${p} does not exist (image_path resolves against the Parquet file's folder)`,
        );
    }
    for (const p of visuals.videos) {
      if (!existsSync(p))
        fail(
          `--${flag} ${file}: row ${i} (id ${s.id}): video folder ${p} does not exist (video_path resolves against the Parquet file's folder)`,
        );
    }
    out.push(s);
  }
  return out;
}

/** Synthetic shapes with processed images in memory (the embedded default's data, as the demo makes it). */
async function synthSplit(
  questions: number,
  perImage: number,
  seed: number,
  processor: Qwen2VLImageProcessor,
  into: Map<string, ImageInput[]>,
): Promise<VqaSample[]> {
  const out: VqaSample[] = [];
  let current: ImageInput[] | undefined;
  const images = Math.ceil(questions / perImage);
  const d = DEMO_DEFAULTS;
  for await (const { sample, png } of synthSamples({
    images,
    questionsPerImage: perImage,
    seed,
    difficulty: d.difficulty,
    shapeCount: d.shapeCount,
    shapeSize: d.shapeSize,
    families: d.families,
  })) {
    if (png) {
      const p = await processor.process(png);
      current = [{ pixels: p.pixels, gridThw: p.gridThw }];
    }
    into.set(sample.id, current!);
    if (out.length < questions) out.push(sample);
  }
  return out;
}

/** The parts of a `vqalab train` run (see the file's comment). */
export async function trainSetup(o: TrainOptions, at: SetupContext) {
  const { modelArg, resolved, device, out, maxSteps, seed, embeddedData } = at;
  // Config: defaults of the embedded recipe, then the --config file; --max-steps spans the LR schedule.
  const config: Partial<GrpoConfig> = {
    ...(embeddedData ? DEMO_DEFAULTS.grpo : {}),
    seed,
    totalSteps: maxSteps,
    ...o.config,
  };
  // Check the config before loading anything: grpoConfig's errors name the field and the fix.
  try {
    grpoConfig(config);
  } catch (err) {
    fail(`trainer config${o.config ? ' (--config)' : ''}: ${(err as Error).message}`);
  }

  let tokenizer: VlmTokenizer;
  try {
    tokenizer = VlmTokenizer.load(resolved.tokenizerDir);
  } catch (err) {
    fail(`--model ${modelArg}: ${(err as Error).message}`);
  }
  const processor = new Qwen2VLImageProcessor(processorOptionsFrom(resolved.tokenizerDir));
  const { modelDir, tokenizerDir } = resolved;
  let videoProcessor: VideoProcessor | undefined;
  const memory = new Map<string, ImageInput[]>();
  let train: VqaSample[], val: VqaSample[] | undefined;
  if (embeddedData) {
    train = await synthSplit(o.limitTrain ?? DEMO_DEFAULTS.trainImages * 2, 2, seed + 1, processor, memory);
    val = await synthSplit(o.limitVal ?? DEMO_DEFAULTS.evalQuestions, 1, seed + 2, processor, memory);
  } else {
    train = await readSplit('data-path', o.dataPath!, o.limitTrain);
    val = o.valDataPath === undefined ? undefined : await readSplit('val-data-path', o.valDataPath, o.limitVal);
  }
  const loadImages = async (s: VqaSample): Promise<ImageInput[]> => {
    const held = memory.get(s.id);
    if (held) return held;
    const visuals = sampleVisuals(s);
    const images: ImageInput[] = [];
    for (const f of visuals.images) {
      try {
        const p = await processor.process(f);
        images.push({ pixels: p.pixels, gridThw: p.gridThw });
      } catch (err) {
        throw new Error(
          `sample ${s.id}${s.row === undefined ? '' : ` (row ${s.row})`}: cannot read image ${f}: ${(err as Error).message}`,
        );
      }
    }
    for (const d of visuals.videos) {
      try {
        videoProcessor ??= videoProcessorFor(
          readConfig(path.join(modelDir, 'config.json')).modelType,
          processorOptionsFrom(tokenizerDir),
          videoProcessorOptionsFrom(tokenizerDir),
        );
        const v = await videoProcessor.processFolder(d, s.videoFps);
        images.push({
          pixels: v.pixels,
          gridThw: v.gridThw,
          video: true,
          secondPerGrid: v.secondPerGrid,
          ...(v.timestamps ? { timestamps: v.timestamps } : {}),
        });
      } catch (err) {
        throw new Error(
          `sample ${s.id}${s.row === undefined ? '' : ` (row ${s.row})`}: cannot read video ${d}: ${(err as Error).message}`,
        );
      }
    }
    return images;
  };

  const lora: LoadOptions['lora'] = o.loraRank
    ? { rank: o.loraRank, alpha: 2 * o.loraRank, targetModules: LORA_TARGETS, vision: false, seed }
    : undefined;
  const load = async (dir: string, opts: { loadOptimizer?: boolean } = {}): Promise<EngineModel> => {
    const r = resolveModelFolder(dir);
    const l = r.lora ?? lora;
    return loadModel(r.modelDir, {
      device: device as Device,
      ...(o.threads === undefined ? {} : { threads: o.threads }),
      ...(l ? { lora: l } : {}),
      ...(r.adapterDir ? { adapter: r.adapterDir } : {}),
      ...(opts.loadOptimizer ? { loadOptimizer: true } : {}),
    });
  };
  const common = {
    train,
    ...(val ? { evalSets: { val } } : {}),
    rewards: [vqaAccuracy()],
    // Accuracy that fits the data: the official formula with 10 answers, exact match with fewer.
    vqaAccuracy: (p: string, a: readonly string[]) => scoreAnswer(p, a).accuracy,
    loadImages,
    imageCacheSize: embeddedData ? 0 : 512,
    outputDir: out,
    tokenizerDir: resolved.tokenizerDir,
    log: at.log,
  };
  return { config, tokenizer, train, val, lora, load, common };
}
