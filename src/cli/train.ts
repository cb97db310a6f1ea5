/**
 * `vqalab train`: the seed's training command. GRPO of a Qwen2-VL checkpoint folder on a Parquet
 * VQA table (the seed's 4 columns id, image_path, question, answer, or `vqalab data convert`'s
 * VQAv2 output), through the Trainer's public API only:
 *
 *     vqalab train --model DIR --data-path train.parquet --val-data-path val.parquet --max-steps 200
 *
 * With no --model and no --data-path it trains the embedded default: the tiny Qwen2-VL on
 * synthetic shapes, with the demo's recipe (an SFT warm start, then GRPO). One progress line per
 * step (reward, accuracy, tokens/s, ETA); metrics.jsonl, checkpoints/ and result.json under --out;
 * Ctrl-C stops at the next step boundary, saves a checkpoint and exits 130; --resume continues
 * (--max-steps counts all steps, so the same command with --resume finishes the run).
 */
import { parseArgs } from 'node:util';
import { runTrainAgent } from './train-agent.js';
import { readTrainConfig, runTrain, type TrainOptions } from './train-run.js';
import { runTrainDistributed } from './train-dist.js';
import { type Command } from './command.js';
import { UsageError } from '../util/errors.js';

export { readTrainConfig, runTrain, stepLine, type TrainOptions, type TrainResult } from './train-run.js';

const usage = `Usage: vqalab train [--model DIR] [--data-path FILE] [--val-data-path FILE] [--max-steps N] [options]

GRPO of a Qwen2-VL checkpoint folder on a Parquet VQA table: the seed's 4 columns (id, image_path,
question, answer) or vqalab data convert's VQAv2 output (10 answers each). Reward: VQA accuracy
(the official formula with 10 answers, normalised exact match with fewer; docs/vqa-metric.md).
Without --model and --data-path: the embedded tiny model on synthetic shapes (SFT warm start, then
GRPO), as vqalab demo. One line per step: reward, accuracy, tokens/s, ETA. Ctrl-C stops at the next
step boundary, saves a checkpoint and exits 130; --resume continues.

Model and data:
  --model DIR            a Qwen2-VL folder (config.json, weights, tokenizer), a vqalab checkpoint or
                         a PEFT adapter folder (default: the embedded tiny model)
  --data-path FILE       training Parquet (default: synthetic shapes)
  --val-data-path FILE   validation Parquet, evaluated every --eval-every steps and at the end
  --limit-train N        use the first N training samples
  --limit-val N          use the first N validation samples

Agents:
  --agent "CMD"          train through the gateway on what an agent command does (vqalab train-agent's options)
  --gateway URL          with --agent: on-policy remote rollouts on that \`vqalab serve --gateway-key-env\`
  --gateway-key-env VAR  the variable holding its admin key (weights are pushed there after each update)

Training:
  --max-steps N          GRPO steps in all, a resumed run included (default 100)
  --config FILE          JSON of the trainer config (docs/grpo.md), e.g. {"learningRate": 1e-5}
  --lora-rank R          train LoRA adapters of rank R (alpha 2R, all language-model linears)
  --sft-steps N          SFT warm-start steps first (default 25 on the embedded data, else 0)
  --sft-lr X             the warm start's learning rate (default 2e-3)
  --device D             cpu (default), cuda or cuda:N

Several GPUs and hosts (docs/multi-gpu.md):
  --gpus N               data parallel over N ranks on this node: cuda:0 … cuda:N-1 (N CPU ranks with --device cpu)
  --nodes K              hosts in the run (default 1); start the same command on each with its --node-rank
  --node-rank R          this host's place (0: the driver, which prints, writes --out and checkpoints)
  --master-addr HOST     where node 0 listens (with --nodes > 1)
  --master-port P        its port (with --nodes > 1)
  --threads N            engine threads on CPU (default: all cores)
  --seed N               default 0

Output:
  --out DIR              metrics.jsonl, checkpoints/, result.json (default out/train)
  --resume               continue the run in --out from its latest checkpoint
  --eval-every N         evaluate the validation set every N steps (default 0: at the end only)
  --checkpoint-every N   checkpoint every N steps (default 0: at the end and on Ctrl-C)
  --quiet                no trainer messages on stderr
  -h, --help             show this help
`;

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min)
    throw new UsageError(`--${name} must be an integer >= ${min}; got "${v}"`);
  return n;
}

export const trainCommand: Command = {
  name: 'train',
  summary:
    'GRPO of a Qwen2-VL folder on a Parquet VQA table (--model, --data-path, --max-steps); Ctrl-C saves, --resume continues',
  usage,
  async run(argv) {
    // `vqalab train --agent "CMD"`: an agent's rollouts through the training gateway (src/gateway).
    if (argv.some((a) => a === '--agent' || a.startsWith('--agent='))) return runTrainAgent(argv);
    let values: Record<string, string | boolean | undefined>;
    try {
      ({ values } = parseArgs({
        args: argv,
        strict: true,
        allowPositionals: false,
        options: {
          model: { type: 'string' },
          'data-path': { type: 'string' },
          'val-data-path': { type: 'string' },
          'max-steps': { type: 'string' },
          device: { type: 'string' },
          'lora-rank': { type: 'string' },
          config: { type: 'string' },
          out: { type: 'string' },
          resume: { type: 'boolean' },
          'eval-every': { type: 'string' },
          'checkpoint-every': { type: 'string' },
          'sft-steps': { type: 'string' },
          'sft-lr': { type: 'string' },
          'limit-train': { type: 'string' },
          'limit-val': { type: 'string' },
          threads: { type: 'string' },
          seed: { type: 'string' },
          quiet: { type: 'boolean' },
          gpus: { type: 'string' },
          nodes: { type: 'string' },
          'node-rank': { type: 'string' },
          'master-addr': { type: 'string' },
          'master-port': { type: 'string' },
        },
      }));
    } catch (err) {
      throw new UsageError(`${(err as Error).message}; run "vqalab train --help" for the options`);
    }
    const o: TrainOptions = { quiet: Boolean(values.quiet), resume: Boolean(values.resume) };
    const str = (k: string) => values[k] as string | undefined;
    if (str('model') !== undefined) o.model = str('model');
    if (str('data-path') !== undefined) o.dataPath = str('data-path');
    if (str('val-data-path') !== undefined) o.valDataPath = str('val-data-path');
    if (str('out') !== undefined) o.out = str('out');
    if (str('device') !== undefined) o.device = str('device');
    for (const [k, flag] of [
      ['model', 'model'],
      ['dataPath', 'data-path'],
      ['valDataPath', 'val-data-path'],
      ['out', 'out'],
    ] as const) {
      if (o[k] === '') throw new UsageError(`--${flag} needs a path; got an empty string`);
    }
    const set = (key: keyof TrainOptions, flag: string, min: number) => {
      const v = int(flag, str(flag), min);
      if (v !== undefined) (o as Record<string, unknown>)[key] = v;
    };
    set('maxSteps', 'max-steps', 1);
    set('loraRank', 'lora-rank', 1);
    set('evalEvery', 'eval-every', 0);
    set('checkpointEvery', 'checkpoint-every', 0);
    set('sftSteps', 'sft-steps', 0);
    if (str('sft-lr') !== undefined) {
      const v = str('sft-lr')!,
        x = Number(v);
      if (v.trim() === '' || !Number.isFinite(x) || x <= 0)
        throw new UsageError(`--sft-lr must be a number > 0; got "${v}"`);
      o.sftLearningRate = x;
    }
    set('limitTrain', 'limit-train', 1);
    set('limitVal', 'limit-val', 1);
    set('threads', 'threads', 1);
    set('seed', 'seed', 0);
    if (str('config') !== undefined) o.config = readTrainConfig(str('config')!);
    if (o.model === undefined && o.dataPath === undefined && o.valDataPath !== undefined) {
      throw new UsageError(
        '--val-data-path needs --data-path (the embedded default brings its own held-out questions)',
      );
    }
    set('gpus', 'gpus', 1);
    set('nodes', 'nodes', 1);
    set('nodeRank', 'node-rank', 0);
    set('masterPort', 'master-port', 1);
    if (str('master-addr') !== undefined) o.masterAddr = str('master-addr');
    const distributed = (o.gpus ?? 1) > 1 || (o.nodes ?? 1) > 1;
    const r = distributed
      ? await runTrainDistributed(o, {
          out: (l) => process.stdout.write(`${l}\n`),
          err: (l) => process.stderr.write(`${l}\n`),
        })
      : await runTrain(o);
    return r.interrupted ? 130 : 0;
  },
};
