/**
 * A thinking model's accuracy: the trainer scores the answer after `<think>…</think>`, not the
 * reasoning, in step metrics and in evaluate(); a completion still thinking when the token limit
 * cut it scores 0; rewards get the whole text. The trainer runs on the real CPU engine and the tiny
 * model; the completions come from a policy that writes what a Qwen3-style thinking model writes
 * (the tiny model never produces `<think>` on its own).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Trainer } from '../../src/grpo/trainer.js';
import { answerAfterThinking } from '../../src/eval/thinking.js';
import type { Completion, Policy, SamplingOptions } from '../../src/rollout/types.js';
import type { VqaSample } from '../../src/data/types.js';
import type { RewardFn } from '../../src/reward/types.js';
import { tinyTrainer } from './helpers/tiny-trainer.js';

const { fresh, options } = tinyTrainer({ tmpPrefix: 'vqalab-thinking-', evalSize: 4, rewards: [], seed: 5 });

/** The four kinds of completion, with the accuracy each must get against the sample's answer. */
function thoughts(answer: string): { text: string; finishReason: 'stop' | 'length'; accuracy: number }[] {
  const wrong = answer === 'red' ? 'blue' : 'red';
  return [
    { text: `<think>\nIt could be ${wrong}. No.\n</think>\n\n${answer}`, finishReason: 'stop', accuracy: 1 },
    { text: `<think>\nIt is ${answer}, I think, but`, finishReason: 'length', accuracy: 0 },
    { text: answer, finishReason: 'stop', accuracy: 1 },
    { text: `<think>${answer}</think>\n${wrong}`, finishReason: 'stop', accuracy: 0 },
  ];
}

const thinkingPolicy: Policy = {
  name: 'thinking',
  async generate(sample: VqaSample, o: SamplingOptions): Promise<Completion[]> {
    const all = thoughts(sample.answer);
    return Array.from({ length: o.n }, (_, i) => {
      const { text, finishReason } = all[i % all.length]!;
      return { text, finishReason };
    });
  },
};

test('answerAfterThinking: the text after the last </think>; an unclosed <think> answered nothing', () => {
  assert.equal(answerAfterThinking('<think>\nblue? no, red\n</think>\n\nred'), 'red');
  assert.equal(answerAfterThinking('<THINK>a</THINK> b <think>c</think> d '), 'd');
  assert.equal(answerAfterThinking('<think>\nblue? no'), '');
  assert.equal(answerAfterThinking('the reasoning the template opened</think>\nred'), 'red');
  assert.equal(answerAfterThinking(' red '), ' red ', 'no tags: the completion as it is');
});

test('step accuracy and evaluate() score the answer after the thinking block; rewards get the whole text', async () => {
  const seen: string[] = [];
  const sawText: RewardFn = (_sample, completion) => {
    seen.push(completion);
    return completion.includes('<think>') ? 1 : 0;
  };
  const t = new Trainer(
    options(
      await fresh(),
      { numGenerations: 4, maxCompletionLength: 24, evalMaxTokens: 24 },
      { policy: thinkingPolicy, rewards: [sawText], recordFacts: false },
    ),
  );
  const out = await t.step();
  assert.equal(out.groups.length, 4);
  for (const g of out.groups) {
    const want = thoughts(g.sample.answer);
    assert.deepEqual(
      g.completions.map((c) => c.text),
      want.map((w) => w.text),
    );
    assert.deepEqual(
      g.completions.map((c) => c.accuracy),
      want.map((w) => w.accuracy),
      `accuracies of ${JSON.stringify(want.map((w) => w.text))}`,
    );
    assert.deepEqual(
      g.completions.map((c) => c.reward),
      want.map((w) => (w.text.includes('<think>') ? 1 : 0)),
    );
  }
  assert.equal(out.metrics.accuracy, 0.5, 'two of each four completions answer right');
  for (const g of out.groups) for (const w of thoughts(g.sample.answer)) assert.ok(seen.includes(w.text));

  // Evaluation asks one completion per question: the first kind, right after its reasoning.
  const summary = await t.evaluate('val');
  assert.equal(summary.n, 4);
  for (const r of summary.rows) {
    assert.match(r.prediction, /^<think>/, 'the row shows the whole completion');
    assert.equal(r.accuracy, 1, r.prediction);
  }
  assert.equal(summary.overall, 100);
});
