/**
 * Child of kill9.test.ts: a trainer on the tiny model that saves a checkpoint, then saves again and
 * again (printing "saving N" before each) until it is killed with SIGKILL.
 */
import { Trainer } from '../../src/grpo/trainer.js';
import { loadTiny, tinyImages, tinyModel, tinySamples, tinyShaped, tinyTokenizer } from '../grpo/helpers/tiny-task.js';

const outputDir = process.argv[2]!;
const model = await tinyModel();
const t = new Trainer({
  model,
  tokenizer: tinyTokenizer(),
  train: tinySamples(4),
  rewards: [tinyShaped],
  loadImages: tinyImages,
  loadModel: loadTiny,
  recordFacts: false,
  outputDir,
  config: { promptsPerStep: 1, numGenerations: 2, maxCompletionLength: 2, learningRate: 1e-3, seed: 1 },
});
await t.sft({ steps: 1, batchSize: 2, learningRate: 1e-3 }); // an optimizer step, so there is optimizer state to save
await t.save();
process.stdout.write('saved\n');
for (let i = 1; ; i++) {
  process.stdout.write(`saving ${i}\n`);
  await t.save();
}
