/**
 * Agent rollouts through the gateway on 127.0.0.1: the runner contract's environment, a crashing,
 * a hanging and a malformed-reward agent, the concurrency limit, and the example TypeScript agent
 * (examples/agents/vqa-agent.ts, the openai package, unmodified) run for 3 turns: its trajectory
 * is token-exact (the ids trained on are the ids the engine sampled and recorded, the prompt's
 * image pads included) and its non-policy tokens are masked out of the loss.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGateway, type StartedGateway } from '../../src/gateway/start.js';
import { policyTokens } from '../../src/gateway/trajectory.js';
import { maskedGrpoLoss } from '../../src/gateway/train.js';
import { agentGroupPayload } from '../../src/gateway/view.js';
import { rolloutAgentGroups, runAgentAttempt } from '../../src/gateway/agent.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The example agent as built by `npm run build` (dist/examples/agents/vqa-agent.js). */
const EXAMPLE = path.resolve(here, '..', '..', 'examples', 'agents', 'vqa-agent.js');

let policy: LocalPolicy;
let fx: Fixture;
let gw: StartedGateway;
let dir: string;

function script(name: string, body: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, body);
  return file;
}

/** The process has exited: no such process, or a zombie (an orphan whose exit the machine's init has not reaped yet). */
function ended(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}

const POST_REWARD = `
async function reward(value, raw) {
  const r = await fetch(process.env.AGL_EVENT_URL, { method: 'POST', headers: { authorization: 'Bearer ' + process.env.AGL_KEY, 'content-type': 'application/json' },
    body: raw ?? JSON.stringify({ event_type: 'reward', data: { value } }) });
  return { status: r.status, text: await r.text() };
}
`;

before(async () => {
  fx = await makeFixture();
  dir = mkdtempSync(path.join(tmpdir(), 'vqalab-agents-'));
  policy = await LocalPolicy.load(undefined, { threads: 1 });
  gw = await startGateway(policy, { gateway: { seed: 7 } });
});

after(async () => {
  await gw?.close();
  policy?.dispose();
  fx?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the runner contract', () => {
  test('the agent gets AGL_OPENAI_BASE_URL, AGL_EVENT_URL, AGL_KEY and the task; its output is kept per attempt', async () => {
    const agent = script(
      'contract.mjs',
      `${POST_REWARD}
const keys = ['AGL_OPENAI_BASE_URL', 'AGL_EVENT_URL', 'AGL_KEY', 'QUESTION', 'ANSWER', 'IMAGE_PATH', 'ID', 'TASK_JSON', 'MY_VAR'];
console.log(JSON.stringify(Object.fromEntries(keys.map((k) => [k, process.env[k]]))));
console.error('a note on stderr');
await reward(0.75);
`,
    );
    const sample = fx.samples[0]!;
    const rec = await runAgentAttempt(
      gw.gateway,
      sample,
      { command: [process.execPath, agent], env: { MY_VAR: 'x y' } },
      { rolloutId: 'contract' },
    );
    assert.equal(rec.status, 'succeeded', rec.error);
    assert.equal(rec.reward, 0.75);
    const env = JSON.parse(rec.stdoutTail!.trim()) as Record<string, string>;
    assert.match(
      env.AGL_OPENAI_BASE_URL!,
      /^http:\/\/127\.0\.0\.1:\d+\/rollouts\/contract\/attempts\/at-[0-9a-f]+\/v1$/,
    );
    assert.equal(env.AGL_EVENT_URL, env.AGL_OPENAI_BASE_URL!.replace(/\/v1$/, '/events'));
    assert.match(env.AGL_KEY!, /^agl-/);
    assert.deepEqual(
      [env.QUESTION, env.ANSWER, env.IMAGE_PATH, env.ID, env.MY_VAR],
      [sample.question, sample.answer, sample.imagePath, sample.id, 'x y'],
    );
    const row = JSON.parse(env.TASK_JSON!) as Record<string, unknown>;
    assert.deepEqual(
      [row.id, row.image_path, row.question, row.answer, row.answers, row.answer_type],
      [sample.id, sample.imagePath, sample.question, sample.answer, sample.answers, sample.answerType],
    );
    assert.equal(rec.stderrTail, 'a note on stderr\n');
  });

  test("a crashing agent, a hanging agent (timeout, its shell's children too) and a malformed reward: failed attempts with the reason", async () => {
    const crash = script(
      'crash.mjs',
      `console.error('loading the image failed: unsupported format'); process.exit(2);`,
    );
    const hang = script('hang.mjs', `console.log(process.pid); setInterval(() => {}, 1000);`);
    const nan = script(
      'nan.mjs',
      `${POST_REWARD}
const r = await reward(0, '{"event_type": "reward", "data": {"value": NaN}}');
console.error('reward refused: ' + r.status + ' ' + r.text);
`,
    );
    const [c, h, n] = await Promise.all([
      runAgentAttempt(gw.gateway, fx.samples[0]!, { command: [process.execPath, crash] }, { rolloutId: 'crash' }),
      // Through a shell, so the node process is the shell's child: the whole group is stopped.
      runAgentAttempt(
        gw.gateway,
        fx.samples[0]!,
        { command: `"${process.execPath}" "${hang}"`, timeoutMs: 1500 },
        { rolloutId: 'hang' },
      ),
      runAgentAttempt(gw.gateway, fx.samples[0]!, { command: [process.execPath, nan] }, { rolloutId: 'nan' }),
    ]);
    assert.equal(c.status, 'failed');
    assert.match(
      c.error!,
      /exited with code 2 without posting a reward \(0 calls recorded\); stderr tail:\nloading the image failed: unsupported format/,
    );
    assert.equal(h.status, 'failed');
    assert.equal(h.timedOut, true);
    assert.match(h.error!, /stopped after its timeout of 1500 ms/);
    const pid = Number(h.stdoutTail!.trim());
    assert.ok(pid > 0);
    assert.ok(ended(pid), "the hanging node process (the shell's child) is gone");
    assert.equal(n.status, 'failed');
    assert.match(n.error!, /without posting a reward/);
    assert.match(n.error!, /reward refused: 400 .*has NaN, which is not JSON; a reward must be a finite number/);
    assert.equal(n.events.length, 0);
  });

  test('no more agents run at once than the concurrency limit', async () => {
    const sleeper = script(
      'sleep.mjs',
      `${POST_REWARD}
console.log('start ' + Date.now());
await new Promise((r) => setTimeout(r, 150));
console.log('end ' + Date.now());
await reward(1);
`,
    );
    const groups = await rolloutAgentGroups(
      gw.gateway,
      fx.samples.slice(0, 3),
      3,
      { command: [process.execPath, sleeper], concurrency: 2 },
      { rolloutPrefix: 'conc' },
    );
    const spans = groups
      .flatMap((g) => g.attempts)
      .map((a) => {
        assert.equal(a.status, 'succeeded', a.error);
        const m = /start (\d+)\nend (\d+)/.exec(a.stdoutTail!)!;
        return [Number(m[1]), Number(m[2])] as const;
      });
    assert.equal(spans.length, 9);
    // Each attempt's process lives inside its slot, so at any process's start at most 2 are alive.
    for (const [s] of spans) assert.ok(spans.filter(([a, b]) => a <= s && s < b).length <= 2);
    assert.deepEqual(
      groups.map((g) => g.trajectories.map((t) => t.reward)),
      [
        [1, 1, 1],
        [1, 1, 1],
        [1, 1, 1],
      ],
    );
  });
});

describe('the example TypeScript agent (openai package), unmodified', () => {
  test('3 turns: a token-exact trajectory, non-policy tokens masked', async () => {
    const sample = fx.samples[0]!;
    const groups = await rolloutAgentGroups(
      gw.gateway,
      [sample, fx.samples[2]!],
      2,
      {
        command: [process.execPath, EXAMPLE],
        env: { AGENT_ALWAYS_REFINE: '1', AGENT_MAX_TOKENS: '6' },
        concurrency: 4,
      },
      { rolloutPrefix: 'example' },
    );
    for (const g of groups) {
      for (const [k, a] of g.attempts.entries()) {
        assert.equal(a.status, 'succeeded', a.error);
        assert.equal(a.calls.length, 3, 'look/answer, check, refine');
        assert.ok(a.reward === 0 || a.reward === 1);
        const out = JSON.parse(a.stdoutTail!.trim()) as { turns: number; reward: number };
        assert.deepEqual([out.turns, out.reward], [3, a.reward]);
        const t = g.trajectories[k]!;
        assert.equal(t.reward, a.reward);
        assert.equal(t.turns, 3);
        // The agent sends the conversation back with the model's answers in it: one sequence.
        assert.equal(t.segments.length, 1, 'the 3 calls merge into one sequence');
        const seg = t.segments[0]!;
        const [c0, c1, c2] = a.calls;
        // The prompt trained on is the first call's prompt, image pads and processed image included.
        assert.deepEqual(Array.from(seg.prompt.ids), Array.from(c0!.prompt.ids));
        assert.equal(seg.prompt.images[0], c0!.prompt.images[0]);
        // Policy tokens = the recorded completions, in order, with their sampling log-probs.
        assert.deepEqual(policyTokens(seg), [
          ...c0!.choices[0]!.tokenIds,
          ...c1!.choices[0]!.tokenIds,
          ...c2!.choices[0]!.tokenIds,
        ]);
        const lps: number[] = [];
        seg.logprobs.forEach((v, i) => {
          if (seg.mask[i]) lps.push(v);
        });
        assert.deepEqual(lps, [...c0!.choices[0]!.logprobs, ...c1!.choices[0]!.logprobs, ...c2!.choices[0]!.logprobs]);
        // The whole sequence is the last call's prompt and completion: nothing re-tokenised.
        assert.deepEqual([...seg.prompt.ids, ...seg.tokenIds], [...c2!.prompt.ids, ...c2!.choices[0]!.tokenIds]);
        // Masked: the user's check and refine turns and the template's markers between the answers.
        const masked = Array.from(seg.tokenIds).filter((_, i) => !seg.mask[i]);
        const between = (prev: typeof c0, next: typeof c0) =>
          Array.from(next!.prompt.ids.slice(prev!.prompt.ids.length + prev!.choices[0]!.tokenIds.length));
        assert.deepEqual(masked, [...between(c0, c1), ...between(c1, c2)]);
        assert.ok(policy.tokenizer.decode(masked, { skipSpecialTokens: false }).includes('Check your answer'));
        assert.ok(seg.logprobs.every((v, i) => (seg.mask[i] ? Number.isFinite(v) : Number.isNaN(v))));
      }
    }
    // The engine's log-probs of the trajectory's tokens are the sampling log-probs recorded.
    const seg = groups[0]!.trajectories[0]!.segments[0]!;
    const [fwd] = await policy.model.forward([{ prompt: seg.prompt, completions: [seg.tokenIds] }]);
    let drift = 0;
    seg.mask.forEach((m, i) => {
      if (m) drift = Math.max(drift, Math.abs(fwd!.logprobs[0]![i]! - seg.logprobs[i]!));
    });
    assert.ok(drift < 1e-4, `forward vs sampling log-probs differ by ${drift}`);
    // Masking: the loss's gradient is exactly 0 on masked tokens and not on policy tokens; the
    // log-probs of masked tokens do not change the loss.
    const opts = {
      epsilonLow: 0.2,
      epsilonHigh: 0.2,
      dualClip: 0,
      aggregation: 'token-mean' as const,
      maxCompletionLength: 64,
    };
    const rows = [{ mask: seg.mask, logprobs: seg.logprobs, advantage: 1 }];
    const a = maskedGrpoLoss(rows, [fwd!.logprobs[0]!], opts);
    seg.mask.forEach((m, i) => {
      if (m) assert.notEqual(a.gradLogprobs[0]![i], 0, `policy token ${i}`);
      else assert.equal(a.gradLogprobs[0]![i], 0, `masked token ${i}`);
    });
    const policyCount = seg.mask.reduce((s, m) => s + m, 0);
    assert.equal(a.metrics.tokens, policyCount);
    assert.ok(
      Math.abs(a.gradLogprobs[0]!.reduce((s, g) => s + g, 0) + 1) < 1e-5,
      'token-mean over policy tokens only: the gradients sum to −A',
    );
    const scrambled = Float32Array.from(fwd!.logprobs[0]!, (v, i) => (seg.mask[i] ? v : v - 5));
    assert.equal(maskedGrpoLoss(rows, [scrambled], opts).loss, a.loss);
    // The group view shows each trajectory's turns, its policy tokens and reward.
    const view = await agentGroupPayload(groups[0]!, {
      decodeToken: (id) => policy.tokenizer.decode([id], { skipSpecialTokens: false }),
    });
    assert.equal(view.completions.length, 2);
    view.completions.forEach((c, k) => {
      const att = groups[0]!.attempts[k]!;
      assert.match(
        c.text,
        /^1 ▸ [^]*\n   user: Check your answer [^]*\n2 ▸ [^]*\n   user: Your answers were [^]*\n3 ▸ /,
      );
      assert.equal(c.reward, att.reward);
      assert.equal(c.length, policyTokens(groups[0]!.trajectories[k]!.segments[0]!).length);
      assert.equal(c.tokens!.length, c.length);
      assert.match(c.finishReason!, /^succeeded, 3 turns$/);
    });
  });

  test('streamed calls give the same records', async () => {
    const [g] = await rolloutAgentGroups(
      gw.gateway,
      [fx.samples[1]!],
      1,
      { command: [process.execPath, EXAMPLE], env: { AGENT_STREAM: '1', AGENT_MAX_TOKENS: '5' } },
      { rolloutPrefix: 'stream' },
    );
    const a = g!.attempts[0]!;
    assert.equal(a.status, 'succeeded', a.error);
    assert.ok(a.calls.length >= 2 && a.calls.every((c) => c.sampling.stream));
    const seg = g!.trajectories[0]!.segments;
    assert.deepEqual(
      seg.flatMap((s) => policyTokens(s)),
      a.calls.flatMap((c) => Array.from(c.choices[0]!.tokenIds)),
    );
  });
});
