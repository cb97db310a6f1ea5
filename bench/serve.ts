/**
 * Load test of `vqalab serve` (loopback only, bounded in requests and time): a server child
 * process with the embedded tiny model, C concurrent clients (the `openai` package, no retries)
 * sending chat requests with an image; prints requests/s and p50/p99 latency, and fails (exit 1)
 * on any failed request.
 *
 * Baseline, measured in the same run: the same requests straight on the engine in this process
 * (image processing, prompt, sampling; no HTTP, no queue), one at a time as the engine runs them.
 * The ratio serve/direct throughput is what HTTP, JSON, base64 and the queue cost.
 *
 *     npm run build && node dist/bench/serve.js [--requests 200] [--concurrency 8] [--max-tokens 8] [--seconds 120] [--threads 1]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import sharp from 'sharp';
import { LocalPolicy } from '../src/rollout/local.js';
import { percentile } from '../src/rollout/compare.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '8' }, 'max-tokens': { type: 'string', default: '8' },
    seconds: { type: 'string', default: '120' }, threads: { type: 'string', default: '1' }, n: { type: 'string', default: '1' },
  },
});
const REQUESTS = Number(values.requests), CONCURRENCY = Number(values.concurrency), MAX_TOKENS = Number(values['max-tokens']);
const SECONDS = Number(values.seconds), THREADS = Number(values.threads), N = Number(values.n);
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'vqalab.js');

function startServer(): Promise<{ child: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--quiet', '--threads', String(THREADS), '--max-queue', String(Math.max(256, CONCURRENCY * 2))], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    const timer = setTimeout(() => { child.kill(); reject(new Error(`the server did not start in 60 s:\n${out}`)); }, 60_000);
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1]! }); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the server exited with ${code}:\n${out}`)); });
  });
}

function summary(label: string, lat: number[], seconds: number, failed: number): { rps: number; p50: number; p99: number } {
  const rps = lat.length / seconds;
  const p50 = percentile(lat, 50)!, p99 = percentile(lat, 99)!;
  console.log(`${label.padEnd(34)} ${String(lat.length).padStart(5)} ok ${String(failed).padStart(3)} failed  ${rps.toFixed(2).padStart(7)} req/s  p50 ${p50.toFixed(1).padStart(7)} ms  p99 ${p99.toFixed(1).padStart(7)} ms`);
  return { rps, p50, p99 };
}

const png = await sharp({ create: { width: 112, height: 112, channels: 3, background: { r: 200, g: 40, b: 40 } } }).png().toBuffer();
const dataUrl = `data:image/png;base64,${png.toString('base64')}`;
console.log(`vqalab serve load test: ${REQUESTS} requests (at most ${SECONDS} s), ${CONCURRENCY} concurrent clients, n=${N}, max_tokens ${MAX_TOKENS}, `
  + `112x112 PNG as a data URL, embedded tiny model, ${THREADS} engine thread(s), loopback`);

// Baseline: the engine in-process, one request at a time.
const local = await LocalPolicy.load(undefined, { threads: THREADS });
const messages = VlmTokenizer.vqaMessages('what color is the circle?');
const baseCount = Math.min(REQUESTS, 100);
const baseLat: number[] = [];
const tb = performance.now();
for (let i = 0; i < baseCount && performance.now() - tb < SECONDS * 500; i++) {
  const t0 = performance.now();
  const img = await local.image(png);
  await local.complete(local.prompt(messages, [img]), { n: N, temperature: 1, maxTokens: MAX_TOKENS, seed: i });
  baseLat.push(performance.now() - t0);
}
const base = summary('direct engine calls (baseline)', baseLat, (performance.now() - tb) / 1000, 0);
local.dispose();

const { child, url } = await startServer();
let failures = 0;
const failuresSeen: string[] = [];
try {
  const client = new OpenAI({ baseURL: url, apiKey: 'bench', maxRetries: 0, timeout: 60_000 });
  // Warm-up (first request loads lazily-initialised parts).
  await client.chat.completions.create({ model: 'vqalab', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  const deadline = t0 + SECONDS * 1000;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= REQUESTS || performance.now() > deadline) return;
      const s = performance.now();
      try {
        const r = await client.chat.completions.create({
          model: 'vqalab', n: N, temperature: 1, seed: i, max_tokens: MAX_TOKENS, user: `client-${i % CONCURRENCY}`,
          messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl } }, { type: 'text', text: 'what color is the circle?' }] }],
        });
        if (r.choices.length !== N) throw new Error(`${r.choices.length} choices for n=${N}`);
        lat.push(performance.now() - s);
      } catch (err) {
        failures++;
        if (failuresSeen.length < 5) failuresSeen.push((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const served = summary(`vqalab serve, ${CONCURRENCY} concurrent clients`, lat, (performance.now() - t0) / 1000, failures);
  console.log(`throughput ratio serve/direct: ${(served.rps / base.rps).toFixed(3)}  (HTTP + JSON + base64 + queue; 1.0 = no overhead)`);
  console.log(`p50 latency ratio serve/direct: ${(served.p50 / base.p50).toFixed(2)}  (includes waiting in the fair queue behind up to ${CONCURRENCY - 1} others)`);
  if (failures > 0) console.log(`FAILED requests: ${failures}\n  ${failuresSeen.join('\n  ')}`);
} finally {
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
}
process.exitCode = failures > 0 ? 1 : 0;
