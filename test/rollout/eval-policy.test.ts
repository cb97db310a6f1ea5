/**
 * Baseline comparison: evaluatePolicies with policies whose answers are known (the official metric
 * per answer type, errors, latency, tokens, cost, display bundles), and `vqalab eval-policy`
 * comparing the local engine with the same engine behind `vqalab serve`, keys from flags and env.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VqaDataset } from '../../src/data/dataset.js';
import type { VqaSample } from '../../src/data/types.js';
import { MIME } from '../../src/display/types.js';
import { comparisonBundles, comparisonText, showComparison } from '../../src/display/comparison.js';
import { evaluatePolicies, percentile } from '../../src/rollout/compare.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { readSamplesFile } from '../../src/rollout/samples.js';
import type { Completion, Policy, SamplingOptions } from '../../src/rollout/types.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { makeFixture, type Fixture } from './fixtures.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
let fx: Fixture;
let local: LocalPolicy;
let server: ServeHandle;
let locked: ServeHandle;

before(async () => {
  fx = await makeFixture();
  local = await LocalPolicy.load(undefined, { threads: 1 });
  server = await serve({ policy: local, port: 0 });
  locked = await serve({ policy: local, port: 0, apiKey: 'sk-env-key' });
});

after(async () => {
  await server?.close();
  await locked?.close();
  local?.dispose();
  fx?.cleanup();
});

/** A policy answering by a rule, with a fixed latency and token counts. */
function scripted(name: string, answer: (s: VqaSample) => string | Error, latencyMs = 10): Policy {
  let k = 0;
  return {
    name,
    async generate(sample: VqaSample, o: SamplingOptions): Promise<Completion[]> {
      assert.equal(o.temperature, 0);
      const a = answer(sample);
      const id = `r${++k}`;
      if (a instanceof Error) return [{ text: '', finishReason: 'error', error: a.message }];
      return [
        {
          text: `<answer>${a}</answer>`,
          finishReason: 'stop',
          latencyMs: latencyMs * k,
          requestId: id,
          usage: { promptTokens: 100, completionTokens: 5 },
        },
      ];
    },
  };
}

test('the official metric per answer type, exact match, errors, latency percentiles, tokens and cost', async () => {
  const oracle = scripted('oracle', (s) => s.answer);
  const yellow = scripted('openai:always-yellow@http://127.0.0.1:1/v1', (s) =>
    s.answerType === 'yes/no' ? 'no' : 'Yellow',
  );
  const flaky = scripted('flaky', (s) => (s.id.startsWith('1') ? new Error('HTTP 500: boom') : s.answer));
  const cmp = await evaluatePolicies([oracle, yellow, flaky], fx.samples, {
    prices: { 'always-yellow': { input: 1, output: 10 } },
    dataset: 'circles',
  });
  assert.equal(cmp.questions, 8);
  assert.deepEqual(cmp.answerTypes, ['other', 'yes/no']);
  const [o, y, f] = cmp.policies;
  assert.deepEqual([o!.overall, o!.perAnswerType], [100, { other: 100, 'yes/no': 100 }]);
  assert.equal(o!.exactMatch, 100);
  // "Yellow" is right for 1 of the 4 colour questions (normalised like the official code), "no" never.
  assert.deepEqual([y!.overall, y!.perAnswerType], [12.5, { other: 25, 'yes/no': 0 }]);
  assert.equal(y!.exactMatch, 12.5);
  assert.equal(f!.errors, 2);
  assert.deepEqual([f!.overall, f!.perAnswerType], [75, { other: 75, 'yes/no': 75 }]);
  assert.deepEqual(f!.errorMessages, ['HTTP 500: boom']);
  assert.equal(f!.rows.find((r) => r.id === '1c')!.error, 'HTTP 500: boom');
  assert.deepEqual(o!.latencyMs, { p50: 40, p99: 80, mean: 45, max: 80 });
  assert.deepEqual(o!.tokens, { prompt: 800, completion: 40, total: 840, known: true });
  assert.equal(o!.cost, null, 'no price for "oracle"');
  assert.equal(y!.cost, (800 * 1 + 40 * 10) / 1e6, 'priced by the model name of openai:<model>@<url>');
  assert.equal(o!.rows[0]!.prediction, 'red', 'the answer is taken from the <answer> tag');

  const text = comparisonText(cmp);
  assert.match(text, /^VQA accuracy \(official metric, %\) on 8 questions of circles\n/);
  assert.match(text, /oracle\s+100\.00\s+100\.00\s+100\.00\s+100\.00\s+0\/8/);
  assert.match(text, /flaky: 2 failed request\(s\), e\.g\. HTTP 500: boom/);

  const b = comparisonBundles(cmp);
  assert.match(b.table['text/html'] as string, /<table class="vqa-stats">/);
  assert.equal(b.table['text/plain'], text);
  const plot = b.plot[MIME.metrics] as { runs: { name: string; points: { step: number; accuracy: number }[] }[] };
  assert.deepEqual(
    plot.runs.map((r) => r.name),
    ['oracle', 'openai:always-yellow@http://127.0.0.1:1/v1', 'flaky'],
  );
  assert.equal(plot.runs[1]!.points.at(-1)!.accuracy, 0.125);
  const table = b.questions[MIME.rewards] as {
    rewards: string[];
    rows: { disagreement: number; errors?: Record<string, string> }[];
    stats: { mean: Record<string, number> };
  };
  assert.equal(table.rows.length, 8);
  assert.equal(table.stats.mean.oracle, 1);
  assert.equal(table.rows[2]!.errors!.flaky, 'HTTP 500: boom');
  const shown: unknown[] = [];
  showComparison(cmp, { sink: { display: (bundle) => shown.push(bundle) } });
  assert.equal(shown.length, 3);
});

test('percentiles are nearest-rank', () => {
  assert.equal(percentile([], 50), null);
  assert.equal(percentile([5], 99), 5);
  assert.equal(percentile([4, 1, 3, 2], 50), 2);
  assert.equal(
    percentile(
      Array.from({ length: 100 }, (_x, i) => i + 1),
      99,
    ),
    99,
  );
  assert.equal(
    percentile(
      Array.from({ length: 100 }, (_x, i) => i + 1),
      100,
    ),
    100,
  );
});

test('the samples file: seed schema as JSON Lines (relative image paths) and as Parquet through the data layer; row-level errors', async () => {
  const samples = await readSamplesFile(fx.file);
  assert.deepEqual(samples, fx.samples);
  const parquet = path.join(fx.dir, 'samples.parquet');
  await VqaDataset.fromSamples(fx.samples).writeParquet(parquet);
  const fromParquet = await readSamplesFile(parquet);
  assert.deepEqual(
    fromParquet.map((s) => [s.id, s.imagePath, s.question, s.answers, s.answerType]),
    fx.samples.map((s) => [s.id, s.imagePath, s.question, s.answers, s.answerType]),
  );
  const bad = path.join(fx.dir, 'bad.jsonl');
  writeFileSync(
    bad,
    '{"id": "a", "image_path": "x.png", "question": "q?", "answer": "yes"}\n{"id": "b", "image_path": "x.png", "answer": "no"}\n',
  );
  await assert.rejects(readSamplesFile(bad), { message: `${bad}: line 2: missing field "question"` });
  const badJson = path.join(fx.dir, 'bad.json');
  writeFileSync(badJson, '[{"id": "a", "image_path": "x.png", "question": "q?", "answers": [{"answer": 3}]}]');
  await assert.rejects(readSamplesFile(badJson), {
    message: `${badJson}: row 0: answers[0] must be a string or {answer: string}`,
  });
});

function run(
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, VQALAB_THREADS: '1', OPENAI_API_KEY: '', OPENAI_BASE_URL: '', ...env },
    });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('vqalab eval-policy: the local engine and the same engine behind vqalab serve agree; JSON, HTML and cost', async () => {
  const out = path.join(fx.dir, 'cmp.json'),
    html = path.join(fx.dir, 'cmp.html');
  const r = await run([
    'eval-policy',
    '--dataset',
    fx.file,
    '--policy',
    'local:default',
    '--policy',
    `openai:vqalab@${server.url}`,
    '--limit',
    '6',
    '--n-runners',
    '2',
    '--max-tokens',
    '4',
    '--price',
    'vqalab=1,2',
    '--json',
    '--output',
    out,
    '--html',
    html,
    '--quiet',
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const json = JSON.parse(r.stdout);
  assert.deepEqual(JSON.parse(readFileSync(out, 'utf8')), json);
  assert.equal(json.questions, 6);
  const [a, b] = json.policies;
  assert.equal(a.name, 'local:default');
  assert.equal(b.name, `openai:vqalab@${server.url}`);
  assert.deepEqual(
    b.rows.map((x: { prediction: string }) => x.prediction),
    a.rows.map((x: { prediction: string }) => x.prediction),
    'greedy: the same answers',
  );
  assert.equal(b.overall, a.overall);
  assert.deepEqual(Object.keys(a.perAnswerType), ['other', 'yes/no']);
  assert.deepEqual(b.tokens, a.tokens);
  assert.equal(a.errors + b.errors, 0);
  assert.ok(a.latencyMs.p50 > 0 && b.latencyMs.p99 >= b.latencyMs.p50);
  assert.equal(a.cost, null);
  assert.equal(b.cost, (b.tokens.prompt * 1 + b.tokens.completion * 2) / 1e6);
  const page = readFileSync(html, 'utf8');
  assert.match(page, /^<!doctype html>/);
  assert.match(page, /Policy comparison on samples\.jsonl \(6 questions\)/);
  assert.match(page, /data-vqa="metrics"/);
  assert.match(page, /data-vqa="rewards"/);
});

test('vqalab eval-policy: API key from --api-key-env; without it every request fails with 401 and the exit code says so', async () => {
  const spec = `openai:vqalab@${locked.url}`;
  const ok = await run(
    [
      'eval-policy',
      '--dataset',
      fx.file,
      '--policy',
      spec,
      '--limit',
      '2',
      '--max-tokens',
      '2',
      '--api-key-env',
      'MY_KEY',
      '--quiet',
    ],
    { MY_KEY: 'sk-env-key' },
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /0\/2/);
  const fromDefault = await run(
    ['eval-policy', '--dataset', fx.file, '--policy', spec, '--limit', '1', '--max-tokens', '2', '--quiet'],
    { OPENAI_API_KEY: 'sk-env-key' },
  );
  assert.equal(fromDefault.code, 0, fromDefault.stderr);
  const denied = await run([
    'eval-policy',
    '--dataset',
    fx.file,
    '--policy',
    spec,
    '--limit',
    '2',
    '--max-tokens',
    '2',
    '--quiet',
  ]);
  assert.equal(denied.code, 1);
  assert.match(denied.stdout, /2 failed request\(s\), e\.g\. sample 0c: HTTP 401: Incorrect API key provided/);
});

test('vqalab eval-policy: usage errors', async () => {
  let r = await run(['eval-policy', '--policy', 'local:default']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /missing --dataset FILE/);
  r = await run(['eval-policy', '--dataset', fx.file]);
  assert.match(r.stderr, /give at least one --policy/);
  r = await run(['eval-policy', '--dataset', fx.file, '--policy', 'local:default', '--price', 'x=1']);
  assert.match(r.stderr, /--price must be NAME=IN,OUT/);
  r = await run(['eval-policy', '--dataset', fx.file, '--policy', 'hf:some/model']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /--policy hf:some\/model: unknown policy "hf:some\/model": expected local:<checkpoint> or openai:<model>@<base-url>/,
  );
  r = await run([
    'eval-policy',
    '--dataset',
    fx.file,
    '--policy',
    'openai:m@http://127.0.0.1:1/v1',
    '--api-key-env',
    'NOT_SET_ANYWHERE',
  ]);
  assert.match(r.stderr, /the API key variable NOT_SET_ANYWHERE is empty or not set/);
  r = await run(['eval-policy', '--dataset', path.join(fx.dir, 'nope.jsonl'), '--policy', 'local:default']);
  assert.match(r.stderr, /nope\.jsonl: cannot read \(ENOENT\)/);
  assert.ok(existsSync(fx.file));
});
