/**
 * `vqalab train --gpus N [--nodes K --node-rank R --master-addr HOST --master-port P]`: the same run as
 * one process (src/cli/train-run.ts), data-parallel over N ranks per node (src/distributed). Node 0 is
 * the driver: it prints the progress lines and writes metrics.jsonl and checkpoints under --out; the
 * other nodes only start and watch their ranks. A rank's failure stops every node with a message naming
 * it; --resume continues from the last checkpoint on any number of GPUs.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DistributedTrainer } from '../distributed/driver.js';
import { runNodeAgent } from '../distributed/launcher.js';
import type { Device } from '../engine/types.js';
import { UsageError } from '../util/errors.js';
import { interruptible } from '../util/interrupt.js';
import { DEMO_DEFAULTS } from './demo.js';
import { stepLine, type TrainOptions, type TrainResult } from './train-run.js';

type Write = (line: string) => void;

const RECIPE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'train-recipe.js');

export async function runTrainDistributed(o: TrainOptions, io: { out: Write; err: Write }): Promise<TrainResult> {
  const t0 = performance.now();
  const gpus = o.gpus ?? 1;
  const nodes = o.nodes ?? 1;
  const nodeRank = o.nodeRank ?? 0;
  if (nodes > 1 && (o.masterAddr === undefined || o.masterPort === undefined))
    throw new UsageError('--nodes > 1 needs --master-addr and --master-port (where node 0 listens)');
  if (nodeRank >= nodes) throw new UsageError(`--node-rank ${nodeRank} must be below --nodes ${nodes}`);
  const devices = Array.from({ length: gpus }, (_, i): Device => (o.device === 'cpu' ? 'cpu' : `cuda:${i}`));
  const out = o.out ?? path.join('out', 'train');
  const metricsFile = path.join(out, 'metrics.jsonl');
  if (nodeRank > 0) {
    const code = await runNodeAgent({
      devices,
      nodeRank,
      worldSize: nodes * gpus,
      masterAddr: o.masterAddr!,
      masterPort: o.masterPort!,
      timeoutMs: 300_000,
      log: io.err,
    });
    if (code !== 0) throw new UsageError('the run was stopped (see the messages above)', 1);
    return { stepsRun: 0, lastStep: -1, interrupted: false, metricsFile, seconds: (performance.now() - t0) / 1000 };
  }
  const hasRun = existsSync(path.join(out, 'checkpoints', 'latest'));
  if (o.resume && !hasRun) throw new UsageError(`--resume: ${out} holds no checkpoint to continue`);
  if (!o.resume && hasRun)
    throw new UsageError(`--out ${out} already holds a run; pass --resume to continue it, or choose another --out`);
  const embeddedData = o.dataPath === undefined;
  const maxSteps = o.maxSteps ?? (embeddedData ? DEMO_DEFAULTS.grpoSteps : 100);
  const { signal: _notSent, ...args } = o;
  const d = await DistributedTrainer.launch({
    devices,
    recipe: { module: RECIPE, args },
    outputDir: out,
    ...(o.resume ? { resume: out } : {}),
    nodes,
    ...(o.masterAddr !== undefined ? { masterAddr: o.masterAddr } : {}),
    ...(o.masterPort !== undefined ? { masterPort: o.masterPort } : {}),
    log: io.err,
  });
  const startStep = d.globalStep;
  let interrupted = false;
  let checkpoint: string | undefined;
  try {
    io.out(
      `vqalab train: ${d.worldSize} ranks (${nodes} node${nodes > 1 ? 's' : ''} × ${gpus}); ${o.resume ? `resuming at step ${startStep}, ` : ''}${Math.max(0, maxSteps - startStep)} GRPO steps of ${d.config.promptsPerStep}×${d.config.numGenerations}; out ${out}`,
    );
    const sftSteps = o.sftSteps ?? (embeddedData ? DEMO_DEFAULTS.sftSteps : 0);
    const sftLeft = startStep === 0 ? Math.max(0, sftSteps - d.sftSteps) : 0;
    if (sftLeft > 0)
      await d.sft({
        steps: sftLeft,
        batchSize: DEMO_DEFAULTS.sftBatch,
        learningRate: o.sftLearningRate ?? DEMO_DEFAULTS.sftLearningRate,
        warmupSteps: Math.min(5, sftSteps),
      });
    let sum = 0,
      n = 0;
    const run = await interruptible(
      (signal) =>
        d.run({
          steps: Math.max(0, maxSteps - startStep),
          checkpointEvery: o.checkpointEvery ?? 0,
          handleSigint: false,
          ...(signal ? { signal } : {}),
          onStep: (s) => {
            if (Number.isFinite(s.metrics.stepSeconds)) {
              sum += s.metrics.stepSeconds;
              n++;
            }
            io.out(stepLine(s.metrics, s.step, maxSteps, n ? sum / n : Number.NaN));
          },
        }),
      o.signal,
    );
    interrupted = run.stoppedBy === 'abort';
    checkpoint = run.checkpoints.at(-1);
  } finally {
    await d.close();
  }
  const seconds = Math.round((performance.now() - t0) / 100) / 10;
  io.out(
    interrupted
      ? `interrupted after step ${d.globalStep}: checkpoint ${checkpoint ?? 'none'}; continue with --resume (any number of GPUs)`
      : `done: ${d.globalStep} steps in ${seconds}s on ${d.worldSize} ranks; checkpoint ${checkpoint ?? 'none'}; metrics ${metricsFile}`,
  );
  return {
    stepsRun: d.globalStep - startStep,
    lastStep: d.globalStep - 1,
    interrupted,
    ...(checkpoint ? { checkpoint } : {}),
    metricsFile,
    seconds,
  };
}
