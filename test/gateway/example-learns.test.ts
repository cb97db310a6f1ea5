/**
 * The example agent (examples/agents/vqa-agent.ts: 3 turns, the final answer a vote) learns through
 * `vqalab train-agent` on CPU: the embedded tiny model, 2 synthetic images (4 tasks: the colour and
 * the shape of one shape), a 5-step warm start, every task in every step (6 attempts each), 4 GRPO
 * steps. The reward is measured by `--eval-attempts 6` before and after training: every task 6
 * times with the same attempt ids, hence the same sampling seeds, so the two evaluations differ by
 * the weights only (with learning off, --lr 1e-9, they are equal: 0.875 and 0.875). The per-step
 * training rewards are not asserted on: they rise as much with learning off (sampling luck).
 * Seed 1: 0.458 → 0.708 (6 of 24 attempts more right); seed 2: 0.333 → 0.542; the margin asserted
 * is 3 of 24 (docs/agents.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTrainAgent } from '../../src/cli/train-agent.js';

const EXAMPLE = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'examples',
  'agents',
  'vqa-agent.js',
);

test('the example VQA agent learns: reward up after 4 GRPO steps through the gateway, same seeds before and after', async (t) => {
  const out = mkdtempSync(path.join(tmpdir(), 'vqalab-example-learns-'));
  try {
    const lines: string[] = [];
    const code = await runTrainAgent(
      [
        '--agent',
        `"${process.execPath}" "${EXAMPLE}"`,
        '--synth-images',
        '2',
        '--sft-steps',
        '5',
        '--prompts',
        '4',
        '--group',
        '6',
        '--lr',
        '3e-3',
        '--steps',
        '4',
        '--threads',
        '2',
        '--seed',
        '1',
        '--eval-attempts',
        '6',
        '--out',
        out,
        '--quiet',
      ],
      { out: (l) => lines.push(l), err: () => {} },
    );
    assert.equal(code, 0);
    const steps = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { rewardMean: number; failedAttempts: number; attempts: number });
    assert.equal(steps.length, 4);
    for (const s of steps) assert.equal(s.failedAttempts, 0, 'every attempt ran to a reward');
    const result = JSON.parse(lines.at(-1)!) as { evalBefore: number; evalAfter: number };
    t.diagnostic(`reward per step ${steps.map((s) => s.rewardMean.toFixed(3)).join(' ')}; ${lines.at(-1)}`);
    assert.ok(
      result.evalAfter >= result.evalBefore + 3 / 24 - 1e-9,
      `evaluation before ${result.evalBefore.toFixed(3)}, after ${result.evalAfter.toFixed(3)}`,
    );
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
