/**
 * `vqalab export onnx --web`: the demo page in headless Chromium (Debian's), served from 127.0.0.1
 * with every other request blocked, answers a question about a dropped image with the engine's
 * greedy tokens (transformers.js + onnxruntime-web in the page, the model from the exported folder).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportOnnx } from '../../src/export/index.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { CHROMIUM, launch } from '../extension/chromium.js';
import { synthOnDisk } from './helpers.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.png': 'image/png',
};
let work: string;
let server: Server;
let base: string;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'vqalab-web-'));
  server = createServer((req, res) => {
    const file = path.join(work, decodeURIComponent(new URL(req.url!, 'http://x').pathname));
    if (!file.startsWith(work) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res
      .writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' })
      .end(readFileSync(file));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise((r) => server?.close(r));
  rmSync(work, { recursive: true, force: true });
});

test("the --web demo answers in Chromium with the engine's greedy tokens, offline", {
  skip: !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}`,
}, async () => {
  await exportOnnx({ model: DEFAULT_MODEL_DIR, out: path.join(work, 'demo'), web: true });
  const [sample] = await synthOnDisk(path.join(work, 'synth'), 1, 9);
  const local = await LocalPolicy.load(DEFAULT_MODEL_DIR, { threads: 2 });
  const prompt = local.prompt(VlmTokenizer.vqaMessages(sample!.question, 1), [await local.image(sample!.imagePath)]);
  const expected = (await local.complete(prompt, { n: 1, temperature: 0, maxTokens: 16 })).choices[0]!;
  local.dispose();

  const b = await launch();
  const outside: string[] = [];
  await b.context.route('**/*', (route) => {
    const u = route.request().url();
    if (u.startsWith(base) || u.startsWith('blob:') || u.startsWith('data:')) return route.continue();
    outside.push(u);
    return route.abort();
  });
  try {
    await b.page.goto(`${base}/demo/index.html`);
    await b.page.waitForFunction("document.querySelector('#status').textContent.startsWith('ready')", undefined, {
      timeout: 180_000,
    });
    await b.page.setInputFiles('#file', sample!.imagePath);
    await b.page.waitForSelector('#drop[data-loaded]');
    await b.page.fill('#q', sample!.question);
    await b.page.click('#ask');
    await b.page.waitForSelector('#answer[data-done]', { timeout: 120_000 });
    const ids = JSON.parse((await b.page.getAttribute('#answer', 'data-ids'))!) as number[];
    const text = await b.page.textContent('#answer');
    assert.deepEqual(ids, expected.tokenIds, "the page generated the engine's greedy tokens");
    assert.equal(text, expected.text.trim());
    assert.deepEqual(outside, [], 'no request left 127.0.0.1');
    assert.deepEqual(
      b.problems.filter((p) => !/onnxruntime|Unknown CPU vendor|powerPreference/.test(p)),
      [],
    );
  } finally {
    await b.close();
  }
});
