/**
 * GEMM throughput of the native engine next to the naive triple loop, measured in the same run.
 *   npm run build && node dist/bench/gemm.js [--quick]
 * Shapes: square products, and the products of the engine's linear layers (forward x W^T, input
 * gradient dY W, weight gradient dY^T X) at the tiny default model's and at Qwen2-VL-2B's sizes.
 * Printed, not asserted. The naive loop is timed only where it finishes in a few seconds.
 *
 * Two clocks: wall time (what a user waits) and this process's CPU time (user + system, all threads).
 * On a shared, oversubscribed machine a run longer than a scheduler slice is preempted and its wall
 * time says little; CPU-time GFLOP/s ("per CPU-second") measure the code. The ratio against the
 * naive loop uses CPU time on one thread for both.
 */
import os from 'node:os';
import { native } from '../src/engine/native.js';

const quick = process.argv.includes('--quick');
const a = native();

function rand(n: number): Float32Array {
  const x = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s / 4294967296) * 2 - 1;
  }
  return x;
}

/** Best-of GFLOP/s by wall time and by CPU time over repetitions lasting at least `minMs`. */
function gflops(fn: () => void, flops: number, minMs: number): { wall: number; cpu: number } {
  fn(); // warm-up (packing buffers, pages)
  let wall = Infinity,
    cpu = Infinity,
    spent = 0,
    runs = 0;
  while (spent < minMs || runs < 3) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    fn();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const u = process.cpuUsage(c0);
    wall = Math.min(wall, ms);
    cpu = Math.min(cpu, Math.max((u.user + u.system) / 1e3, 1e-3));
    spent += ms;
    runs++;
    if (runs >= 50) break;
  }
  return { wall: flops / (wall / 1e3) / 1e9, cpu: flops / (cpu / 1e3) / 1e9 };
}

interface Shape {
  label: string;
  ta: boolean;
  tb: boolean;
  M: number;
  N: number;
  K: number;
}

const shapes: Shape[] = [
  { label: 'square 256', ta: false, tb: true, M: 256, N: 256, K: 256 },
  { label: 'square 512', ta: false, tb: true, M: 512, N: 512, K: 512 },
  { label: 'square 1024', ta: false, tb: true, M: 1024, N: 1024, K: 1024 },
  { label: 'tiny: mlp up, 128 rows (x W^T)', ta: false, tb: true, M: 128, N: 384, K: 128 },
  { label: 'tiny: head, 64 rows (x E^T)', ta: false, tb: true, M: 64, N: 539, K: 128 },
  { label: 'tiny: decode 8 rows (x W^T)', ta: false, tb: true, M: 8, N: 384, K: 128 },
  { label: '2B: q_proj, 256 rows (x W^T)', ta: false, tb: true, M: 256, N: 1536, K: 1536 },
  { label: '2B: mlp up, 256 rows (x W^T)', ta: false, tb: true, M: 256, N: 8960, K: 1536 },
  { label: '2B: mlp down dX, 256 rows (dY W)', ta: false, tb: false, M: 256, N: 8960, K: 1536 },
  { label: '2B: mlp up dW (dY^T X)', ta: true, tb: false, M: 8960, N: 1536, K: 256 },
  { label: '2B: decode 8 rows (x W^T)', ta: false, tb: true, M: 8, N: 8960, K: 1536 },
];

const threads = a._threads();
const kernel = a._gemmKernel();
console.log(
  `GEMM (fp32) on ${os.cpus()[0]?.model ?? 'unknown CPU'}: ${threads} threads, kernel ${kernel}, Node ${process.version}, load average ${os.loadavg()[0]!.toFixed(1)}`,
);
console.log('GFLOP/s, best of repeated runs: "wall" by wall-clock time, "cpu" per CPU-second of this process;');
console.log('"naive" is the textbook i-j-k loop on one thread; ours/naive compares CPU time on one thread.\n');
const head = [
  'shape',
  'M x N x K',
  `ours ${threads}T wall`,
  `ours ${threads}T cpu`,
  'ours 1T cpu',
  'portable 1T cpu',
  'naive 1T cpu',
  'ours/naive',
];
const rows: string[][] = [];
for (const s of quick ? shapes.filter((x) => x.M * x.N * x.K <= 64e6) : shapes) {
  const { ta, tb, M, N, K } = s;
  const lda = ta ? M : K,
    ldb = tb ? K : N;
  const A = rand(M * K),
    B = rand(K * N),
    C = new Float32Array(M * N);
  const flops = 2 * M * N * K;
  const run =
    (naive = false) =>
    () => {
      a._sgemm(ta, tb, M, N, K, 1, A, lda, B, ldb, 0, C, N, naive);
    };
  const minMs = quick ? 100 : 400;
  const ours = gflops(run(), flops, minMs);
  a._threads(1);
  const one = gflops(run(), flops, minMs);
  a._gemmKernel('portable');
  const portable = gflops(run(), flops, minMs);
  a._gemmKernel('auto');
  a._threads(threads);
  const naive = flops <= 1.2e9 ? gflops(run(true), flops, 0) : { wall: Number.NaN, cpu: Number.NaN };
  rows.push([
    s.label,
    `${M} x ${N} x ${K}`,
    ours.wall.toFixed(1),
    ours.cpu.toFixed(1),
    one.cpu.toFixed(1),
    portable.cpu.toFixed(1),
    Number.isNaN(naive.cpu) ? '(skipped)' : naive.cpu.toFixed(2),
    Number.isNaN(naive.cpu) ? '-' : `${(one.cpu / naive.cpu).toFixed(0)}x`,
  ]);
}
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log(line(head));
for (const r of rows) console.log(line(r));
