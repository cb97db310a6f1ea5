/**
 * `vqalab serve --gateway-key-env VAR` in its own process on loopback: a runner elsewhere opens an
 * attempt with the admin key, runs the example agent against the remote per-attempt URL, closes
 * the attempt and reads its record back as JSON — token ids, log-probs, image grids, weight
 * version, the reward — without the admin key nothing of this is reachable.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startServe, type ServeCommand } from '../helpers/serve-command.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLE = path.resolve(here, '..', '..', 'examples', 'agents', 'vqa-agent.js');
const ADMIN = 'admin-key-for-the-test';

let fx: Fixture;
let server: ServeCommand;
let origin: string;

before(async () => {
  fx = await makeFixture();
  server = startServe(['--port', '0', '--quiet', '--gateway-key-env', 'GW_ADMIN'], { GW_ADMIN: ADMIN });
  origin = (await server.ready).replace(/\/v1$/, '');
});

after(async () => {
  await server?.stop();
  fx?.cleanup();
});

async function call(
  method: string,
  url: string,
  key: string | null,
  body?: unknown,
): Promise<{ status: number; json: any }> {
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
  return { status: res.status, json };
}

test('a remote runner opens an attempt, runs the example agent against it and reads back its token-exact record', async () => {
  const sample = fx.samples[0]!;
  const at = `${origin}/rollouts/remote-1/attempts/a0`;
  // Without the admin key the attempt does not exist.
  assert.equal((await call('POST', at, 'not-admin', {})).status, 404);
  const opened = await call('POST', at, ADMIN, { task: { id: sample.id } });
  assert.equal(opened.status, 201, JSON.stringify(opened.json));
  assert.equal(opened.json.base_url, `${at}/v1`);
  assert.equal((await call('POST', at, ADMIN, {})).json.error.code, 'attempt_exists');
  const agent = spawn(process.execPath, [EXAMPLE], {
    env: {
      ...process.env,
      AGL_OPENAI_BASE_URL: opened.json.base_url,
      AGL_EVENT_URL: opened.json.event_url,
      AGL_KEY: opened.json.key,
      QUESTION: sample.question,
      ANSWER: sample.answer,
      IMAGE_PATH: sample.imagePath,
      ID: sample.id,
      TASK_JSON: JSON.stringify({ answers: sample.answers }),
      AGENT_ALWAYS_REFINE: '1',
      AGENT_MAX_TOKENS: '4',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '',
    stderr = '';
  agent.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  agent.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((r) => agent.on('close', (c) => r(c)));
  assert.equal(code, 0, stderr);
  const finished = await call('POST', `${at}/finish`, ADMIN, { exit_code: code, stderr_tail: stderr });
  assert.equal(finished.json.status, 'succeeded', JSON.stringify(finished.json).slice(0, 500));
  const rec = (await call('GET', at, ADMIN)).json;
  const reported = JSON.parse(stdout.trim()) as { reward: number; turns: number };
  assert.equal(rec.reward, reported.reward);
  assert.equal(rec.calls.length, 3);
  for (const [k, c] of (rec.calls as any[]).entries()) {
    assert.equal(c.weight_version, 0);
    assert.deepEqual(
      c.images.map((i: any) => i.grid_thw),
      [[1, 8, 8]],
    );
    assert.equal(c.choices[0].token_ids.length, c.choices[0].logprobs.length);
    if (k > 0) {
      // Each call continues from an earlier call's prompt and sampled ids: the previous one's, or,
      // when those do not decode to the text the agent sent back (the tiny model often samples a
      // special token, which the text leaves out), the latest earlier one's that do; with none, the
      // chat template's ids are used as they are. (A character cut by the token limit is no
      // reason: the text holds it as U+FFFD, the decode of its ids; test/gateway/cut-character.)
      const extended = (rec.calls as any[]).slice(0, k).findLastIndex((prev) => {
        const head = [...prev.prompt_ids, ...prev.choices[0].token_ids];
        return JSON.stringify(c.prompt_ids.slice(0, head.length)) === JSON.stringify(head);
      });
      assert.ok(
        extended >= 0 || JSON.stringify(c.prompt_ids) === JSON.stringify(c.template_ids),
        `call ${k}: neither an earlier call's ids nor the template's; answers ${JSON.stringify(rec.calls.map((x: any) => x.choices[0].text))}`,
      );
    }
  }
  // The attempt is closed: its key no longer works for calls.
  const late = await call('POST', `${opened.json.base_url}/chat/completions`, opened.json.key, {
    model: 'auto',
    messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(late.json.error.code, 'attempt_finished');
});
