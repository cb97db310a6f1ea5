/**
 * Training through the gateway on CPU: agent processes (a small two-turn agent written to the
 * contract, with fetch) call the embedded tiny model through their per-attempt URLs, post a reward
 * that counts colour words in the final answer, and the masked GRPO update learns from what was recorded: the
 * reward goes up over a short run, each step's calls are sampled by that step's weights (version
 * checked), and the trained tokens' log-probs match the recorded sampling log-probs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel } from '../../src/engine/index.js';
import type { EngineModel } from '../../src/engine/types.js';
import { Trainer } from '../../src/grpo/trainer.js';
import '../../src/gateway/trainer-step.js'; // registers the agent step Trainer({ agent }) runs
import type { StepMetrics } from '../../src/grpo/metrics.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';
import { COLOUR_REWARD, twoTurnAgent } from './helpers/two-turn-agent.js';

let fx: Fixture;
let dir: string;
let model: EngineModel;

// Two turns: answer, then "name the colours"; reward: colour words in the final answer.
const AGENT = twoTurnAgent(COLOUR_REWARD);

before(async () => {
  fx = await makeFixture();
  dir = mkdtempSync(path.join(tmpdir(), 'vqalab-agent-train-'));
  writeFileSync(path.join(dir, 'short.mjs'), AGENT);
  model = await loadModel(DEFAULT_MODEL_DIR, { threads: 1 });
});

after(() => {
  model?.dispose();
  fx?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('Trainer({ agent }): the reward goes up over a short run of agent rollouts through the gateway', async () => {
  const tokenizer = VlmTokenizer.load(DEFAULT_MODEL_DIR);
  const trainer = new Trainer({
    model,
    tokenizer,
    train: fx.samples,
    rewards: [],
    recordFacts: false,
    loadImages: async () => {
      throw new Error('not used: the agent reads its image');
    },
    agent: { command: [process.execPath, path.join(dir, 'short.mjs')], concurrency: 8, timeoutMs: 120_000 },
    config: { promptsPerStep: 2, numGenerations: 6, learningRate: 5e-3, seed: 3 },
  });
  const steps: StepMetrics[] = [];
  await trainer.run({
    steps: 12,
    dashboard: false,
    handleSigint: false,
    onStep: (out) => {
      const m = out.metrics,
        agent = m.extra!.agent as {
          failedAttempts: number;
          turnsMean: number;
          maxLogprobDrift: number;
          policyTokens: number;
          maskedTokens: number;
          offPolicyTrajectories: number;
        };
      assert.equal(
        agent.failedAttempts,
        0,
        trainer.lastAgentGroups
          .flatMap((g) => g.attempts)
          .map((a) => a.error ?? '')
          .join('\n'),
      );
      assert.equal(agent.turnsMean, 2);
      assert.equal(agent.offPolicyTrajectories, 0);
      for (const g of trainer.lastAgentGroups)
        for (const a of g.attempts)
          assert.ok(
            a.calls.every((c) => c.weightVersion === out.step),
            "sampled by this step's weights",
          );
      if (agent.policyTokens > 0) {
        assert.ok(agent.maxLogprobDrift < 1e-4, `step ${out.step}: drift ${agent.maxLogprobDrift}`);
        assert.ok(agent.maskedTokens > 0);
      }
      steps.push(m);
    },
  });
  assert.equal(trainer.globalStep, 12);
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const first = mean(steps.slice(0, 3).map((m) => m.rewardMean)),
    last = mean(steps.slice(-3).map((m) => m.rewardMean));
  assert.ok(steps.filter((m) => Number.isFinite(m.loss)).length >= 5, 'most steps updated');
  assert.ok(
    last > first + 0.15,
    `reward ${steps.map((m) => m.rewardMean.toFixed(3)).join(' ')}: first 3 steps ${first.toFixed(3)}, last 3 ${last.toFixed(3)}`,
  );
});
