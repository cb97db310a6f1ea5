/**
 * `vqalab serve --backend onnx`: the OpenAI-compatible server over an exported folder, run by
 * onnxruntime-node, started as a command on loopback. The same requests (an image, greedy and seeded
 * sampling with n = 2, logprobs with top_logprobs, streaming) go to it and to the engine's server on
 * the checkpoint it was exported from: the same tokens and text, log-probs within fp32 tolerance.
 * Bad flags give clear errors.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportOnnx } from '../../src/export/index.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { synthOnDisk } from './helpers.js';
import { startServe } from '../helpers/serve-command.js';

/** On any free port. */
const start = (args: string[]) => startServe(['--port', '0', ...args]);

let work: string;
let exported: string;
let dataUrl: string;
let engine: ServeHandle;
let onnx: ReturnType<typeof start>;
let onnxUrl: string;

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'vqalab-onnx-serve-'));
  const [sample] = await synthOnDisk(path.join(work, 'synth'), 1);
  dataUrl = `data:image/png;base64,${readFileSync(sample!.imagePath).toString('base64')}`;
  exported = path.join(work, 'onnx');
  await exportOnnx({ model: DEFAULT_MODEL_DIR, out: exported, threads: 1 });
  engine = await serve({
    policy: await LocalPolicy.load(DEFAULT_MODEL_DIR, { threads: 1 }),
    port: 0,
    disposeOnClose: true,
  });
  onnx = start(['--backend', 'onnx', '--model', exported, '--name', 'vqalab', '--quiet']);
  onnxUrl = await onnx.ready;
});

after(async () => {
  onnx?.child.kill('SIGINT');
  await onnx?.exited;
  await engine?.close();
  rmSync(work, { recursive: true, force: true });
});

async function chat(url: string, body: Record<string, unknown>): Promise<any> {
  const r = await fetch(`${url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await r.json();
  assert.equal(r.status, 200, JSON.stringify(json));
  return json;
}

const messages = () => [
  {
    role: 'user',
    content: [
      { type: 'image_url', image_url: { url: dataUrl } },
      { type: 'text', text: 'what color is the largest shape?' },
    ],
  },
];

test('serve --backend onnx: starts on loopback, names its backend, lists the model', async () => {
  assert.match(onnxUrl, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  assert.match(onnx.out().stdout, /onnxruntime-node backend/);
  const models = (await (await fetch(`${onnxUrl}/models`)).json()) as { data: { id: string }[] };
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['vqalab'],
  );
});

test('serve --backend onnx: the same answers as the engine (greedy and seeded, n = 2, logprobs with top_logprobs)', async () => {
  for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 7, top_p: 0.9 }]) {
    const body = {
      model: 'vqalab',
      messages: messages(),
      n: 2,
      max_tokens: 6,
      logprobs: true,
      top_logprobs: 2,
      ...sampling,
    };
    const [a, b] = await Promise.all([chat(engine.url, body), chat(onnxUrl, body)]);
    assert.equal(b.choices.length, 2);
    assert.equal(b.usage.prompt_tokens, a.usage.prompt_tokens);
    for (let i = 0; i < 2; i++) {
      const ca = a.choices[i],
        cb = b.choices[i];
      assert.equal(cb.message.content, ca.message.content, `choice ${i} (${JSON.stringify(sampling)})`);
      assert.equal(cb.finish_reason, ca.finish_reason);
      const ta = ca.logprobs.content,
        tb = cb.logprobs.content;
      assert.ok(tb.length > 0);
      assert.deepEqual(
        tb.map((t: any) => t.token),
        ta.map((t: any) => t.token),
      );
      tb.forEach((t: any, k: number) => {
        assert.ok(Math.abs(t.logprob - ta[k].logprob) < 1e-4, `token ${k}: ${t.logprob} vs ${ta[k].logprob}`);
        assert.deepEqual(
          t.top_logprobs.map((x: any) => x.token),
          ta[k].top_logprobs.map((x: any) => x.token),
        );
        t.top_logprobs.forEach((x: any, j: number) =>
          assert.ok(Math.abs(x.logprob - ta[k].top_logprobs[j].logprob) < 1e-4),
        );
      });
    }
  }
});

test('serve --backend onnx: a stream adds up to the whole answer', async () => {
  const body = { model: 'vqalab', messages: messages(), max_tokens: 6, temperature: 0 };
  const whole = await chat(onnxUrl, body);
  const r = await fetch(`${onnxUrl}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  assert.equal(r.status, 200);
  const text = await r.text();
  const chunks = text
    .split('\n\n')
    .filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
    .map((l) => JSON.parse(l.slice(6)));
  assert.ok(text.trimEnd().endsWith('data: [DONE]'));
  const streamed = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(streamed, whole.choices[0].message.content);
  assert.ok(chunks.filter((c) => c.choices[0]?.delta?.content).length >= 2, 'tokens arrive in several chunks');
});

test('serve --backend: an unknown backend, a missing --model and a folder that is no export are clear errors', async () => {
  const bad = start(['--backend', 'tensorrt']);
  assert.equal(await bad.exited, 2);
  assert.match(bad.out().stderr, /--backend must be engine or onnx; got "tensorrt"/);
  const noModel = start(['--backend', 'onnx']);
  assert.equal(await noModel.exited, 2);
  assert.match(noModel.out().stderr, /--backend onnx needs --model DIR: a folder written by `vqalab export onnx`/);
  const notExport = start(['--backend', 'onnx', '--model', path.join(work, 'synth')]);
  assert.equal(await notExport.exited, 1);
  assert.match(
    notExport.out().stderr,
    /cannot load --model .*synth: .*not an exported model folder \(no config\.json\)/,
  );
});
