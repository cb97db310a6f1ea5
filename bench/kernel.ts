/**
 * Kernel benchmark: start to ready, the vqalab preload, and a trivial cell's round trip after
 * warm-up (goal: ≤ 30 ms), for the vqalab kernel and, measured in the same run on the same
 * machine, stock tslab 1.0.22 and IPython's kernel as baselines.
 *
 *   npm run build && node dist/bench/kernel.js [--cells 40] [--warmup 5] [--kernels vqalab,tslab,ipykernel]
 *
 * A round trip is execute_request sent → execute_reply received and the kernel's `idle` status
 * seen: what a notebook waits for before it shows the cell as done. Kernels start in an empty
 * temporary directory, as for a notebook outside this package.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launcherPath } from '../kernel/kernelspec.js';
import { tslabDir } from '../kernel/tslab.js';
import { BenchClient, type KernelCommand } from './kernel-client.js';

interface Options { cells: number; warmup: number; kernels: string[] }

function parseArgs(argv: string[]): Options {
  const o: Options = { cells: 40, warmup: 5, kernels: ['vqalab', 'tslab', 'ipykernel'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--cells') o.cells = Number(argv[++i]);
    else if (a === '--warmup') o.warmup = Number(argv[++i]);
    else if (a === '--kernels') o.kernels = argv[++i]!.split(',');
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

function pythonWithIpykernel(): string | undefined {
  for (const py of [process.env.VQALAB_PYTHON, '/usr/bin/python3', 'python3']) {
    if (py && spawnSync(py, ['-c', 'import ipykernel'], { stdio: 'ignore' }).status === 0) return py;
  }
  return undefined;
}

function commands(cwd: string): Record<string, KernelCommand | undefined> {
  const py = pythonWithIpykernel();
  return {
    vqalab: { argv: [process.execPath, launcherPath, '--connection-file', '{connection_file}'], cwd },
    tslab: { argv: [process.execPath, path.join(tslabDir, 'bin', 'tslab'), 'kernel', '--config-path', '{connection_file}'], cwd },
    ipykernel: py ? { argv: [py, '-m', 'ipykernel_launcher', '-f', '{connection_file}'], cwd } : undefined,
  };
}

const TRIVIAL: Record<string, string> = { vqalab: '1 + 1', tslab: '1 + 1', ipykernel: '1 + 1' };

interface Result { name: string; readyMs: number; cellMs: number[]; stderr: string }

async function measure(name: string, cmd: KernelCommand, o: Options): Promise<Result> {
  const client = new BenchClient();
  const t0 = performance.now();
  await client.start(cmd);
  try {
    await client.waitReady();
    const readyMs = performance.now() - t0;
    for (let i = 0; i < o.warmup; i++) await client.execute(TRIVIAL[name]!);
    const cellMs: number[] = [];
    for (let i = 0; i < o.cells; i++) {
      const t = performance.now();
      await client.execute(TRIVIAL[name]!);
      cellMs.push(performance.now() - t);
    }
    return { name, readyMs, cellMs, stderr: client.stderr };
  } finally {
    await client.stop();
  }
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

const ms = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'vqalab-bench-nb-'));
  const cmds = commands(cwd);
  const results: Result[] = [];
  try {
    for (const name of o.kernels) {
      const cmd = cmds[name];
      if (!cmd) { process.stdout.write(`${name}: not available here, skipped\n`); continue; }
      results.push(await measure(name, cmd, o));
    }
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }

  const load = os.loadavg()[0]!.toFixed(1);
  process.stdout.write(`\nkernel benchmark: ${os.cpus().length} CPUs, load average ${load}, Node ${process.version}; `
    + `trivial cell "1 + 1", ${o.cells} round trips after ${o.warmup} warm-up\n\n`);
  process.stdout.write(`${'kernel'.padEnd(12)}${'start→ready'.padStart(13)}${'cell median'.padStart(14)}${'cell p90'.padStart(12)}${'cell min'.padStart(12)}\n`);
  for (const r of results) {
    process.stdout.write(`${r.name.padEnd(12)}${ms(r.readyMs).padStart(13)}${ms(quantile(r.cellMs, 0.5)).padStart(14)}${ms(quantile(r.cellMs, 0.9)).padStart(12)}${ms(Math.min(...r.cellMs)).padStart(12)}\n`);
  }
  const ours = results.find((r) => r.name === 'vqalab');
  if (!ours) return;
  const m = ours.stderr.match(/ready in (\d+) ms \(converter (\d+) ms, runtime import (\d+) ms, preload cell (\d+) ms; (\d+) names in scope\)/);
  if (m) {
    process.stdout.write(`\nvqalab start-up inside the kernel: ${ms(Number(m[1]))} to sockets bound = TypeScript converter ${ms(Number(m[2]))}`
      + ` + runtime import ${ms(Number(m[3]))} + preload cell ${ms(Number(m[4]))} (${m[5]} names in scope) + the rest\n`);
    process.stdout.write(`preload (runtime import + preload cell): ${ms(Number(m[3]) + Number(m[4]))}\n`);
  }
  const median = quantile(ours.cellMs, 0.5);
  for (const base of results.filter((r) => r !== ours)) {
    process.stdout.write(`ratio vqalab / ${base.name}: start ${(ours.readyMs / base.readyMs).toFixed(2)}×, cell median ${(median / quantile(base.cellMs, 0.5)).toFixed(2)}×\n`);
  }
  process.stdout.write(`goal: trivial cell ≤ 30 ms after warm-up: ${median <= 30 ? 'met' : 'NOT met'} (median ${ms(median)})\n`);
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`bench/kernel: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
