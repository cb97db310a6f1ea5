/**
 * Issue 15's measurements on one multi-GPU host (scripts/gpu/bench-multi-gpu.sh runs them in one call):
 *
 *   node multi-gpu.js scaling DIR [--gpus 1,2,4] [--steps 3] [--per-gpu 16] [--g 8] [--max 16]
 *        DistributedTrainer over cuda:0..N-1 for each N, 16·N prompts × G 8 a step (one optimizer step),
 *        a warm-up step excluded, then `steps` steps: seconds per step, prompts per second, the scaling
 *        against N = 1 (the issue asks ≥ 1.85× at 2 GPUs, ≥ 3.6× at 4), each rank's peak pool memory.
 *   node multi-gpu.js equivalence DIR [--gpus 2]
 *        fp32 (run with VQALAB_CUDA_PRECISION=fp32): 2 steps on N ranks and on 1, the same prompts and
 *        seeds: the losses, and ‖w_N − w_1‖ / ‖w_1‖ of the saved weights (the issue: within 1e-6).
 *   node multi-gpu.js fault DIR [--gpus 2]
 *        the recipe's crash (rank 1 exits in step 1) and hang (rank 0 blocks in step 0, 60 s timeout):
 *        the error must name the rank and every rank process must be gone.
 *
 * `--device cpu` runs the ranks on the CPU (the cpu collective); `--same-gpu` puts every rank on cuda:0 with
 * the cpu collective (a one-GPU machine; NCCL refuses two ranks on one GPU).
 * ZeRO-1 (sharded AdamW state) is not implemented yet: the peak memory reported is plain data parallel's.
 * Prints one JSON line per measurement and a table.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DistributedTrainer } from '../src/distributed/driver.js';
import { native } from '../src/engine/native.js';
import type { Device } from '../src/engine/types.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

function flag(args: string[], name: string, def: string): string {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : def;
}
// --device cpu: N CPU ranks (the cpu collective), to try the packed tree on any machine
const onCpu = process.argv.includes('--device') && process.argv[process.argv.indexOf('--device') + 1] === 'cpu';
// --same-gpu: every rank on cuda:0, the cpu collective staging the gradients through host memory (NCCL
// refuses two ranks on one GPU): the multi-rank path of the CUDA engine on a one-GPU machine
const sameGpu = process.argv.includes('--same-gpu');
if (sameGpu) process.env.VQALAB_DIST_BACKEND = 'cpu'; // the ranks inherit it
const cudas = (n: number): Device[] =>
  Array.from({ length: n }, (_, i): Device => (onCpu ? 'cpu' : sameGpu ? 'cuda:0' : `cuda:${i}`));

async function scaling(dir: string, args: string[]): Promise<void> {
  const gpus = flag(args, '--gpus', '1,2,4').split(',').map(Number);
  const steps = Number(flag(args, '--steps', '3'));
  const perGpu = Number(flag(args, '--per-gpu', '16'));
  const g = Number(flag(args, '--g', '8'));
  const max = Number(flag(args, '--max', '16'));
  const rows: { n: number; sPerStep: number; promptsPerS: number; peakMiB: number[] }[] = [];
  for (const n of gpus) {
    const t0 = performance.now();
    const d = await DistributedTrainer.launch({
      devices: cudas(n),
      recipe: {
        module: path.join(here, 'multi-gpu-recipe.js'),
        args: { modelDir: dir, prompts: perGpu * n, g, maxTokens: max, side: 448, steps },
      },
      hashEvery: 0,
      log: (l) => out({ n, log: l }),
    });
    out({ n, launched: (performance.now() - t0) / 1000 });
    await d.step(); // warm-up
    const t = performance.now();
    const peaks: number[] = [];
    for (let i = 0; i < steps; i++) {
      const s = await d.step();
      peaks.push(s.metrics.gpuPeakMiB ?? Number.NaN);
      out({ n, step: s.step, seconds: s.metrics.stepSeconds, loss: s.metrics.loss, peakMiB: s.metrics.gpuPeakMiB });
    }
    const sPerStep = (performance.now() - t) / 1000 / steps;
    const hash = await d.checkWeights();
    await d.close();
    rows.push({ n, sPerStep, promptsPerS: (perGpu * n) / sPerStep, peakMiB: peaks });
    out({ n, sPerStep, promptsPerS: (perGpu * n) / sPerStep, hash });
  }
  const base = rows.find((r) => r.n === 1)?.promptsPerS ?? Number.NaN;
  process.stdout.write(
    `\n| GPUs | prompts × G | s / step | prompts / s | scaling | rank 0 peak MiB |\n|---|---|---|---|---|---|\n`,
  );
  for (const r of rows)
    process.stdout.write(
      `| ${r.n} | ${perGpu * r.n} × ${g} | ${r.sPerStep.toFixed(3)} | ${r.promptsPerS.toFixed(2)} | ${(r.promptsPerS / base).toFixed(2)}× | ${Math.max(...r.peakMiB).toFixed(0)} |\n`,
    );
}

function weightsOf(file: string): Map<string, Float32Array> {
  return new Map(Object.entries(native()._readSafetensors(file).tensors).map(([k, v]) => [k, v.data]));
}

async function equivalence(dir: string, args: string[]): Promise<void> {
  const n = Number(flag(args, '--gpus', '2'));
  const result: Record<number, { losses: number[]; ckpt: string }> = {};
  for (const ranks of [n, 1]) {
    const outDir = mkdtempSync(path.join(tmpdir(), `vqalab-eq${ranks}-`));
    const d = await DistributedTrainer.launch({
      devices: cudas(ranks),
      recipe: {
        module: path.join(here, 'multi-gpu-recipe.js'),
        args: { modelDir: dir, prompts: 16, g: 8, maxTokens: 16, side: 448, steps: 2, learningRate: 1e-5 },
      },
      outputDir: outDir,
    });
    const losses = [(await d.step()).metrics.loss, (await d.step()).metrics.loss];
    const ckpt = await d.save();
    await d.close();
    result[ranks] = { losses, ckpt };
    out({ ranks, losses, ckpt });
  }
  const a = weightsOf(path.join(result[n]!.ckpt, 'model', 'model.safetensors'));
  const b = weightsOf(path.join(result[1]!.ckpt, 'model', 'model.safetensors'));
  let num = 0,
    den = 0;
  for (const [k, x] of a) {
    const y = b.get(k)!;
    for (let i = 0; i < x.length; i++) {
      num += (x[i]! - y[i]!) ** 2;
      den += y[i]! ** 2;
    }
  }
  const relative = Math.sqrt(num / den);
  out({
    equivalence: { ranks: n, losses: result[n]!.losses, oneRank: result[1]!.losses, relative, pass: relative <= 1e-6 },
  });
}

async function fault(dir: string, args: string[]): Promise<void> {
  const n = Number(flag(args, '--gpus', '2'));
  for (const kind of ['crash', 'hang'] as const) {
    const d = await DistributedTrainer.launch({
      devices: cudas(n),
      recipe: {
        module: path.join(here, 'multi-gpu-recipe.js'),
        args: {
          modelDir: dir,
          prompts: 16 * n,
          g: 8,
          maxTokens: 16,
          side: 448,
          steps: 2,
          ...(kind === 'crash' ? { crash: { rank: 1, step: 1 } } : { hang: { rank: 0, step: 0 } }),
        },
      },
      timeoutMs: 60_000,
    });
    const pids = d.pids;
    const t = performance.now();
    let message = '';
    try {
      await d.step();
      await d.step();
    } catch (err) {
      message = (err as Error).message;
    }
    const alive = pids.filter((p) => {
      try {
        process.kill(p, 0);
        return true;
      } catch {
        return false;
      }
    });
    out({
      fault: kind,
      seconds: (performance.now() - t) / 1000,
      message,
      alive,
      pass: message !== '' && alive.length === 0,
    });
  }
}

const [cmd, dir, ...rest] = process.argv.slice(2);
const run =
  cmd === 'scaling'
    ? scaling(dir!, rest)
    : cmd === 'equivalence'
      ? equivalence(dir!, rest)
      : cmd === 'fault'
        ? fault(dir!, rest)
        : undefined;
if (!run) {
  process.stderr.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!);
  process.exit(2);
}
run.then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
