/**
 * Kernel benchmark: start to ready, start to the first completion reply, the vqalab preload, and
 * a trivial cell's round trip after warm-up (goal: ≤ 30 ms), for the vqalab kernel and, measured in
 * the same run on the same machine, stock tslab 1.0.22 and IPython's kernel as baselines.
 * Start-up goal: ≤ 1.3× stock tslab for both start-up figures.
 *
 *   npm run build && node dist/bench/kernel.js [--starts 5] [--cells 40] [--warmup 5] [--kernels vqalab,tslab,ipykernel]
 *
 * `--kernels` may also name vqalab-plain: the vqalab kernel with VQALAB_KERNEL_FULL_TYPES=1 and
 * VQALAB_KERNEL_CODE_CACHE=0, i.e. without its start-up measures (kernel/declarations.ts,
 * kernel/code-cache.ts), for a before/after in the same run.
 *
 * Each kernel is started `--starts` times, the kernels taking turns (vqalab, tslab, ipykernel,
 * vqalab, ...) so that a change in the machine's load falls on all of them; the medians are shown.
 * The kernel process's CPU time at the same two moments is shown too (Linux): on a busy machine
 * wall times swing several-fold from start to start, CPU time much less.
 * The first completion is `Math.` at the end of the code (the same request for every kernel),
 * sent right after the first kernel_info reply; for vqalab, `vqalab.` is completed too, to show
 * the runtime's names are typed from the start.
 * A round trip is execute_request sent → execute_reply received and the kernel's `idle` status
 * seen: what a notebook waits for before it shows the cell as done. Kernels start in an empty
 * temporary directory, as for a notebook outside this package.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launcherPath } from '../src/jupyter/kernelspec.js';
import { tslabDir } from '../kernel/tslab.js';
import { BenchClient, type KernelCommand } from './kernel-client.js';

interface Options {
  cells: number;
  warmup: number;
  starts: number;
  kernels: string[];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { cells: 40, warmup: 5, starts: 5, kernels: ['vqalab', 'tslab', 'ipykernel'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--cells') o.cells = Number(argv[++i]);
    else if (a === '--warmup') o.warmup = Number(argv[++i]);
    else if (a === '--starts') o.starts = Math.max(1, Number(argv[++i]));
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
    // The same kernel without its two start-up measures: the original declarations (third-party
    // types in full) and no V8 code cache for the TypeScript compiler.
    'vqalab-plain': {
      argv: [process.execPath, launcherPath, '--connection-file', '{connection_file}'],
      cwd,
      env: { ...process.env, VQALAB_KERNEL_FULL_TYPES: '1', VQALAB_KERNEL_CODE_CACHE: '0' },
    },
    tslab: {
      argv: [process.execPath, path.join(tslabDir, 'bin', 'tslab'), 'kernel', '--config-path', '{connection_file}'],
      cwd,
    },
    ipykernel: py ? { argv: [py, '-m', 'ipykernel_launcher', '-f', '{connection_file}'], cwd } : undefined,
  };
}

const TRIVIAL: Record<string, string> = {
  vqalab: '1 + 1',
  'vqalab-plain': '1 + 1',
  tslab: '1 + 1',
  ipykernel: '1 + 1',
};

interface Result {
  name: string;
  readyMs: number[];
  completeMs: number[];
  cellMs: number[];
  stderr: string;
  runtimeCompletions?: number;
  /** The kernel process's CPU time (user + system) at ready and at the first completion reply, where /proc has it. */
  readyCpuMs: number[];
  completeCpuMs: number[];
}

/** A complete_request at the end of `code`; its matches (throws when the kernel answers an error). */
async function complete(client: BenchClient, code: string): Promise<string[]> {
  // A kernel that never answers (stock tslab's converter can wedge) fails the run instead of hanging it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no complete_reply within 120 s:\n${client.stderr.slice(-2000)}`)),
      120_000,
    );
  });
  const reply = await Promise.race([
    client.request('complete_request', { code, cursor_pos: code.length }, false),
    timeout,
  ]).finally(() => clearTimeout(timer));
  const c = reply.content as { status?: string; matches?: string[] };
  if (c.status !== 'ok' || !Array.isArray(c.matches)) throw new Error(`complete_request failed: ${JSON.stringify(c)}`);
  return c.matches;
}

/** One start: start→ready, start→first completion reply; with `cells`, the round trips too. */
async function measure(
  name: string,
  cmd: KernelCommand,
  o: Options,
  into: Result | undefined,
  cells: boolean,
): Promise<Result> {
  const client = new BenchClient();
  const r: Result = into ?? {
    name,
    readyMs: [],
    completeMs: [],
    cellMs: [],
    stderr: '',
    readyCpuMs: [],
    completeCpuMs: [],
  };
  const t0 = performance.now();
  await client.start(cmd);
  try {
    await client.waitReady();
    r.readyMs.push(performance.now() - t0);
    const readyCpu = client.cpuMs();
    const matches = await complete(client, 'Math.');
    r.completeMs.push(performance.now() - t0);
    const completeCpu = client.cpuMs();
    if (readyCpu !== undefined && completeCpu !== undefined) {
      r.readyCpuMs.push(readyCpu);
      r.completeCpuMs.push(completeCpu);
    }
    if (!matches.includes('max'))
      throw new Error(`${name}: completing "Math." did not offer max: ${JSON.stringify(matches)}`);
    if (name.startsWith('vqalab')) r.runtimeCompletions = (await complete(client, 'vqalab.')).length;
    r.stderr = client.stderr;
    if (!cells) return r;
    for (let i = 0; i < o.warmup; i++) await client.execute(TRIVIAL[name]!);
    for (let i = 0; i < o.cells; i++) {
      const t = performance.now();
      await client.execute(TRIVIAL[name]!);
      r.cellMs.push(performance.now() - t);
    }
    return r;
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
  const byName = new Map<string, Result>();
  try {
    for (let round = 0; round < o.starts; round++) {
      for (const name of o.kernels) {
        const cmd = cmds[name];
        if (!cmd) {
          if (round === 0) process.stdout.write(`${name}: not available here, skipped\n`);
          continue;
        }
        byName.set(name, await measure(name, cmd, o, byName.get(name), round === 0));
      }
    }
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }

  const load = os.loadavg()[0]!.toFixed(1);
  const results = [...byName.values()];
  process.stdout.write(
    `\nkernel benchmark: ${os.cpus().length} CPUs, load average ${load}, Node ${process.version}; ` +
      `start-up: median of ${o.starts} starts per kernel (taking turns); trivial cell "1 + 1", ${o.cells} round trips after ${o.warmup} warm-up\n\n`,
  );
  process.stdout.write(
    `${'kernel'.padEnd(18)}${'start→ready'.padStart(13)}${'start→completion'.padStart(18)}${'cell median'.padStart(14)}${'cell p90'.padStart(12)}${'cell min'.padStart(12)}\n`,
  );
  for (const r of results) {
    process.stdout.write(
      `${r.name.padEnd(18)}${ms(quantile(r.readyMs, 0.5)).padStart(13)}${ms(quantile(r.completeMs, 0.5)).padStart(18)}${ms(quantile(r.cellMs, 0.5)).padStart(14)}${ms(quantile(r.cellMs, 0.9)).padStart(12)}${ms(Math.min(...r.cellMs)).padStart(12)}\n`,
    );
  }
  for (const r of results)
    process.stdout.write(
      `${r.name} starts (ready / completion): ${r.readyMs.map((x, i) => `${ms(x)} / ${ms(r.completeMs[i]!)}`).join(', ')}\n`,
    );
  const withCpu = results.filter((r) => r.completeCpuMs.length === r.completeMs.length && r.completeCpuMs.length > 0);
  if (withCpu.length > 0) {
    process.stdout.write(
      `\nkernel process CPU time (user + system, from /proc; hardly moved by the machine's load), median of ${o.starts} starts:\n`,
    );
    process.stdout.write(`${'kernel'.padEnd(18)}${'CPU to ready'.padStart(14)}${'CPU to completion'.padStart(19)}\n`);
    for (const r of withCpu)
      process.stdout.write(
        `${r.name.padEnd(18)}${ms(quantile(r.readyCpuMs, 0.5)).padStart(14)}${ms(quantile(r.completeCpuMs, 0.5)).padStart(19)}\n`,
      );
  }
  const ours = results.find((r) => r.name === 'vqalab');
  if (!ours) return;
  const m = ours.stderr.match(/ready in (\d+) ms \(converter (\d+) ms, prelude (\d+) ms; (\d+) names in scope[;)]/);
  if (m) {
    process.stdout.write(
      `\nvqalab start-up inside the kernel (last start): ${ms(Number(m[1]))} to sockets bound = TypeScript converter ${ms(Number(m[2]))}` +
        ` + prelude declared ${ms(Number(m[3]))} (${m[4]} names in scope) + the rest; the runtime's declarations are type-checked with the first completion or cell, its code imported at the first execute_request\n`,
    );
  }
  const cache = ours.stderr.match(/compiler code cache ([a-z ]+)\)/);
  if (cache) process.stdout.write(`TypeScript compiler's V8 code cache (last start): ${cache[1]}\n`);
  process.stdout.write(`completing "vqalab." right after start: ${ours.runtimeCompletions} names\n`);
  const median = quantile(ours.cellMs, 0.5);
  const pairs: [Result, Result][] = results.filter((r) => r !== ours).map((base) => [ours, base]);
  const full = results.find((r) => r.name === 'vqalab-plain');
  const tslab = results.find((r) => r.name === 'tslab');
  if (full && tslab) pairs.push([full, tslab]);
  for (const [a, base] of pairs) {
    const ready = quantile(a.readyMs, 0.5) / quantile(base.readyMs, 0.5);
    const completion = quantile(a.completeMs, 0.5) / quantile(base.completeMs, 0.5);
    process.stdout.write(
      `ratio ${a.name} / ${base.name}: start→ready ${ready.toFixed(2)}×, start→first completion ${completion.toFixed(2)}×, cell median ${(quantile(a.cellMs, 0.5) / quantile(base.cellMs, 0.5)).toFixed(2)}×` +
        `${a === ours && base === tslab ? ` (goal ≤ 1.3× for both start-up figures: ${ready <= 1.3 && completion <= 1.3 ? 'met' : 'NOT met'})` : ''}\n`,
    );
    if (withCpu.includes(a) && withCpu.includes(base)) {
      const cpuReady = quantile(a.readyCpuMs, 0.5) / quantile(base.readyCpuMs, 0.5);
      const cpuCompletion = quantile(a.completeCpuMs, 0.5) / quantile(base.completeCpuMs, 0.5);
      process.stdout.write(
        `ratio ${a.name} / ${base.name} in CPU time: to ready ${cpuReady.toFixed(2)}×, to first completion ${cpuCompletion.toFixed(2)}×\n`,
      );
    }
  }
  process.stdout.write(
    `goal: trivial cell ≤ 30 ms after warm-up: ${median <= 30 ? 'met' : 'NOT met'} (median ${ms(median)})\n`,
  );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench/kernel: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
