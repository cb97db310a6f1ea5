/**
 * On-policy remote rollouts (issue 16): two `vqalab serve` processes on loopback, each with the
 * training gateway, one on the embedded tiny model (full weights), one on a LoRA adapter folder.
 * A trainer in this process pushes its weights after its updates (`weightPush`); each server then
 * samples with exactly the trainer's weights (the log-probs it records equal the trainer model's
 * forward, and differ from the weights it started with), every reply and recorded call names its
 * weight version, an attempt bound to an older version is refused, a push of an old version is
 * refused, and a push that arrives while a completion streams waits for it: the whole completion
 * comes from one version.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/engine/index.js';
import type { EngineModel } from '../../src/engine/types.js';
import { weightPush } from '../../src/gateway/push.js';
import { Trainer, type TrainerOptions } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { pushWeights, WEIGHT_VERSION_HEADER } from '../../src/serve/weights.js';
import { tinyImages, tinySamples, tinyShaped, tinyTokenizer } from '../grpo/helpers/tiny-task.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(here, '..', '..', '..', 'bin', 'vqalab.js');
const ADMIN = 'admin-key-for-the-push-test';
const LORA = { rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], vision: false, seed: 3 };

const tokenizer = tinyTokenizer();
const models: EngineModel[] = [];
const servers: ChildProcess[] = [];
let dir: string;
let full: string, lora: string;

function startServe(args: string[]): Promise<string> {
  const server = spawn(
    process.execPath,
    [BIN, 'serve', '--port', '0', '--threads', '1', '--quiet', '--gateway-key-env', 'GW_ADMIN', ...args],
    {
      env: { ...process.env, GW_ADMIN: ADMIN },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  servers.push(server);
  let err = '';
  server.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise<string>((resolve, reject) => {
    let out = '';
    server.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)\/v1/.exec(out);
      if (m) resolve(m[1]!);
    });
    server.on('exit', (code) => reject(new Error(`vqalab serve exited with ${code}: ${err}`)));
  });
}

async function model(lo = false): Promise<EngineModel> {
  const m = await loadModel(DEFAULT_MODEL_DIR, { threads: 1, ...(lo ? { lora: LORA } : {}) });
  models.push(m);
  return m;
}

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'vqalab-push-'));
  // The adapter folder the second server starts on: the trainer's LoRA layout, B = 0 (the base's outputs).
  const l = await model(true);
  await l.saveAdapter(path.join(dir, 'adapter'));
  [full, lora] = await Promise.all([startServe([]), startServe(['--model', path.join(dir, 'adapter')])]);
});

after(async () => {
  await Promise.all(
    servers
      .filter((s) => s.exitCode === null)
      .map((s) => {
        const gone = new Promise((r) => s.once('exit', r));
        s.kill('SIGTERM');
        return gone;
      }),
  );
  for (const m of models) m.dispose();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function call(
  method: string,
  url: string,
  key: string | null,
  body?: unknown,
): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

function options(m: EngineModel, extra: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    model: m,
    tokenizer,
    train: tinySamples(16),
    rewards: [tinyShaped],
    loadImages: tinyImages,
    recordFacts: false,
    config: { promptsPerStep: 2, numGenerations: 4, maxCompletionLength: 3, learningRate: 2e-2, seed: 11 },
    ...extra,
  };
}

let attempts = 0;
/** Open an attempt on `origin` (bound to `weightVersion` when given). */
async function open(origin: string, weightVersion?: number): Promise<{ at: string; base: string; key: string }> {
  const at = `${origin}/rollouts/push/attempts/a${attempts++}`;
  const r = await call('POST', at, ADMIN, weightVersion === undefined ? {} : { weight_version: weightVersion });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return { at, base: r.json.base_url, key: r.json.key };
}

const MESSAGES = [{ role: 'user', content: 'What color is the circle?' }];

/** Max |recorded log-prob − the model's forward log-prob| over a recorded call's tokens. */
async function drift(m: EngineModel, c: any): Promise<number> {
  const ids = Int32Array.from(c.choices[0].token_ids as number[]);
  const [r] = await m.forward([
    { prompt: { ids: Int32Array.from(c.prompt_ids as number[]), images: [] }, completions: [ids] },
  ]);
  let d = 0;
  (c.choices[0].logprobs as number[]).forEach((lp, k) => {
    d = Math.max(d, Math.abs(lp - r!.logprobs[0]![k]!));
  });
  return d;
}

test('full weights pushed by the trainer after its updates: the server samples with them and names the version', async () => {
  const m = await model();
  const base = await model();
  const pusher = weightPush({ servers: [{ url: `${full}/v1`, adminKey: ADMIN }], kind: 'full' });
  const trainer = new Trainer(options(m, { callbacks: [pusher] }));
  await trainer.sft({ steps: 2, batchSize: 4, learningRate: 2e-2 });
  assert.equal(pusher.version, 0, 'nothing is pushed before a run');
  await trainer.run({ steps: 1, handleSigint: false });
  assert.ok(m.stepCount >= 2);
  assert.equal(pusher.version, m.stepCount, 'pushed before the run and after its step');
  const health = await call('GET', `${full}/health`, null);
  assert.equal(health.json.weight_version, m.stepCount);
  const got = await call('GET', `${full}/admin/weights`, ADMIN);
  assert.equal(got.json.weight_version, m.stepCount);
  assert.equal((await call('GET', `${full}/admin/weights`, 'wrong')).status, 401);

  // A plain /v1 reply names its version (body and header).
  const plain = await call('POST', `${full}/v1/chat/completions`, null, {
    model: 'vqalab',
    messages: MESSAGES,
    max_tokens: 4,
    seed: 1,
  });
  assert.equal(plain.status, 200, JSON.stringify(plain.json));
  assert.equal(plain.json.weight_version, m.stepCount);
  assert.equal(plain.headers.get(WEIGHT_VERSION_HEADER), String(m.stepCount));

  // A recorded call: its log-probs are the trainer model's, not the starting weights'.
  const a = await open(full);
  const r = await call('POST', `${a.base}/chat/completions`, a.key, {
    model: 'auto',
    messages: MESSAGES,
    max_tokens: 12,
    seed: 5,
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const rec = (await call('GET', a.at, ADMIN)).json;
  const c = rec.calls[0];
  assert.equal(c.weight_version, m.stepCount);
  assert.ok((await drift(m, c)) < 1e-4, `drift against the trainer's weights: ${await drift(m, c)}`);
  assert.ok((await drift(base, c)) > 1e-3, `the starting weights give other log-probs (drift ${await drift(base, c)})`);
});

test('stale samples: an attempt bound to an older version is refused, and so is a push of an old version', async () => {
  const m = await model();
  // A second pusher to the same server continues from the version it serves.
  const served = (await call('GET', `${full}/admin/weights`, ADMIN)).json.weight_version as number;
  const trainer = new Trainer(options(m));
  await trainer.sft({ steps: served + 1, batchSize: 4, learningRate: 1e-2 });
  const pusher = weightPush({ servers: [{ url: full, adminKey: ADMIN }] });
  const [pushed] = await pusher.sync(m);
  assert.equal(pushed!.version, served + 1);
  assert.equal(pushed!.kind, 'full', 'a model without LoRA pushes all its tensors');

  const a = await open(full, served + 1);
  const ok = await call('POST', `${a.base}/chat/completions`, a.key, {
    model: 'auto',
    messages: MESSAGES,
    max_tokens: 3,
    seed: 2,
  });
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  await trainer.sft({ steps: 1, batchSize: 4, learningRate: 1e-2 });
  await pusher.sync(m);
  const stale = await call('POST', `${a.base}/chat/completions`, a.key, {
    model: 'auto',
    messages: MESSAGES,
    max_tokens: 3,
    seed: 2,
  });
  assert.equal(stale.status, 409);
  assert.equal(stale.json.error.code, 'stale_weights');
  assert.match(
    stale.json.error.message,
    new RegExp(`bound to weight version ${served + 1}, but the server now serves version ${served + 2}`),
  );
  const rec = (await call('GET', a.at, ADMIN)).json;
  assert.equal(rec.weight_version, served + 1);
  assert.deepEqual(
    rec.calls.map((c: any) => c.weight_version),
    [served + 1],
    'the refused call is not recorded',
  );

  await assert.rejects(
    pushWeights(m, [{ url: full, adminKey: ADMIN }], { version: served + 1 }),
    /HTTP 409: weight version \d+ is not newer than the version served now/,
  );
  await assert.rejects(pushWeights(m, [{ url: full, adminKey: 'wrong' }], { version: served + 9 }), /HTTP 401/);
  const bad = await fetch(`${full}/admin/weights`, {
    method: 'PUT',
    body: 'not safetensors',
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  assert.equal(bad.status, 400);
  assert.match(((await bad.json()) as any).error.message, /safetensors/);
  assert.equal(
    (await call('GET', `${full}/health`, null)).json.weight_version,
    served + 2,
    'refused pushes change nothing',
  );
});

test('LoRA adapters pushed to a server started on the adapter folder', async () => {
  const m = await model(true);
  const pusher = weightPush({ servers: [{ url: lora, adminKey: ADMIN }] });
  const trainer = new Trainer(options(m, { callbacks: [pusher] }));
  await trainer.sft({ steps: 2, batchSize: 4, learningRate: 5e-2 });
  const [p] = await pusher.sync(m);
  assert.equal(p!.kind, 'lora');
  assert.equal(p!.tensors, 2 * 2 * m.config.numLayers, 'A and B of q_proj and v_proj in each layer');
  const a = await open(lora, p!.version);
  const r = await call('POST', `${a.base}/chat/completions`, a.key, {
    model: 'auto',
    messages: MESSAGES,
    max_tokens: 12,
    seed: 5,
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const c = (await call('GET', a.at, ADMIN)).json.calls[0];
  assert.equal(c.weight_version, p!.version);
  assert.ok((await drift(m, c)) < 1e-4, `drift against the trainer's adapters: ${await drift(m, c)}`);
  m.setLoraEnabled(false);
  const off = await drift(m, c);
  m.setLoraEnabled(true);
  assert.ok(off > 1e-3, `the base alone gives other log-probs (drift ${off})`);
  // The full server has no adapters: a LoRA push to it is refused with the fix named.
  await assert.rejects(
    pushWeights(m, [{ url: full, adminKey: ADMIN }], { version: 10_000 }),
    /has no LoRA adapters.*--model ADAPTER_FOLDER/,
  );
});

test('a push that arrives while a completion streams waits for it: the completion comes from one version', async (t) => {
  // The starting weights (they do not stop after a word or two, so the completion is still
  // streaming when the push arrives), then one small update of them.
  const m = await model();
  const old = await model();
  const served = (await call('GET', `${full}/admin/weights`, ADMIN)).json.weight_version as number;
  await pushWeights(old, [{ url: full, adminKey: ADMIN }], { version: served + 1 });
  await new Trainer(options(m)).sft({ steps: 1, batchSize: 4, learningRate: 1e-3 });

  const a = await open(full);
  const res = await fetch(`${a.base}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${a.key}` },
    body: JSON.stringify({
      model: 'auto',
      messages: [{ role: 'user', content: 'Describe the picture in detail.' }],
      max_tokens: 400,
      seed: 9,
      stream: true,
    }),
  });
  assert.equal(res.headers.get(WEIGHT_VERSION_HEADER), String(served + 1));
  const reader = res.body!.getReader();
  const first = await reader.read(); // the stream has begun: the push goes out now
  let text = new TextDecoder().decode(first.value);
  const push = pushWeights(m, [{ url: full, adminKey: ADMIN }], { version: served + 2 });
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  const [pushed] = await push;
  t.diagnostic(`the push found ${pushed!.waitedFor} request(s) sampling and took ${pushed!.ms.toFixed(0)} ms`);
  const versions = new Set([...text.matchAll(/"weight_version":(\d+)/g)].map((x) => Number(x[1])));
  assert.deepEqual([...versions], [served + 1], 'every chunk names the version it started with');
  const c = (await call('GET', a.at, ADMIN)).json.calls[0];
  assert.equal(c.weight_version, served + 1);
  assert.ok(c.choices[0].token_ids.length > 1);
  t.diagnostic(`streamed ${c.choices[0].token_ids.length} tokens, finish ${c.choices[0].finish_reason}`);
  assert.ok((await drift(old, c)) < 1e-4, `every token comes from the old weights (drift ${await drift(old, c)})`);
  const after = await open(full);
  await call('POST', `${after.base}/chat/completions`, after.key, {
    model: 'auto',
    messages: MESSAGES,
    max_tokens: 8,
    seed: 9,
  });
  const c2 = (await call('GET', after.at, ADMIN)).json.calls[0];
  assert.equal(c2.weight_version, served + 2);
  assert.ok((await drift(m, c2)) < 1e-4);
});
