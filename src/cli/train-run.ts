/**
 * The run behind `vqalab train` (src/cli/train.ts parses the options): loads the model and the data
 * (a Parquet split, or the embedded default's synthetic shapes), trains through the Trainer's public
 * API, prints one progress line per step and writes result.json under --out.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type GrpoConfig } from '../grpo/config.js';
import type { EvalSummary } from '../grpo/evaluate.js';
import { Trainer, type StepOutput } from '../grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { resolveModelFolder } from '../engine/folder.js';
import { writeFileAtomic } from '../util/fs.js';
import { interruptible } from '../util/interrupt.js';
import { formatDuration } from '../util/progress.js';
import { checkDemoTarget, DEMO_DEFAULTS } from './demo.js';
import { UsageError } from '../util/errors.js';
import { trainSetup } from './train-setup.js';

export interface TrainOptions {
  /** A Qwen2-VL model folder; default the embedded tiny model. */
  model?: string;
  /** Training Parquet; default: synthetic shapes (the embedded default). */
  dataPath?: string;
  /** Held-out Parquet for evaluation; default: synthetic held-out questions with the embedded data, else none. */
  valDataPath?: string;
  /** GRPO steps in all (a resumed run counts the steps already done). Default 100. */
  maxSteps?: number;
  device?: string;
  threads?: number;
  /** Train LoRA adapters of this rank (alpha = 2·rank, all linear modules of the language model) instead of all weights. */
  loraRank?: number;
  /** Trainer config (src/grpo/config.ts); `config` from a --config file. */
  config?: Partial<GrpoConfig>;
  /** Where metrics.jsonl, checkpoints/ and result.json go. Default out/train. */
  out?: string;
  resume?: boolean;
  /** Evaluate on the validation set every N steps (0: only at the end). */
  evalEvery?: number;
  /** Checkpoint every N steps (0: only at the end and on Ctrl-C). */
  checkpointEvery?: number;
  /** SFT warm-start steps before GRPO (default: the demo's 25 on the embedded data, else 0). */
  sftSteps?: number;
  /** The warm start's peak learning rate (default the demo's). */
  sftLearningRate?: number;
  /** Use at most N training / validation samples (the first N; synthetic: generate N). */
  limitTrain?: number;
  limitVal?: number;
  seed?: number;
  quiet?: boolean;
  signal?: AbortSignal;
  /** Ranks on this node (one per GPU: cuda:0 … cuda:N−1; with --device cpu, N CPU ranks): src/cli/train-dist.ts. */
  gpus?: number;
  /** Several hosts: nodes in the run, this one's rank (0 runs the driver), and where node 0 listens. */
  nodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  masterPort?: number;
}

export interface TrainResult {
  stepsRun: number;
  lastStep: number;
  interrupted: boolean;
  finalEval?: EvalSummary;
  /** The last checkpoint written (none when no update was ever taken). */
  checkpoint?: string;
  metricsFile: string;
  seconds: number;
}

type Write = (line: string) => void;

const _LORA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function fail(message: string, code = 2): never {
  throw new UsageError(message, code);
}

/** Read a --config file: a JSON object of trainer config fields. */
export function readTrainConfig(file: string): Partial<GrpoConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    fail(`--config ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    fail(`--config ${file}: invalid JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    fail(
      `--config ${file}: expected a JSON object of trainer config fields (docs/grpo.md), e.g. {"learningRate": 1e-5, "numGenerations": 8}`,
    );
  return raw as Partial<GrpoConfig>;
}

function fmt(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '-';
}

/** The per-step progress line. */
export function stepLine(m: StepOutput['metrics'], step: number, total: number, secondsPerStep: number): string {
  const left = Math.max(0, total - step - 1);
  return `step ${step + 1}/${total} | reward ${fmt(m.rewardMean, 3)} | accuracy ${fmt(m.accuracy, 3)} | ${fmt(m.tokensPerSecond, 0)} tok/s | ${fmt(m.stepSeconds, 2)}s/step | ETA ${formatDuration(left * secondsPerStep)}`;
}

export async function runTrain(
  o: TrainOptions,
  io: { out: Write; err: Write } = {
    out: (l) => process.stdout.write(l + '\n'),
    err: (l) => process.stderr.write(l + '\n'),
  },
): Promise<TrainResult> {
  const t0 = performance.now();
  const embeddedData = o.dataPath === undefined;
  if (embeddedData && o.valDataPath !== undefined)
    fail('--val-data-path needs --data-path (the embedded default brings its own held-out questions)');
  const modelArg = o.model ?? DEFAULT_MODEL_DIR;
  const device = o.device ?? 'cpu';
  const out = o.out ?? path.join('out', 'train');
  const maxSteps = o.maxSteps ?? (embeddedData ? DEMO_DEFAULTS.grpoSteps : 100);
  const seed = o.seed ?? 0;
  if (!existsSync(modelArg)) fail(`--model ${modelArg}: no such folder`);
  let resolved;
  try {
    resolved = resolveModelFolder(modelArg);
  } catch (err) {
    fail(`--model ${(err as Error).message}`);
  }
  checkDemoTarget({ device, model: resolved.modelDir });
  const hasRun = existsSync(path.join(out, 'checkpoints', 'latest'));
  if (o.resume && !hasRun)
    fail(
      `--resume: ${out} holds no checkpoint to continue (no ${path.join(out, 'checkpoints', 'latest')}); run without --resume to start, or pass the run's --out`,
    );
  if (!o.resume && hasRun)
    fail(
      `--out ${out} already holds a run (${path.join(out, 'checkpoints', 'latest')}); pass --resume to continue it, or choose another --out`,
    );

  const { config, tokenizer, train, val, lora, load, common } = await trainSetup(o, {
    modelArg,
    resolved,
    device,
    out,
    maxSteps,
    seed,
    embeddedData,
    log: o.quiet ? undefined : io.err,
  });
  let trainer: Trainer;
  try {
    if (o.resume) {
      trainer = await Trainer.resume(out, {
        ...common,
        tokenizer,
        ...(o.config ? { config: o.config } : {}),
        loadModel: (dir, { role }) => load(dir, { loadOptimizer: role === 'resume' }),
      });
    } else {
      const model = await load(modelArg);
      try {
        trainer = new Trainer({
          ...common,
          model,
          tokenizer,
          config,
          modelDir: resolved.modelDir,
          loadModel: (dir, { role }) => load(dir, { loadOptimizer: role === 'resume' }),
        });
      } catch (err) {
        model.dispose();
        throw err;
      }
    }
  } catch (err) {
    if (o.resume) fail(`--resume ${out}: ${(err as Error).message}`, 1);
    throw err;
  }
  const model = trainer.model;
  const name = modelArg === DEFAULT_MODEL_DIR ? 'tiny Qwen2-VL (embedded)' : path.basename(path.resolve(modelArg));
  let interrupted = false;
  try {
    const startStep = trainer.globalStep;
    io.out(
      `vqalab train: ${name} (${(model.numParameters.total / 1e6).toFixed(2)}M parameters${lora ? `, LoRA rank ${lora.rank}: ${(model.numParameters.trainable / 1e6).toFixed(2)}M trainable` : ''}, ${device}) on ${embeddedData ? 'synthetic shapes (embedded default)' : o.dataPath}: ${train.length} training samples${val ? `, ${val.length} validation` : ''}; ` +
        `${o.resume ? `resuming at step ${startStep}, ` : ''}${Math.max(0, maxSteps - startStep)} GRPO steps of ${trainer.config.promptsPerStep}×${trainer.config.numGenerations}; out ${out}`,
    );

    // SFT warm start (embedded default: the demo's), once: a resumed run has done it.
    const sftSteps = o.sftSteps ?? (embeddedData ? DEMO_DEFAULTS.sftSteps : 0);
    // A run interrupted during the warm start finishes it on --resume; one past it never repeats it.
    const sftLeft = startStep === 0 ? Math.max(0, sftSteps - trainer.sftSteps) : 0;
    if (sftLeft > 0) {
      const sft = await interruptible(
        (signal) =>
          trainer.sft({
            steps: sftLeft,
            batchSize: DEMO_DEFAULTS.sftBatch,
            learningRate: o.sftLearningRate ?? DEMO_DEFAULTS.sftLearningRate,
            warmupSteps: Math.min(5, sftSteps),
            signal,
          }),
        o.signal,
      );
      io.out(
        `SFT warm start: ${sft.length} steps, cross-entropy ${fmt(sft[0]?.loss ?? NaN, 3)} → ${fmt(sft.at(-1)?.loss ?? NaN, 3)}`,
      );
      if (sft.length < sftLeft) interrupted = true;
    }

    const evalLine = (e: EvalSummary) =>
      `eval after step ${trainer.globalStep}: ${e.split} accuracy ${e.overall.toFixed(2)}% (${e.n} questions; ${Object.entries(
        e.perAnswerType,
      )
        .map(([t, v]) => `${t} ${v.toFixed(2)}`)
        .join(', ')})`;
    // Checkpoints are taken here rather than by run(): a run whose groups all tied so far has
    // taken no update, and the engine has no optimizer state to save yet; that is a note, not a crash.
    let checkpoint: string | undefined;
    const save = async (): Promise<void> => {
      try {
        checkpoint = await trainer.save();
      } catch (err) {
        if (!/no optimizer state to save/.test((err as Error).message)) throw err;
        io.err(
          `no checkpoint after step ${trainer.globalStep}: no update has been taken yet (every group's rewards tied), so the weights are the starting ones`,
        );
      }
    };
    const remaining = Math.max(0, maxSteps - trainer.globalStep);
    const ckptEvery = o.checkpointEvery ?? 0;
    let sum = 0,
      n = 0;
    if (!interrupted && remaining > 0) {
      const run = await trainer.run({
        steps: remaining,
        signal: o.signal,
        dashboard: false,
        evalEvery: val ? (o.evalEvery ?? 0) : 0,
        onStep: async (s) => {
          if (Number.isFinite(s.metrics.stepSeconds)) {
            sum += s.metrics.stepSeconds;
            n++;
          }
          io.out(stepLine(s.metrics, s.step, maxSteps, n ? sum / n : NaN));
          if (ckptEvery > 0 && trainer.globalStep % ckptEvery === 0 && trainer.globalStep < maxSteps) await save();
        },
        onEval: (e) => io.out(evalLine(e)),
      });
      interrupted = run.stoppedBy === 'abort';
    }
    await save();
    let finalEval: EvalSummary | undefined;
    if (!interrupted && val) {
      finalEval = await trainer.evaluate('val');
      io.out(evalLine(finalEval));
    }
    const seconds = Math.round((performance.now() - t0) / 100) / 10;
    const result: TrainResult = {
      stepsRun: trainer.globalStep - startStep,
      lastStep: trainer.globalStep - 1,
      interrupted,
      ...(checkpoint ? { checkpoint } : {}),
      metricsFile: path.join(out, 'metrics.jsonl'),
      seconds,
      ...(finalEval ? { finalEval } : {}),
    };
    await writeFileAtomic(
      path.join(out, 'result.json'),
      JSON.stringify(
        {
          steps: trainer.globalStep,
          maxSteps,
          interrupted,
          checkpoint: checkpoint ?? null,
          seconds,
          ...(finalEval ? { valAccuracy: finalEval.overall, valPerAnswerType: finalEval.perAnswerType } : {}),
          model: modelArg,
          dataPath: o.dataPath ?? null,
          valDataPath: o.valDataPath ?? null,
          device,
          loraRank: o.loraRank ?? null,
          config: { ...trainer.config },
        },
        null,
        2,
      ) + '\n',
    );
    const where = checkpoint ? `checkpoint ${checkpoint}` : 'no checkpoint (no update taken)';
    io.out(
      interrupted
        ? `interrupted after step ${trainer.globalStep}: ${where}; continue with the same command and --resume`
        : `done: ${trainer.globalStep} steps in ${seconds}s; ${where}; metrics ${result.metricsFile}`,
    );
    return result;
  } finally {
    model.dispose();
  }
}
