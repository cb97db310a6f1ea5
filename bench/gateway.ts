/**
 * Load test of the training gateway (loopback only, bounded): ATTEMPTS agent processes, CONCURRENCY
 * of them at once (default 64), each making CALLS streamed chat completions through its
 * per-attempt URL and posting its reward with the number of calls it completed; among them one
 * agent that crashes, one that hangs (stopped by its timeout) and one that posts a malformed reward.
 * Checked: every other attempt succeeded and the gateway recorded exactly the calls each agent
 * completed (no call lost); the three bad ones failed with their reason. Printed: attempts/s, calls/s.
 *
 * Then the recording overhead: the same chat requests (an image, max_tokens 16, seeded) sent by
 * this process to the plain `/v1/chat/completions` and to a per-attempt URL, alternating in pairs,
 * REQUESTS of each, 4 at a time: p50/p99 latency and server-side CPU per request (this process
 * serves; the client's share is the same for both).
 *
 *     npm run build && node dist/bench/gateway.js [--attempts 128] [--concurrency 64] [--calls 2] [--requests 64] [--threads 1]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { startGateway } from '../src/gateway/start.js';
import { rolloutAgentGroups, runAgentAttempt } from '../src/gateway/agent.js';
import { percentile as pct } from '../src/rollout/compare.js';

const percentile = (xs: readonly number[], p: number): number => pct(xs, p) ?? NaN;
import { LocalPolicy } from '../src/rollout/local.js';
import type { VqaSample } from '../src/data/types.js';

const { values } = parseArgs({
  options: {
    attempts: { type: 'string', default: '128' },
    concurrency: { type: 'string', default: '64' },
    calls: { type: 'string', default: '2' },
    requests: { type: 'string', default: '64' },
    threads: { type: 'string', default: '1' },
  },
});
const ATTEMPTS = Number(values.attempts),
  CONCURRENCY = Number(values.concurrency),
  CALLS = Number(values.calls),
  REQUESTS = Number(values.requests);

const AGENT = `
const base = process.env.AGL_OPENAI_BASE_URL, key = process.env.AGL_KEY, calls = Number(process.env.CALLS);
const image = 'data:image/png;base64,' + process.env.IMAGE_B64;
const messages = [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } }, { type: 'text', text: process.env.QUESTION }] }];
let done = 0;
for (let k = 0; k < calls; k++) {
  const r = await fetch(base + '/chat/completions', { method: 'POST', headers: { authorization: 'Bearer ' + key, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'auto', messages, max_tokens: 8, stream: true }) });
  if (!r.ok) throw new Error('chat ' + r.status + ' ' + await r.text());
  let text = '';
  const body = await r.text();
  for (const line of body.split('\\n')) if (line.startsWith('data: {')) text += JSON.parse(line.slice(6)).choices[0]?.delta?.content ?? '';
  if (!body.includes('data: [DONE]')) throw new Error('stream without [DONE]');
  messages.push({ role: 'assistant', content: text }, { role: 'user', content: 'Are you sure?' });
  done++;
}
const mode = process.env.MODE;
if (mode === 'crash') { console.error('agent crashed on purpose'); process.exit(3); }
if (mode === 'hang') await new Promise(() => setInterval(() => {}, 1000));
const body = mode === 'malformed' ? '{"event_type": "reward", "data": {"value": NaN, "calls": ' + done + '}}' : JSON.stringify({ event_type: 'reward', data: { value: done / calls, calls: done } });
const e = await fetch(process.env.AGL_EVENT_URL, { method: 'POST', headers: { authorization: 'Bearer ' + key, 'content-type': 'application/json' }, body });
if (!e.ok) console.error('reward refused: ' + e.status + ' ' + await e.text());
`;

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-bench-gateway-'));
  const png = await sharp({ create: { width: 112, height: 112, channels: 3, background: { r: 200, g: 40, b: 40 } } })
    .png()
    .toBuffer();
  const imagePath = path.join(dir, 'red.png');
  writeFileSync(imagePath, png);
  const agentFile = path.join(dir, 'agent.mjs');
  writeFileSync(agentFile, AGENT);
  const policy = await LocalPolicy.load(undefined, { threads: Number(values.threads) });
  const gw = await startGateway(policy, { serve: { maxQueue: 4096 } });
  const load0 = loadavg();
  try {
    // ── 1. agents ──
    const samples: VqaSample[] = Array.from({ length: ATTEMPTS - 3 }, (_, i) => ({
      id: `q${i}`,
      imagePath,
      question: 'what color is the square?',
      answer: 'red',
      answers: ['red'],
    }));
    const env = { CALLS: String(CALLS), IMAGE_B64: png.toString('base64') };
    const t0 = performance.now();
    const bad = (mode: string, timeoutMs = 120_000) =>
      runAgentAttempt(
        gw.gateway,
        samples[0]!,
        { command: [process.execPath, agentFile], env: { ...env, MODE: mode }, timeoutMs },
        { rolloutId: `bad-${mode}` },
      );
    let goodSeconds = NaN;
    const [groups, crash, hang, malformed] = await Promise.all([
      rolloutAgentGroups(
        gw.gateway,
        samples,
        1,
        { command: [process.execPath, agentFile], env, concurrency: CONCURRENCY - 3, timeoutMs: 300_000 },
        { rolloutPrefix: 'load' },
      ).then((g) => {
        goodSeconds = (performance.now() - t0) / 1000;
        return g;
      }),
      bad('crash'),
      bad('hang', 20_000),
      bad('malformed'),
    ]);
    const seconds = (performance.now() - t0) / 1000;
    const attempts = groups.flatMap((g) => g.attempts);
    let lost = 0,
      failed = 0;
    for (const a of attempts) {
      if (a.status !== 'succeeded') {
        failed++;
        console.error(`attempt ${a.rolloutId}/${a.attemptId} failed: ${a.error}`);
        continue;
      }
      const reported = Number(a.events.at(-1)!.data.calls);
      if (reported !== a.calls.length) {
        lost += reported - a.calls.length;
        console.error(
          `attempt ${a.rolloutId}: the agent completed ${reported} calls, the gateway recorded ${a.calls.length}`,
        );
      }
    }
    const badOk =
      crash.status === 'failed' &&
      /code 3/.test(crash.error!) &&
      hang.status === 'failed' &&
      hang.timedOut === true &&
      malformed.status === 'failed' &&
      /NaN, which is not JSON/.test(malformed.error!) &&
      crash.calls.length === CALLS &&
      malformed.calls.length === CALLS;
    const calls =
      attempts.reduce((s, a) => s + a.calls.length, 0) +
      crash.calls.length +
      hang.calls.length +
      malformed.calls.length;
    console.log(
      `agents: ${ATTEMPTS} attempts (${CONCURRENCY} at once, ${CALLS} streamed calls each; one crashing, one hanging, one malformed reward) in ${seconds.toFixed(1)}s`,
    );
    console.log(
      `  the ${samples.length} good attempts in ${goodSeconds.toFixed(1)}s: ${(samples.length / goodSeconds).toFixed(2)} attempts/s, ${((samples.length * CALLS) / goodSeconds).toFixed(1)} calls/s (all ${calls} calls: ${seconds.toFixed(1)}s with the hanging one's 20 s timeout); ${attempts.length - failed}/${attempts.length} good attempts succeeded, calls lost: ${lost}; bad ones failed as expected: ${badOk}`,
    );
    if (!badOk) console.error(`crash: ${crash.error}\nhang: ${hang.error}\nmalformed: ${malformed.error}`);

    // ── 2. recording overhead ──
    const body = (seed: number) =>
      JSON.stringify({
        model: 'auto',
        max_tokens: 16,
        temperature: 1,
        seed,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'image_url', image_url: { url: `data:image/png;base64,${png.toString('base64')}` } },
              { type: 'text', text: 'what color is the square?' },
            ],
          },
        ],
      });
    const lat: Record<'plain' | 'gateway', number[]> = { plain: [], gateway: [] };
    const cpu: Record<'plain' | 'gateway', number> = { plain: 0, gateway: 0 };
    const ep = gw.gateway.openAttempt({ rolloutId: 'overhead' });
    const send = async (kind: 'plain' | 'gateway', seed: number) => {
      const url = kind === 'plain' ? `${gw.server.url}/chat/completions` : `${ep.baseUrl}/chat/completions`;
      const t = performance.now();
      const r = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${ep.key}`, 'content-type': 'application/json' },
        body: body(seed).replace('"auto"', kind === 'plain' ? '"vqalab"' : '"auto"'),
      });
      if (!r.ok) throw new Error(`${kind}: ${r.status} ${await r.text()}`);
      await r.json();
      lat[kind].push(performance.now() - t);
    };
    for (let i = 0; i < REQUESTS; i += 4) {
      for (const kind of (i / 4) % 2 === 0 ? (['plain', 'gateway'] as const) : (['gateway', 'plain'] as const)) {
        const c0 = process.cpuUsage();
        await Promise.all([0, 1, 2, 3].map((k) => send(kind, 1000 + i + k)));
        const d = process.cpuUsage(c0);
        cpu[kind] += (d.user + d.system) / 1000;
      }
    }
    const line = (k: 'plain' | 'gateway') =>
      `p50 ${percentile(lat[k], 50).toFixed(1)} ms, p99 ${percentile(lat[k], 99).toFixed(1)} ms, CPU ${(cpu[k] / lat[k].length).toFixed(2)} ms/request`;
    console.log(
      `recording overhead (${REQUESTS} requests each, 4 at a time, alternating): plain ${line('plain')}; gateway ${line('gateway')}`,
    );
    console.log(
      `  gateway − plain: p50 ${(percentile(lat.gateway, 50) - percentile(lat.plain, 50)).toFixed(1)} ms, CPU ${(cpu.gateway / lat.gateway.length - cpu.plain / lat.plain.length).toFixed(2)} ms/request; recorded ${gw.gateway.attempt('overhead', ep.attemptId)!.calls.length} calls`,
    );
    console.log(
      `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}; load average ${load0[0]!.toFixed(1)} → ${loadavg()[0]!.toFixed(1)}`,
    );
    process.exitCode = failed > 0 || lost !== 0 || !badOk ? 1 : 0;
  } finally {
    await gw.close();
    policy.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
