/**
 * TRL's smoke test on the native engine and the embedded tiny Qwen2-VL (assets/tiny-qwen2-vl): a
 * short SFT warm start and a few GRPO steps change every tensor of the checkpoint (vision tower,
 * merger, language model). Resume and the rest of the trainer's behaviour: trainer.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Trainer } from '../../src/grpo/trainer.js';
import type { EngineModel } from '../../src/engine/types.js';
import { readSafetensors } from '../../src/util/safetensors.js';
import { loadTiny, tinyImages, tinyModel, tinySamples, tinyShaped, tinyTokenizer } from './helpers/tiny-task.js';

async function tensorsOf(model: EngineModel, dir: string): Promise<Map<string, Float32Array>> {
  await model.save(dir);
  const { tensors } = await readSafetensors(path.join(dir, 'model.safetensors'));
  return new Map([...tensors].map(([k, t]) => [k, t.data as Float32Array]));
}

test('SFT then GRPO steps on the tiny Qwen2-VL change every tensor', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-tiny-'));
  const model = await tinyModel();
  try {
    const before = await tensorsOf(model, path.join(dir, 'before'));
    const t = new Trainer({
      model,
      tokenizer: tinyTokenizer(),
      train: tinySamples(16),
      evalSets: { val: tinySamples(4, 100) },
      rewards: [tinyShaped],
      loadImages: tinyImages,
      loadModel: loadTiny,
      recordFacts: false,
      config: {
        promptsPerStep: 2,
        numGenerations: 4,
        maxCompletionLength: 4,
        learningRate: 1e-3,
        seed: 1,
        numIterations: 2,
        evalMaxTokens: 4,
      },
    });
    await t.sft({ steps: 2, batchSize: 4, learningRate: 1e-3 });
    const out = await t.run({ steps: 2, handleSigint: false });
    assert.equal(out.stepsRun, 2);
    const m = t.metrics.history.filter((x) => x.kind === 'grpo');
    assert.ok(
      m.every((x) => Number.isFinite(x.loss) && x.skippedUpdates === 0),
      JSON.stringify(m.map((x) => [x.loss, x.skippedUpdates])),
    );
    const after = await tensorsOf(model, path.join(dir, 'after'));
    assert.equal(after.size, before.size);
    for (const [name, old] of before) {
      assert.ok(
        after.get(name)!.some((v, i) => v !== old[i]),
        `Parameter ${name} has not changed.`,
      );
    }
    const e = await t.evaluate('val');
    assert.equal(e.n, 4);
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
