/** The package entry exposes the reward API, and the docs' composition example does what docs/rewards.md says. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as vqalab from '../../src/index.js';
import type { VqaSample } from '../../src/data/types.js';

test('the package entry exports the reward API (everyday names at the top, the rest under `reward`), the reward lab and the evaluator under `eval`', () => {
  for (const name of ['vqaAccuracy', 'defineReward', 'rewardLab']) {
    assert.equal(typeof (vqalab as Record<string, unknown>)[name], 'function', name);
  }
  for (const name of [
    'exactMatch',
    'similarity',
    'numeric',
    'brevity',
    'llmJudge',
    'weighted',
    'gate',
    'scoreGroups',
    'format',
    'max',
  ]) {
    assert.equal(typeof (vqalab.reward as Record<string, unknown>)[name], 'function', `reward.${name}`);
  }
  assert.equal(typeof vqalab.display.RewardTable, 'function');
  assert.equal(typeof vqalab.display.completionsFrom, 'function');
  assert.equal(typeof vqalab.eval.evaluateVqa, 'function');
  assert.equal(typeof vqalab.eval.scoreVqa, 'function');
});

test('the composition example of docs/rewards.md', () => {
  const { vqaAccuracy } = vqalab;
  const { weighted, gate, numeric, brevity, format } = vqalab.reward;
  const reward = weighted({
    accuracy: gate((s) => s.answerType === 'number', numeric(), vqaAccuracy()),
    format: [format({ pattern: 'think-answer' }), 0.2],
    brevity: [brevity({ maxWords: 5 }), 0.5],
  });
  const sample: VqaSample = {
    id: '1',
    imagePath: '/i.jpg',
    question: 'How many dogs?',
    answer: '2',
    answers: Array(10).fill('2'),
    answerType: 'number',
  };
  const out = reward(sample, '<think>two dogs</think><answer>2</answer>', {}) as vqalab.reward.RewardBreakdown;
  assert.equal(out.score, 1);
  assert.equal(out.parts!.accuracy, 1);
  assert.equal(out.parts!['accuracy.gate'], 1);
  assert.equal(out.parts!['accuracy.numeric'], 1);
  assert.equal(out.parts!.format, 0);
  assert.equal(out.parts!['format.ok'], 1);
  assert.equal(out.parts!.brevity, 0);
});
