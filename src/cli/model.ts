/** `vqalab model init`: a model folder with random weights at a real architecture's dims (src/model/init-folder.ts). */
import { parseArgs } from 'node:util';
import { initModelFolder, PRESET_NAMES, type WeightDtype } from '../model/init-folder.js';
import { MODEL_PRESETS, type DimOverrides } from '../model/presets.js';
import { FAMILY_PRESETS } from '../model/presets-family.js';
import { Progress } from '../util/progress.js';
import { interruptible } from '../util/interrupt.js';
import { dispatchSubcommand, type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const presetLines = [
  ...Object.values(MODEL_PRESETS).map((p) => `  ${p.name.padEnd(14)} ${p.description}`),
  ...Object.entries(FAMILY_PRESETS).map(([name, p]) => `  ${name.padEnd(14)} ${p.description}`),
].join('\n');

const initUsage = `Usage: vqalab model init DIR [--preset NAME] [size overrides] [options]

Writes a model folder with random weights at a real architecture's dimensions: config.json exactly
as the Hugging Face checkpoint's, model.safetensors (bf16, streamed: a few MiB of memory whatever
the size), and the tokenizer-side files of the preset's released Instruct checkpoint: the real Qwen
BPE tokenizer (151,643 tokens) with that family's added tokens (Qwen2-VL 151643-151656, Qwen2.5-VL
to 151664 with <tool_call> and FIM, Qwen3-VL to 151668 with <tool_response>, <think>, </think>),
its tokenizer_config.json and chat template, generation_config.json and preprocessor_config.json
(Qwen3-VL also video_preprocessor_config.json). The folder loads, tokenises, templates, samples,
trains and checkpoints exactly as a downloaded checkpoint would: check a pipeline before
downloading weights.

Presets:
${presetLines}

Size overrides (the config keeps the checkpoint's form with these numbers):
  --hidden N          hidden_size
  --layers N          num_hidden_layers
  --heads N           num_attention_heads
  --kv-heads N        num_key_value_heads
  --intermediate N    intermediate_size (MLP)
  --vision-depth N    vision_config.depth
  --vision-dim N      vision_config.embed_dim (Qwen2-VL) / hidden_size (Qwen2.5-VL, Qwen3-VL)
  --vision-heads N    vision_config.num_heads
  --vision-intermediate N  vision_config.intermediate_size (Qwen2.5-VL, Qwen3-VL; default scaled with --vision-dim)
  --head-dim N        text_config.head_dim (Qwen3-VL; default --hidden / --heads when either is given)
  --vocab N           vocab_size (at least the tokenizer's ids: 151657, Qwen2.5-VL 151665, Qwen3-VL 151669)
  --max-positions N   max_position_embeddings
  --init-std X        initializer_range (default the checkpoint's 0.02)

Options:
  --preset NAME       default qwen2-vl-2b
  --seed N            seed of the weights (default 0; same seed → same bytes)
  --dtype D           bf16 (default, as released) or f32
  --max-pixels N      preprocessor max_pixels / size.longest_edge (default the checkpoint's: 12845056, Qwen3-VL 16777216)
  --threads N         worker threads drawing the weights (default: all cores; same bytes either way)
  --force             replace DIR if it exists and is not empty
  --quiet             no progress line
  -h, --help          show this help
`;

const usage = `Usage: vqalab model <command> [options]

Commands:
  init DIR    a model folder with random weights at a real architecture's dims (--preset qwen2-vl-2b)

Run "vqalab model init --help" for its options.
`;

function intFlag(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min)
    throw new UsageError(`--${name} must be an integer >= ${min}; got "${v}"`);
  return n;
}

const initCommand: Command = {
  name: 'init',
  summary: "write a model folder with random weights at a real architecture's dims",
  usage: initUsage,
  async run(argv) {
    let values: Record<string, string | boolean | undefined>, positionals: string[];
    try {
      ({ values, positionals } = parseArgs({
        args: argv,
        strict: true,
        allowPositionals: true,
        options: {
          preset: { type: 'string' },
          seed: { type: 'string' },
          dtype: { type: 'string' },
          'max-pixels': { type: 'string' },
          hidden: { type: 'string' },
          layers: { type: 'string' },
          heads: { type: 'string' },
          'kv-heads': { type: 'string' },
          intermediate: { type: 'string' },
          'vision-depth': { type: 'string' },
          'vision-dim': { type: 'string' },
          'vision-heads': { type: 'string' },
          'vision-intermediate': { type: 'string' },
          'head-dim': { type: 'string' },
          vocab: { type: 'string' },
          'max-positions': { type: 'string' },
          'init-std': { type: 'string' },
          threads: { type: 'string' },
          force: { type: 'boolean' },
          quiet: { type: 'boolean' },
        },
      }));
    } catch (err) {
      throw new UsageError(`${(err as Error).message}; run "vqalab model init --help" for the options`);
    }
    if (positionals.length !== 1)
      throw new UsageError(
        positionals.length === 0
          ? 'give the folder to write: vqalab model init DIR'
          : `expected one folder, got ${positionals.length}: ${positionals.join(' ')}`,
      );
    const preset = (values.preset as string | undefined) ?? 'qwen2-vl-2b';
    if (!PRESET_NAMES.includes(preset))
      throw new UsageError(`--preset must be one of ${PRESET_NAMES.join(', ')}; got "${preset}"`);
    const dtypeFlag = (values.dtype as string | undefined) ?? 'bf16';
    if (dtypeFlag !== 'bf16' && dtypeFlag !== 'f32')
      throw new UsageError(`--dtype must be bf16 or f32; got "${dtypeFlag}"`);
    const o: DimOverrides = {};
    const set = (key: keyof DimOverrides, flag: string, min: number) => {
      const v = intFlag(flag, values[flag] as string | undefined, min);
      if (v !== undefined) (o as Record<string, unknown>)[key] = v;
    };
    set('hidden', 'hidden', 2);
    set('layers', 'layers', 1);
    set('heads', 'heads', 1);
    set('kvHeads', 'kv-heads', 1);
    set('intermediate', 'intermediate', 1);
    set('visionDepth', 'vision-depth', 1);
    set('visionDim', 'vision-dim', 4);
    set('visionHeads', 'vision-heads', 1);
    set('vocab', 'vocab', 1);
    set('maxPositions', 'max-positions', 16);
    set('visionIntermediate', 'vision-intermediate', 1);
    set('headDim', 'head-dim', 2);
    if (values['init-std'] !== undefined) {
      const x = Number(values['init-std']);
      if (!Number.isFinite(x) || x <= 0)
        throw new UsageError(`--init-std must be a positive number; got "${values['init-std']}"`);
      o.initStd = x;
    }
    const seed = intFlag('seed', values.seed as string | undefined, 0) ?? 0;
    const maxPixels = intFlag('max-pixels', values['max-pixels'] as string | undefined, 3136);
    const threads = intFlag('threads', values.threads as string | undefined, 1);
    const quiet = Boolean(values.quiet);
    let progress: Progress | undefined;
    let reported = 0;
    let result;
    try {
      result = await interruptible((signal) =>
        initModelFolder(positionals[0]!, {
          preset,
          overrides: o,
          seed,
          dtype: dtypeFlag.toUpperCase() as WeightDtype,
          force: Boolean(values.force),
          signal,
          ...(maxPixels === undefined ? {} : { maxPixels }),
          ...(threads === undefined ? {} : { threads }),
          onProgress: (done, total) => {
            progress ??= new Progress({ label: 'weights', total: Math.ceil(total / 1e6), unit: 'M params', quiet });
            const m = Math.floor(done / 1e6);
            if (m > reported) {
              progress.tick(m - reported);
              reported = m;
            }
          },
        }),
      );
    } catch (err) {
      const e = err as Error;
      if (e.name === 'InterruptedError') throw new UsageError('interrupted; nothing was written', 130);
      throw new UsageError(e.message, 1);
    } finally {
      progress?.done();
    }
    const d = result.dims;
    process.stdout.write(
      `wrote ${result.dir}: ${preset}${Object.keys(o).length ? ' (with overrides)' : ''}, ${(result.parameters / 1e9).toFixed(3)} B parameters ` +
        `(${d.numHiddenLayers} layers × ${d.hiddenSize}, ${d.numAttentionHeads} heads / ${d.numKeyValueHeads} KV, MLP ${d.intermediateSize}; vision ${d.vision.depth} × ${'embedDim' in d.vision ? d.vision.embedDim : d.vision.hiddenSize}; vocab ${d.vocabSize}), ` +
        `${(result.bytes / 2 ** 30).toFixed(2)} GiB ${dtypeFlag}, seed ${seed}, in ${result.seconds.toFixed(1)}s\n`,
    );
    return 0;
  },
};

export const modelCommand: Command = {
  name: 'model',
  summary:
    "model folders: init DIR --preset qwen2-vl-2b writes random weights at a real architecture's dims with the real tokenizer",
  usage,
  run: (argv) => dispatchSubcommand('model', usage, [initCommand], argv),
};
