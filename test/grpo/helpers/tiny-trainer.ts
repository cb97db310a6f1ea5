/**
 * The set-up the trainer test files share over the tiny task (tiny-task.ts): fresh tiny models and
 * scratch folders removed when the file's tests end, the trainer's options with each file's
 * defaults, a short SFT warm start, and the weights as saved.
 */
import { after } from 'node:test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { EngineModel } from '../../../src/engine/types.js';
import { Trainer, type TrainerOptions } from '../../../src/grpo/trainer.js';
import type { GrpoConfig } from '../../../src/grpo/config.js';
import { loadTiny, tinyImages, tinyModel, tinySamples, tinyTokenizer } from './tiny-task.js';

/** What differs between the files that use the set-up. */
export interface TinyTrainerDefaults {
  /** Prefix of the scratch folders' names. */
  tmpPrefix: string;
  /** Size of the `val` eval set (tinySamples(n, 1000)). */
  evalSize: number;
  rewards: TrainerOptions['rewards'];
  /** config.seed */
  seed: number;
  /** Options every trainer of the file gets (before the call's own `extra`). */
  extra?: Partial<TrainerOptions>;
}

export interface TinyTrainer {
  /** A fresh tiny model, disposed when the file's tests end. */
  fresh(): Promise<EngineModel>;
  /** Disposes `model` when the file's tests end; returns it. */
  own<M extends EngineModel>(model: M): M;
  /** A scratch folder, removed when the file's tests end. */
  tmp(): string;
  /** The trainer's options over the tiny task: 32 training samples, 4 prompts × 4 completions of ≤ 3 tokens. */
  options(model: EngineModel, config?: Partial<GrpoConfig>, extra?: Partial<TrainerOptions>): TrainerOptions;
  /** The tiny model after a short SFT warm start (`steps` updates of 8: some answers right, the rest spread). */
  warmStarted(steps?: number): Promise<EngineModel>;
  /** The model's weights as saved (the bytes of model.safetensors). */
  weightsOf(model: EngineModel): Promise<Buffer>;
}

/** The set-up of one test file; registers an `after` hook that disposes its models and removes its folders. */
export function tinyTrainer(defaults: TinyTrainerDefaults): TinyTrainer {
  const tokenizer = tinyTokenizer();
  const models: EngineModel[] = [];
  const dirs: string[] = [];
  after(() => {
    for (const m of models) m.dispose();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const own = <M extends EngineModel>(model: M): M => {
    models.push(model);
    return model;
  };
  const fresh = async (): Promise<EngineModel> => own(await tinyModel());

  const tmp = (): string => {
    const d = mkdtempSync(path.join(tmpdir(), defaults.tmpPrefix));
    dirs.push(d);
    return d;
  };

  const options = (
    model: EngineModel,
    config: Partial<GrpoConfig> = {},
    extra: Partial<TrainerOptions> = {},
  ): TrainerOptions => ({
    model,
    tokenizer,
    train: tinySamples(32),
    evalSets: { val: tinySamples(defaults.evalSize, 1000) },
    rewards: defaults.rewards,
    loadImages: tinyImages,
    loadModel: async (dir, info) => own(await loadTiny(dir, info)),
    config: {
      promptsPerStep: 4,
      numGenerations: 4,
      maxCompletionLength: 3,
      learningRate: 1e-3,
      seed: defaults.seed,
      evalMaxTokens: 3,
      ...config,
    },
    ...defaults.extra,
    ...extra,
  });

  const warmStarted = async (steps = 2): Promise<EngineModel> => {
    const model = await fresh();
    await new Trainer(options(model, {}, { recordFacts: false })).sft({ steps, batchSize: 8, learningRate: 1e-3 });
    return model;
  };

  const weightsOf = async (model: EngineModel): Promise<Buffer> => {
    const dir = path.join(tmp(), 'weights');
    await model.save(dir);
    return readFileSync(path.join(dir, 'model.safetensors'));
  };

  return { fresh, own, tmp, options, warmStarted, weightsOf };
}
