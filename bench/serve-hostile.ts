/**
 * Load test: while one hostile request of each kind is in flight, do /health and an ordinary chat
 * request still answer within 100 ms (p99)? Against the same server with no hostile request, in the
 * same run (issue 20).
 *
 * One `vqalab serve` child process (the embedded tiny model, 1 engine thread, 1 request worker) with
 * its budgets raised so that the hostile requests are admitted and cost real work (the defaults
 * refuse most of them at once). For each kind, a hostile client keeps one such request in flight
 * (re-sending it as soon as it ends) for --seconds, while a probe client, one request at a time,
 * alternates GET /health and an ordinary chat request (a short question, max_tokens 1). Kinds:
 *
 *   none           no hostile request (the baseline)
 *   stops          stream, n = 64, 16 stop strings of 100 KB, max_tokens 64
 *   prompt-1mb     a 1 MB question (within --max-prompt-chars): tokenised, then 400 (context)
 *   body-32mb      a 32 MB question: parsed, refused by its characters before tokenising
 *   image-25mp     a 5000x5000 noise PNG (within --max-image-pixels): decoded, resized, patched
 *   bomb-png       a PNG whose header says 16000x16000: refused from the header
 *   bad-stop-id    stop_token_ids outside the vocabulary: 400
 *
 *     npm run build && node dist/bench/serve-hostile.js [--seconds 6] [--out bench/results/serve-hostile/results.md]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '6' },
    out: { type: 'string' },
    workers: { type: 'string', default: '1' },
    // internal: this script run as the hostile client (its own process, so that building and sending
    // 32 MB bodies does not delay the probe client's measurements)
    'hostile-client': { type: 'string' },
    url: { type: 'string' },
  },
});
const SECONDS = Number(values.seconds);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'vqalab.js');

function bombPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(4 * (1 + width * 3)))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function startServer(): Promise<{ child: ChildProcess; url: string }> {
  const args = [
    BIN,
    'serve',
    '--port',
    '0',
    '--quiet',
    '--threads',
    '1',
    '--workers',
    values.workers!,
    '--max-batch-rows',
    '128',
    '--max-sequence-length',
    '2048',
    '--max-stop-chars',
    '100000',
    '--max-prompt-chars',
    '2000000',
    '--max-body-mb',
    '40',
    '--max-image-mb',
    '40',
    '--max-image-pixels',
    '25000000',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stderr!.on('data', (d) => {
      out += d;
    });
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve({ child, url: m[1]! });
    });
    child.on('exit', (code) => reject(new Error(`the server exited (${code}):\n${out}`)));
  });
}

const user = (text: string, image?: string) => [
  {
    role: 'user',
    content: image
      ? [
          { type: 'image_url', image_url: { url: image } },
          { type: 'text', text },
        ]
      : text,
  },
];

async function kinds(): Promise<Record<string, (() => unknown) | null>> {
  // A 5000x5000 image whose PNG stays small (a pattern that compresses) but decodes to 75 MB of pixels.
  const raw = Buffer.alloc(5000 * 5000 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = ((i % 15000) >> 6) ^ ((i / 15000) >> 6) ? 200 : 30;
  const bigPng = await sharp(raw, { raw: { width: 5000, height: 5000, channels: 3 } })
    .png({ compressionLevel: 9 })
    .toBuffer();
  return {
    none: null,
    stops: () => ({
      model: 'vqalab',
      messages: user('say z'),
      n: 64,
      stream: true,
      max_tokens: 64,
      stop: Array.from({ length: 16 }, (_v, i) => `${'z'.repeat(99_990)}${i}`),
    }),
    'prompt-1mb': () => ({ model: 'vqalab', messages: user('why '.repeat(262_144)), max_tokens: 1 }),
    'body-32mb': () => ({ model: 'vqalab', messages: user('w'.repeat(32 << 20)), max_tokens: 1 }),
    'image-25mp': () => ({
      model: 'vqalab',
      messages: user('what?', `data:image/png;base64,${bigPng.toString('base64')}`),
      max_tokens: 1,
    }),
    'bomb-png': () => ({
      model: 'vqalab',
      messages: user('what?', `data:image/png;base64,${bombPng(16000, 16000).toString('base64')}`),
      max_tokens: 1,
    }),
    'bad-stop-id': () => ({ model: 'vqalab', messages: user('hi'), max_tokens: 1, stop_token_ids: [1 << 30] }),
  };
}

/** The hostile client: send one kind again and again, one in flight, until killed; report each status on stdout. */
async function hostileClient(kind: string, url: string): Promise<void> {
  const body = JSON.stringify((await kinds())[kind]!());
  process.stdout.write('ready\n');
  for (;;) {
    const r = await fetch(`${url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    await r.text();
    process.stdout.write(`status ${r.status}\n`);
  }
}

async function main(): Promise<void> {
  const bodies = Object.fromEntries(Object.entries(await kinds()).map(([k, f]) => [k, f ? k : null]));
  const ordinary = JSON.stringify({
    model: 'vqalab',
    messages: user('What color is the circle?'),
    max_tokens: 1,
    temperature: 0,
  });
  const load0 = loadavg()[0]!;
  const { child, url } = await startServer();
  const base = url.replace(/\/v1$/, '');
  const rows: string[] = [];
  try {
    // warm up (the worker's tokenizer, the engine)
    for (let i = 0; i < 5; i++)
      await (
        await fetch(`${url}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: ordinary,
        })
      ).text();
    for (const [kind, body] of Object.entries(bodies)) {
      const hostileStatus: Record<string, number> = {};
      let hostileDone = 0;
      let client: ChildProcess | null = null;
      if (body) {
        client = spawn(process.execPath, [fileURLToPath(import.meta.url), '--hostile-client', kind, '--url', url], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        await new Promise<void>((resolve) => {
          let buf = '';
          client!.stdout!.on('data', (d) => {
            buf += d;
            if (buf.includes('ready\n')) resolve();
            for (const m of buf.matchAll(/status (\d+)\n/g)) {
              hostileStatus[m[1]!] = (hostileStatus[m[1]!] ?? 0) + 1;
              hostileDone++;
            }
            buf = buf.slice(buf.lastIndexOf('\n') + 1);
          });
        });
        // let the first hostile request get going
        await new Promise((r) => setTimeout(r, 300));
      }
      const health: number[] = [],
        chat: number[] = [];
      const t0 = performance.now();
      while (performance.now() - t0 < SECONDS * 1000) {
        let t = performance.now();
        const h = await fetch(`${base}/health`);
        await h.text();
        health.push(performance.now() - t);
        if (h.status !== 200) throw new Error(`/health answered ${h.status}`);
        t = performance.now();
        const c = await fetch(`${url}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: ordinary,
        });
        await c.text();
        chat.push(performance.now() - t);
        if (c.status !== 200) throw new Error(`the ordinary request answered ${c.status}`);
      }
      if (client) {
        client.kill('SIGKILL');
        await new Promise((r) => client!.once('exit', r));
      }
      const pct = (a: number[], p: number) => {
        const s = [...a].sort((x, y) => x - y);
        return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
      };
      const f = (v: number) => v.toFixed(1);
      const row = `| ${kind} | ${health.length} | ${f(pct(health, 50))} | ${f(pct(health, 99))} | ${f(Math.max(...health))} | ${f(pct(chat, 50))} | ${f(pct(chat, 99))} | ${f(Math.max(...chat))} | ${
        body
          ? `${hostileDone} (${Object.entries(hostileStatus)
              .map(([s, n]) => `${n}x${s}`)
              .join(', ')})`
          : '-'
      } |`;
      rows.push(row);
      process.stdout.write(`${row}\n`);
    }
  } finally {
    child.kill('SIGTERM');
  }
  const header = [
    `# vqalab serve under hostile requests (bench/serve-hostile.ts)`,
    '',
    `Command: \`node dist/bench/serve-hostile.js --seconds ${SECONDS} --workers ${values.workers}\``,
    `Machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, shared (load average ${load0.toFixed(2)} before, ${loadavg()[0]!.toFixed(2)} after). Server: embedded tiny model, --threads 1, --workers ${values.workers}.`,
    'The context is raised to 2048 tokens (--max-sequence-length) so that the large image (about 1250 tokens) is admitted and decoded rather than refused by its plan.',
    'The hostile client runs in its own process. The server runs with --max-batch-rows 128 so that the n = 64 request leaves the ordinary one room in the batch (with the default 64 the ordinary request queues behind it, by design).',
    `Latencies in ms, measured by one probe client alternating GET /health and an ordinary chat request (max_tokens 1) for ${SECONDS} s per kind while one hostile request of that kind is kept in flight.`,
    '',
    '| hostile kind | probes | /health p50 | /health p99 | /health max | chat p50 | chat p99 | chat max | hostile requests done (status) |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const text = [...header, ...rows, ''].join('\n');
  if (values.out) {
    mkdirSync(path.dirname(values.out), { recursive: true });
    writeFileSync(values.out, text);
  }
  process.stdout.write(`\n${text}`);
}

if (values['hostile-client']) await hostileClient(values['hostile-client'], values.url!);
else await main();
