/**
 * `Trainer.fromPretrained`: a trainer from the embedded model folder in one call, on real synthetic
 * Parquet data and real image files: the folder's tokenizer and image processor, datasets passed as
 * they are, a GRPO step and an evaluation that run; from a loaded LocalPolicy it trains that very
 * model; bad input fails with the field named.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { VqaDataset } from '../../src/data/dataset.js';
import { writeSynth } from '../../src/data/synth.js';
import { Trainer } from '../../src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';
import { vqaAccuracy } from '../../src/reward/basic.js';
import { LocalPolicy } from '../../src/rollout/local.js';

let dir: string;
let dataset: VqaDataset;
before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'vqalab-pretrained-'));
  await writeSynth(path.join(dir, 'synth'), { images: 6, seed: 3, quiet: true });
  dataset = await VqaDataset.fromParquet(path.join(dir, 'synth', 'synth.parquet'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const config = { seed: 1, promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 2, evalMaxTokens: 2 };

test('fromPretrained(dir): model, tokenizer and images from the folder; datasets as they are; a step and an evaluation run', async () => {
  const { train, val } = dataset.split({ train: 0.5, val: 0.5 }, { seed: 1 });
  const trainer = await Trainer.fromPretrained(DEFAULT_MODEL_DIR, {
    train,
    evalSets: { val },
    rewards: [vqaAccuracy()],
    config,
    threads: 1,
    recordFacts: false,
  });
  try {
    assert.ok(trainer instanceof Trainer);
    assert.equal(trainer.tokenizer.decode(trainer.tokenizer.encode('a red circle')), 'a red circle');
    const step = await trainer.step();
    assert.equal(step.groups.length, 2);
    assert.ok(step.groups.every((g) => g.completions.length === 2));
    const evaluation = await trainer.evaluate('val');
    assert.equal(evaluation.n, val.size);
    assert.ok(evaluation.overall >= 0 && evaluation.overall <= 100, String(evaluation.overall));
  } finally {
    trainer.model.dispose();
  }
});

test("fromPretrained(policy) trains the policy's own model", async () => {
  const policy = await LocalPolicy.load(DEFAULT_MODEL_DIR, { threads: 1 });
  try {
    const trainer = await Trainer.fromPretrained(policy, {
      train: dataset,
      rewards: [vqaAccuracy()],
      config,
      recordFacts: false,
    });
    assert.equal(trainer.model, policy.model);
    assert.equal(trainer.tokenizer, policy.tokenizer);
    await trainer.step();
    assert.equal(trainer.globalStep, 1);
  } finally {
    policy.model.dispose();
  }
});

test('fromPretrained: bad input names what was expected', async () => {
  await assert.rejects(
    () => Trainer.fromPretrained(DEFAULT_MODEL_DIR, { train: 5 as never, rewards: [vqaAccuracy()] }),
    /Expected a dataset or an iterable of samples for options\.train but received 5/,
  );
  await assert.rejects(
    () => Trainer.fromPretrained(path.join(dir, 'nothing-here'), { train: dataset, rewards: [vqaAccuracy()] }),
    /nothing-here: no such folder/,
  );
  await assert.rejects(
    () => Trainer.fromPretrained({ model: 1 } as never, { train: dataset, rewards: [vqaAccuracy()] }),
    /Expected a model folder or \{ model, tokenizer, image \} \(a LocalPolicy\) for source/,
  );
});
