/** `vqalab export onnx`: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint (LoRA adapter merged) as ONNX files in the transformers.js layout. */
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { EXPORT_DTYPES, exportOnnx, type ExportDtype } from '../export/index.js';
import { dispatchSubcommand, type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const onnxUsage = `Usage: vqalab export onnx --out DIR [--model DIR] [--adapter DIR] [--dtype fp32|fp16|int8] [--web] [--overwrite]

Writes the model as ONNX in the layout transformers.js loads (onnxruntime-node, onnxruntime-web):
  DIR/onnx/vision_encoder.onnx, embed_tokens.onnx, decoder_model_merged.onnx (past key/values in and out)
  DIR/config.json, generation_config.json, preprocessor_config.json, tokenizer files
fp16 and int8 files carry transformers.js's suffixes (_fp16, _int8). A graph over 1.8 GB keeps its
weights in external data (onnx/<name>.onnx_data). Written to a temporary folder, renamed when done.

Options:
  --model DIR          a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model folder, a vqalab checkpoint or run folder, or a PEFT adapter
                       folder naming its local base (default: the embedded tiny model)
  --adapter DIR        a PEFT LoRA adapter of that model, merged into the weights
  --out DIR            the output folder (must not exist unless --overwrite)
  --dtype T            fp32 (default), fp16 (float16 weights, fp32 compute) or int8 (per-channel int8 weights)
  --web                add a one-page browser demo (DIR/index.html + DIR/web/: transformers.js and
                       onnxruntime-web, ~28 MB); serve DIR's parent over HTTP and open /<DIR name>/index.html
  --overwrite          replace DIR if it exists
  --threads N          engine threads while reading the weights
  --quiet              no progress lines
`;

const onnxCommand: Command = {
  name: 'onnx',
  summary: 'export a model as ONNX (transformers.js layout)',
  usage: onnxUsage,
  async run(argv) {
    let values: Record<string, string | boolean | undefined>;
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          model: { type: 'string' },
          adapter: { type: 'string' },
          out: { type: 'string' },
          dtype: { type: 'string' },
          overwrite: { type: 'boolean', default: false },
          web: { type: 'boolean', default: false },
          threads: { type: 'string' },
          quiet: { type: 'boolean', default: false },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError(`${(err as Error).message}\n\n${onnxUsage}`);
    }
    if (!values.out) throw new UsageError(`export onnx needs --out DIR\n\n${onnxUsage}`);
    const dtype = (values.dtype ?? 'fp32') as string;
    if (!(EXPORT_DTYPES as readonly string[]).includes(dtype))
      throw new UsageError(`--dtype must be one of ${EXPORT_DTYPES.join(', ')}, not ${JSON.stringify(dtype)}`);
    const threads = values.threads === undefined ? undefined : Number(values.threads);
    if (threads !== undefined && !(Number.isInteger(threads) && threads > 0))
      throw new UsageError(`--threads must be a positive integer, not ${JSON.stringify(values.threads)}`);
    const quiet = values.quiet === true;
    try {
      const r = await exportOnnx({
        model: (values.model as string | undefined) ?? DEFAULT_MODEL_DIR,
        out: values.out as string,
        dtype: dtype as ExportDtype,
        overwrite: values.overwrite === true,
        web: values.web === true,
        ...(values.adapter ? { adapter: values.adapter as string } : {}),
        ...(threads ? { threads } : {}),
        ...(quiet ? {} : { log: (l: string) => process.stderr.write(`${l}\n`) }),
      });
      if (!quiet) {
        for (const f of r.files) process.stdout.write(`${f.name.padEnd(40)} ${f.bytes} bytes\n`);
        process.stdout.write(
          `exported ${r.dtype}${r.adapterMerged ? ' (adapter merged)' : ''}${r.externalData ? ' with external data' : ''} to ${r.out} in ${r.seconds.toFixed(1)}s\n`,
        );
      }
      return 0;
    } catch (err) {
      throw new UsageError((err as Error).message, 1);
    }
  },
};

const usage = `Usage: vqalab export <command> [options]

Commands:
  onnx    ${onnxCommand.summary}
`;

export const exportCommand: Command = {
  name: 'export',
  summary: 'export a model for other runtimes (onnx)',
  usage,
  run: (argv) => dispatchSubcommand('export', usage, [onnxCommand], argv),
};
