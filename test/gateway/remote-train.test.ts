/**
 * On-policy remote agent rollouts end to end: `vqalab serve --gateway-key-env` as a child process
 * on loopback, a Trainer here with `agent: { command, gateway: { url, adminKey } }`. Each step opens
 * the attempts there, runs the agent processes here against the remote per-attempt URLs, reads
 * the records back, trains on them and pushes the new weights; the next step's rollouts are
 * sampled by exactly those weights. A record of an older weight version is refused.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServe, type ServeCommand } from '../helpers/serve-command.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runTrainAgent } from '../../src/cli/train-agent.js';
import { loadModel } from '../../src/engine/index.js';
import type { EngineModel, ImageInput } from '../../src/engine/types.js';
import { RemoteAttempts, recordFromJson, StaleWeightsError } from '../../src/gateway/remote.js';
import '../../src/gateway/trainer-step.js'; // registers the agent step Trainer({ agent }) runs
import { Trainer } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { applyWeights, decodeWeights, encodeWeights, pushWeights } from '../../src/serve/weights.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { UsageError } from '../../src/util/errors.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';
import { twoTurnAgent } from './helpers/two-turn-agent.js';

const ADMIN = 'admin-key-for-the-remote-train-test';

let fx: Fixture;
let dir: string;
let server: ServeCommand;
let origin: string;
const models: EngineModel[] = [];

before(async () => {
  fx = await makeFixture();
  dir = mkdtempSync(path.join(tmpdir(), 'vqalab-remote-train-'));
  // The reward is the final answer's length: it differs between attempts, so every group carries a
  // signal and every step updates (this test is about the plumbing, not about learning).
  writeFileSync(path.join(dir, 'agent.mjs'), twoTurnAgent('Math.min(1, text.length / 40)'));
  server = startServe(['--port', '0', '--quiet', '--gateway-key-env', 'GW_ADMIN'], { GW_ADMIN: ADMIN });
  origin = (await server.ready).replace(/\/v1$/, '');
});

after(async () => {
  await server?.stop();
  for (const m of models) m.dispose();
  fx?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function model(): Promise<EngineModel> {
  const m = await loadModel(DEFAULT_MODEL_DIR, { threads: 1 });
  models.push(m);
  return m;
}

async function admin(method: string, route: string, body?: unknown): Promise<any> {
  const res = await fetch(`${origin}${route}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${method} ${route}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const served = async () => (await admin('GET', '/admin/weights')).weight_version as number;

/** Max |recorded log-prob − m's forward log-prob| over a recorded call's completion. */
async function drift(m: EngineModel, c: any, images: ImageInput[]): Promise<number> {
  const [r] = await m.forward([
    {
      prompt: { ids: Int32Array.from(c.prompt_ids as number[]), images },
      completions: [Int32Array.from(c.choices[0].token_ids as number[])],
    },
  ]);
  let d = 0;
  (c.choices[0].logprobs as number[]).forEach((lp, k) => {
    d = Math.max(d, Math.abs(lp - r!.logprobs[0]![k]!));
  });
  return d;
}

test('Trainer({ agent: { gateway } }): two on-policy steps through a remote vqalab serve', async (t) => {
  const tokenizer = VlmTokenizer.load(DEFAULT_MODEL_DIR);
  const m = await model();
  const pushed = await model(); // a copy of the weights pushed after step 0
  const base = await model(); // the starting weights
  const images = new LocalPolicy({ model: base, tokenizer }); // the test's own image processing
  const trainer = new Trainer({
    model: m,
    tokenizer,
    train: fx.samples,
    rewards: [],
    recordFacts: false,
    loadImages: async (s) => [await images.image(s.imagePath)],
    agent: {
      command: [process.execPath, path.join(dir, 'agent.mjs')],
      concurrency: 4,
      timeoutMs: 120_000,
      gateway: { url: `${origin}/v1`, adminKey: ADMIN, keepRecords: true },
    },
    config: { promptsPerStep: 2, numGenerations: 4, learningRate: 5e-3, seed: 3 },
  });
  // A warm start moves the trainer's weights before the first step: the step pushes them first.
  await trainer.sft({ steps: 1, batchSize: 4, learningRate: 1e-3 });
  assert.equal(m.stepCount, 1);
  const versions = [await served()];
  assert.equal(versions[0], 0, 'the server starts on the weights it loaded');
  const records: any[][] = [];
  await trainer.run({
    steps: 2,
    dashboard: false,
    handleSigint: false,
    onStep: async (out) => {
      const a = out.metrics.extra!.agent as Record<string, any>;
      const groups = trainer.lastAgentGroups;
      assert.equal(
        a.failedAttempts,
        0,
        groups
          .flatMap((g) => g.attempts)
          .map((x) => x.error ?? '')
          .join('\n'),
      );
      assert.equal(a.offPolicyTrajectories, 0);
      // The server serves the weights this step produced.
      const v = await served();
      versions.push(v);
      assert.equal(v, m.stepCount, 'pushed after the update');
      assert.equal(a.pushedVersion, v);
      t.diagnostic(
        `step ${out.step}: sampled by version ${a.weightVersion}, pushed ${a.pushedVersion} in ${a.pushSeconds.toFixed(2)} s; reward ${out.metrics.rewardMean.toFixed(3)}, drift ${a.maxLogprobDrift}`,
      );
      // Every trained trajectory's ids are the ids the server recorded (read back independently).
      const recs: any[] = [];
      for (const g of groups) {
        for (const [k, at] of g.attempts.entries()) {
          const rec = await admin('GET', `/rollouts/${at.rolloutId}/attempts/${at.attemptId}`);
          recs.push(rec);
          assert.equal(rec.calls.length, 2);
          for (const c of rec.calls) assert.equal(c.weight_version, a.weightVersion);
          const traj = g.trajectories[k]!;
          const policy: number[] = [];
          for (const seg of traj.segments) {
            const all = [...seg.prompt.ids, ...seg.tokenIds];
            for (const ci of seg.calls) {
              const c = rec.calls[ci];
              const head = [...c.prompt_ids, ...c.choices[0].token_ids];
              assert.deepEqual(all.slice(0, head.length), head, `call ${ci} of ${at.attemptId}`);
            }
            seg.tokenIds.forEach((id, i) => {
              if (seg.mask[i]) policy.push(id);
            });
          }
          assert.deepEqual(
            policy,
            rec.calls.flatMap((c: any) => c.choices[0].token_ids),
            'the policy tokens are the recorded completions',
          );
        }
      }
      records.push(recs);
      if (out.step === 0) {
        assert.equal(a.weightVersion, 1, 'step 0 sampled with the warm-started weights, pushed before it');
        const body = await encodeWeights(m, { version: m.stepCount, kind: 'full' });
        await applyWeights(pushed, decodeWeights(pushed, body.bytes).tensors);
      } else {
        assert.equal(a.weightVersion, versions[1], "step 1 sampled with step 0's pushed weights");
      }
    },
  });
  assert.ok(versions[1]! > versions[0]! && versions[2]! > versions[1]!, `versions ${versions.join(' → ')}`);

  // Step 1's recorded sampling log-probs are the trainer's own forward of the weights it pushed.
  let onPushed = 0,
    onBase = 0;
  for (const rec of records[1]!) {
    const sample = fx.samples.find((s) => s.id === rec.rollout_id.replace(/^s\d+-[0-9a-f]+-\d+-/, ''))!;
    const img = [await images.image(sample.imagePath)];
    for (const c of rec.calls) {
      onPushed = Math.max(onPushed, await drift(pushed, c, img));
      onBase = Math.max(onBase, await drift(base, c, img));
    }
  }
  t.diagnostic(`step 1: drift against the pushed weights ${onPushed}, against the starting weights ${onBase}`);
  assert.ok(onPushed < 1e-4, `drift against the pushed weights: ${onPushed}`);
  assert.ok(onBase > 1e-3, `the starting weights give other log-probs (${onBase})`);

  // A record of an older weight version is refused: read back by hand …
  const now = await served();
  const old = records[1]![0]!;
  const sample = fx.samples.find((s) => old.rollout_id.endsWith(`-${s.id}`))!;
  const img = [await images.image(sample.imagePath)];
  assert.doesNotThrow(() => recordFromJson(old, { images: img, expectedVersion: old.calls[0].weight_version }));
  assert.throws(
    () => recordFromJson(old, { images: img, expectedVersion: now }),
    (e: unknown) =>
      e instanceof StaleWeightsError &&
      new RegExp(
        `call 0 was sampled by weight version ${old.calls[0].weight_version}, but this step trains on version ${now}: completions of other weights are refused`,
      ).test(e.message),
  );
  // … and through the runner's host: the attempt fails with that reason and is not trained on.
  const target = { url: origin, adminKey: ADMIN };
  const host = new RemoteAttempts({ target, weightVersion: now, images: async () => img });
  const ids = { rolloutId: 'stale', attemptId: 'a0' };
  const ep = await host.open(ids, sample);
  const r = await fetch(`${ep.baseUrl}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ep.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'auto', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }),
  });
  assert.equal(r.status, 200);
  await fetch(ep.eventUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${ep.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ event_type: 'reward', data: { value: 1 } }),
  });
  await pushWeights(m, [target], { version: now + 1 }); // the server moves on before the record is read
  const late = new RemoteAttempts({ target, weightVersion: now + 1, images: async () => img });
  const rec = await late.finish(ids, { exitCode: 0 });
  assert.equal(rec.status, 'failed');
  assert.match(rec.error!, new RegExp(`sampled by weight version ${now}, but this step trains on version ${now + 1}`));
  await late.release([ids]);
});

test('vqalab train --agent --gateway: a key the server refuses is said before anything loads, never printed', async () => {
  process.env.VQALAB_TEST_WRONG_KEY = 'not-the-admin-key';
  try {
    await assert.rejects(
      runTrainAgent(['--agent', 'x', '--gateway', origin, '--gateway-key-env', 'VQALAB_TEST_WRONG_KEY']),
      (e: unknown) =>
        e instanceof Error &&
        !(e instanceof UsageError) &&
        /GET .*\/admin\/weights: HTTP 401.*is the admin key right/s.test(e.message) &&
        !e.message.includes('not-the-admin-key'),
    );
  } finally {
    delete process.env.VQALAB_TEST_WRONG_KEY;
  }
});
