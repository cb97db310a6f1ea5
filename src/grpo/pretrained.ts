/**
 * `Trainer.fromPretrained(dir, { train, evalSets, rewards })`: a trainer from a model folder in one
 * call, with the defaults a notebook would otherwise write by hand. The folder is loaded as
 * `LocalPolicy.load` loads it (a Hugging Face checkpoint, a vqalab checkpoint or run folder, a PEFT
 * adapter): the engine model, the tokenizer, and the image processor configured by the folder's
 * preprocessor_config.json, whose processed images the trainer caches by sample. Datasets may be
 * given as they are (a `VqaDataset` or any iterable of samples). Accuracy is the trainer's default
 * rule for the data (`scoreAnswer`: the official VQA metric for ten annotator answers, normalised
 * exact match for fewer). Checkpoints (reference model, `Trainer.resume`) load with the same engine
 * options.
 *
 * The trainer class is `this` (the static is declared in trainer.ts), so this module imports the
 * trainer's types only.
 */
import type { VqaSample } from '../data/types.js';
import { loadModel } from '../engine/model.js';
import type { EngineModel, ImageInput, LoadOptions } from '../engine/types.js';
import { resolveModelFolder } from '../engine/folder.js';
import { LocalPolicy } from '../rollout/local.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { invalidParameterError } from '../util/validate.js';
import type { TrainerOptions } from './options.js';

/** A loaded model with its tokenizer and image processing: what `LocalPolicy` holds. */
export interface PretrainedParts {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  /** Process one image file (a `LocalPolicy` caches them by path). */
  image(file: string): Promise<ImageInput>;
}

export interface PretrainedOptions
  extends Omit<TrainerOptions, 'model' | 'tokenizer' | 'train' | 'evalSets' | 'loadImages'> {
  /** Training samples: a dataset, an array, any iterable. */
  train: Iterable<VqaSample>;
  /** Named evaluation splits for `evaluate(name)`, each a dataset or an iterable of samples. */
  evalSets?: Record<string, Iterable<VqaSample>>;
  /** Default: every image of the sample (`imagePaths`, else `imagePath`) through the folder's processor. */
  loadImages?: TrainerOptions['loadImages'];
  /** Engine CPU threads (default VQALAB_THREADS or all cores). */
  threads?: number;
  /** Longest prompt + completion the engine accepts (default: the model's). */
  maxSequenceLength?: number;
  /** Further engine load options (device, LoRA), for the model and the checkpoints loaded later. */
  load?: LoadOptions;
}

type TrainerClass<T> = new (options: TrainerOptions) => T;

/**
 * Build a trainer from a model folder (default loading: `LocalPolicy.load`) or from parts already
 * loaded (e.g. the `LocalPolicy` a notebook compared before training; the trainer then trains that
 * very model). Called as `Trainer.fromPretrained(...)`.
 */
export async function fromPretrained<T>(
  this: TrainerClass<T>,
  source: string | PretrainedParts,
  options: PretrainedOptions,
): Promise<T> {
  if (typeof this !== 'function') throw new Error('fromPretrained: call it as Trainer.fromPretrained(dir, options)');
  if (options === null || typeof options !== 'object')
    throw invalidParameterError('options', 'an object with train and rewards', options);
  if (
    options.train === null ||
    typeof options.train !== 'object' ||
    typeof (options.train as Iterable<VqaSample>)[Symbol.iterator] !== 'function'
  ) {
    throw invalidParameterError('options.train', 'a dataset or an iterable of samples', options.train);
  }
  const { train, evalSets, loadImages, threads, maxSequenceLength, load, ...rest } = options;
  const engine: LoadOptions = { ...load };
  if (threads !== undefined) engine.threads = threads;
  if (maxSequenceLength !== undefined) engine.maxSequenceLength = maxSequenceLength;

  let parts: PretrainedParts;
  let modelDir: string | undefined;
  if (typeof source === 'string') {
    // The trainer caches processed images by sample; the policy's own cache would hold them twice.
    modelDir = resolveModelFolder(source).modelDir;
    parts = await LocalPolicy.load(source, { threads, maxSequenceLength, load, imageCacheSize: 0 });
  } else if (
    source &&
    typeof source === 'object' &&
    'model' in source &&
    'tokenizer' in source &&
    typeof source.image === 'function'
  ) {
    parts = source;
  } else {
    throw invalidParameterError('source', 'a model folder or { model, tokenizer, image } (a LocalPolicy)', source);
  }

  const sets: Record<string, readonly VqaSample[]> | undefined = evalSets
    ? Object.fromEntries(Object.entries(evalSets).map(([name, set]) => [name, Array.isArray(set) ? set : [...set]]))
    : undefined;
  const image = parts.image.bind(parts);
  const trainerOptions: TrainerOptions = {
    loadImages:
      loadImages ?? ((sample) => Promise.all((sample.imagePaths ?? [sample.imagePath]).map((file) => image(file)))),
    // A checkpoint folder as LocalPolicy.load reads it (a model/ folder, or a LoRA adapter on its base).
    loadModel: (dir, { role }) => {
      const r = resolveModelFolder(dir);
      const lora = r.lora ?? engine.lora;
      return loadModel(r.modelDir, {
        ...engine,
        ...(lora ? { lora } : {}),
        ...(r.adapterDir ? { adapter: r.adapterDir } : {}),
        loadOptimizer: role === 'resume',
      });
    },
    mergeSize: parts.model.config?.vision?.spatialMergeSize,
    ...(modelDir !== undefined ? { modelDir } : {}),
    ...rest,
    model: parts.model,
    tokenizer: parts.tokenizer,
    train: Array.isArray(train) ? train : [...train],
    ...(sets ? { evalSets: sets } : {}),
  };
  try {
    return new this(trainerOptions);
  } catch (err) {
    if (typeof source === 'string') parts.model.dispose();
    throw err;
  }
}
