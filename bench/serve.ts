/**
 * Load test of `vqalab serve` (loopback only, bounded in requests and time): continuous batching
 * against the queue-only mode (`--no-batching`: one request on the engine at a time), measured in
 * the same run on the same request list. Each mode gets its own server child process with the
 * embedded tiny model; C concurrent clients (the `openai` package, no retries) send chat requests
 * with an image. Prints requests/s, completion tokens/s, p50/p99 latency, the server's CPU time per
 * request (and with --stream the time to the first token), then the ratios batching / queue-only;
 * exits 1 on any failed request. The default load (8 clients, n=4, 64 max tokens, 48 requests per
 * mode and round, 2 rounds) takes about a minute on two shared cores.
 *
 * `--model medium` generates (once, into the temp folder) a random-weight Qwen2-VL of about 90 M
 * parameters with the tiny model's tokenizer and vision tower: its decode reads every weight per
 * step, as real checkpoints' does, which is where batching pays; the tiny model fits in cache and
 * mostly measures HTTP, JSON and image handling. `--model DIR` serves any checkpoint folder.
 *
 * The modes alternate over rounds (queue-only first in odd rounds, batching first in even ones) so
 * that a change in the machine's load does not favour one of them. `--direct` adds the earlier
 * baseline: the same requests straight on the engine in this process, one at a time. The machine
 * (cores, CPU) and its load average before and after are printed: others' work on a shared machine
 * changes the absolute numbers (and the queue-only mode, which waits on every thread hand-off, the most).
 *
 *     npm run build && node dist/bench/serve.js [--requests 48] [--concurrency 8] [--n 4] [--max-tokens 64]
 *       [--rounds 2] [--stream] [--direct] [--seconds 90] [--threads 1] [--max-batch-rows 64] [--model tiny|medium|DIR]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import sharp from 'sharp';
import { randomMidsizeModel } from './random-model.js';
import { LocalPolicy } from '../src/rollout/local.js';
import { percentile } from '../src/rollout/compare.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '48' },
    concurrency: { type: 'string', default: '8' },
    'max-tokens': { type: 'string', default: '64' },
    seconds: { type: 'string', default: '90' },
    threads: { type: 'string', default: '1' },
    n: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '2' },
    stream: { type: 'boolean', default: false },
    direct: { type: 'boolean', default: false },
    'max-batch-rows': { type: 'string', default: '64' },
    model: { type: 'string', default: 'tiny' },
  },
});
const REQUESTS = Number(values.requests),
  CONCURRENCY = Number(values.concurrency),
  MAX_TOKENS = Number(values['max-tokens']);
const SECONDS = Number(values.seconds),
  THREADS = Number(values.threads),
  N = Number(values.n),
  ROUNDS = Number(values.rounds);
const STREAM = values.stream!,
  ROWS = Number(values['max-batch-rows']);
/** A random-weight Qwen2-VL with the tiny model's tokenizer, processor and vision tower, and a ~90 M parameter language model. */
const mediumModel = () => randomMidsizeModel('vqalab-bench-medium-v1', 8);

const MODEL = values.model === 'tiny' ? undefined : values.model === 'medium' ? await mediumModel() : values.model!;
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'vqalab.js');

type Mode = 'queue-only' | 'batching';

function startServer(mode: Mode): Promise<{ child: ChildProcess; url: string }> {
  const args = [
    BIN,
    'serve',
    '--port',
    '0',
    '--quiet',
    '--threads',
    String(THREADS),
    '--max-queue',
    String(Math.max(256, CONCURRENCY * 2)),
    ...(MODEL ? ['--model', MODEL] : []),
    ...(mode === 'queue-only' ? ['--no-batching'] : ['--max-batch-rows', String(ROWS)]),
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    // its stderr (the SIGTERM notice, errors) is shown when it fails, not on every stop
    child.stderr!.on('data', (d) => {
      out += d;
    });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`the server did not start in 60 s:\n${out}`));
    }, 60_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]! });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0 && code !== null) process.stderr.write(`the ${mode} server exited with ${code}:\n${out}\n`);
      reject(new Error(`the server exited with ${code}:\n${out}`));
    });
  });
}

interface Result {
  lat: number[];
  ttft: number[];
  seconds: number;
  failed: number;
  errors: string[];
  tokens: number;
  serverCpu: number;
}

function merge(a: Result | undefined, b: Result): Result {
  if (!a) return b;
  return {
    lat: [...a.lat, ...b.lat],
    ttft: [...a.ttft, ...b.ttft],
    seconds: a.seconds + b.seconds,
    failed: a.failed + b.failed,
    errors: [...a.errors, ...b.errors],
    tokens: a.tokens + b.tokens,
    serverCpu: a.serverCpu + b.serverCpu,
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return NaN;
  }
}

function line(
  label: string,
  r: Result,
): { rps: number; tps: number; p50: number; p99: number; ttft50?: number; cpuPerReq: number } {
  const rps = r.lat.length / r.seconds,
    tps = r.tokens / r.seconds;
  const p50 = percentile(r.lat, 50)!,
    p99 = percentile(r.lat, 99)!;
  const ttft50 = r.ttft.length ? percentile(r.ttft, 50)! : undefined;
  const ttft = r.ttft.length
    ? `  first token p50 ${ttft50!.toFixed(1).padStart(7)} ms p99 ${percentile(r.ttft, 99)!.toFixed(1).padStart(7)} ms`
    : '';
  const cpuPerReq = (r.serverCpu * 1000) / Math.max(1, r.lat.length);
  console.log(
    `${label.padEnd(30)} ${String(r.lat.length).padStart(5)} ok ${String(r.failed).padStart(3)} failed  ${rps.toFixed(2).padStart(7)} req/s  ` +
      `${(r.tokens / r.seconds).toFixed(0).padStart(6)} tok/s  p50 ${p50.toFixed(1).padStart(7)} ms  p99 ${p99.toFixed(1).padStart(7)} ms  ` +
      `server CPU ${cpuPerReq.toFixed(1).padStart(6)} ms/req${ttft}`,
  );
  return { rps, tps, p50, p99, cpuPerReq, ...(ttft50 !== undefined ? { ttft50 } : {}) };
}

const png = await sharp({ create: { width: 112, height: 112, channels: 3, background: { r: 200, g: 40, b: 40 } } })
  .png()
  .toBuffer();
const dataUrl = `data:image/png;base64,${png.toString('base64')}`;
const cpuModel = cpus()[0]?.model.trim() ?? 'unknown CPU';
const load1 = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
console.log(`machine: ${cpus().length} cores (${cpuModel}), load average ${load1()} (1, 5, 15 min) at the start`);
console.log(
  `vqalab serve load test: ${REQUESTS} requests per mode and round (at most ${SECONDS} s each), ${CONCURRENCY} concurrent clients, n=${N}, ` +
    `max_tokens ${MAX_TOKENS}${STREAM ? ', streamed' : ''}, 112x112 PNG as a data URL, ${MODEL ? `model ${values.model} (${MODEL})` : 'embedded tiny model'}, ${THREADS} engine thread(s), ` +
    `${ROUNDS} round(s), batch row budget ${ROWS}, loopback`,
);

async function load(url: string, pid: number): Promise<Result> {
  const client = new OpenAI({ baseURL: url, apiKey: 'bench', maxRetries: 0, timeout: 120_000 });
  await client.chat.completions.create({ model: 'vqalab', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 }); // warm-up
  const r: Result = { lat: [], ttft: [], seconds: 0, failed: 0, errors: [], tokens: 0, serverCpu: 0 };
  const cpu0 = cpuSeconds(pid);
  let next = 0;
  const t0 = performance.now();
  const deadline = t0 + SECONDS * 1000;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= REQUESTS || performance.now() > deadline) return;
      const s = performance.now();
      const params = {
        model: 'vqalab',
        n: N,
        temperature: 1,
        seed: i,
        max_tokens: MAX_TOKENS,
        user: `client-${i % CONCURRENCY}`,
        messages: [
          {
            role: 'user' as const,
            content: [
              { type: 'image_url' as const, image_url: { url: dataUrl } },
              { type: 'text' as const, text: 'what color is the circle?' },
            ],
          },
        ],
      };
      try {
        if (STREAM) {
          const stream = await client.chat.completions.create({
            ...params,
            stream: true,
            stream_options: { include_usage: true },
          });
          let first = 0;
          for await (const chunk of stream) {
            if (!first && chunk.choices.some((c) => c.delta.content !== undefined && !c.delta.role))
              first = performance.now() - s;
            if (chunk.usage) r.tokens += chunk.usage.completion_tokens;
          }
          r.ttft.push(first);
        } else {
          const res = await client.chat.completions.create(params);
          if (res.choices.length !== N) throw new Error(`${res.choices.length} choices for n=${N}`);
          r.tokens += res.usage?.completion_tokens ?? 0;
        }
        r.lat.push(performance.now() - s);
      } catch (err) {
        r.failed++;
        if (r.errors.length < 5) r.errors.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  r.seconds = (performance.now() - t0) / 1000;
  r.serverCpu = cpuSeconds(pid) - cpu0;
  return r;
}

async function runMode(mode: Mode): Promise<Result> {
  const { child, url } = await startServer(mode);
  try {
    return await load(url, child.pid!);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

if (values.direct) {
  // The earlier baseline: the engine in-process, one request at a time (no HTTP, no queue).
  const local = await LocalPolicy.load(MODEL, { threads: THREADS });
  const messages = VlmTokenizer.vqaMessages('what color is the circle?');
  const r: Result = { lat: [], ttft: [], seconds: 0, failed: 0, errors: [], tokens: 0, serverCpu: NaN };
  const tb = performance.now();
  for (let i = 0; i < Math.min(REQUESTS, 100) && performance.now() - tb < SECONDS * 500; i++) {
    const t0 = performance.now();
    const img = await local.image(png);
    const g = await local.complete(local.prompt(messages, [img]), {
      n: N,
      temperature: 1,
      maxTokens: MAX_TOKENS,
      seed: i,
    });
    r.tokens += g.choices.reduce((a, c) => a + c.tokenIds.length, 0);
    r.lat.push(performance.now() - t0);
  }
  r.seconds = (performance.now() - tb) / 1000;
  line('direct engine calls', r);
  local.dispose();
}

const results: Partial<Record<Mode, Result>> = {};
for (let round = 0; round < ROUNDS; round++) {
  const order: Mode[] = round % 2 === 0 ? ['queue-only', 'batching'] : ['batching', 'queue-only'];
  for (const mode of order) {
    const r = await runMode(mode);
    if (ROUNDS > 1) line(`  round ${round + 1}: ${mode}`, r);
    results[mode] = merge(results[mode], r);
  }
}
const q = line('queue-only (--no-batching)', results['queue-only']!);
const b = line('continuous batching', results.batching!);
console.log(`load average ${load1()} (1, 5, 15 min) at the end`);
console.log(
  `batching/queue-only: requests/s ${(b.rps / q.rps).toFixed(2)}x   tokens/s ${(b.tps / q.tps).toFixed(2)}x   p50 latency ratio: ${(b.p50 / q.p50).toFixed(2)}   ` +
    `p99 latency ratio: ${(b.p99 / q.p99).toFixed(2)}   server CPU per request ratio: ${(b.cpuPerReq / q.cpuPerReq).toFixed(2)}` +
    (b.ttft50 !== undefined && q.ttft50 !== undefined
      ? `   first-token p50 ratio: ${(b.ttft50 / q.ttft50).toFixed(2)}`
      : ''),
);
const failed = results['queue-only']!.failed + results.batching!.failed;
if (failed > 0)
  console.log(
    `FAILED requests: ${failed}\n  ${[...results['queue-only']!.errors, ...results.batching!.errors].join('\n  ')}`,
  );
process.exitCode = failed > 0 ? 1 : 0;
