/**
 * `vqalab export onnx` for Qwen2.5-VL and Qwen3-VL: onnxruntime-node's logits on the exported files
 * against the CPU engine's forward (every position of prompt + continuation), fp32 ≤ 1e-4 of scale,
 * for a text-only prompt, one image, two images of different grids and a video, on tiny random
 * models of each family (test/export/family-models.ts). The images are sized so that Qwen2.5-VL's
 * windows split them unevenly (edge windows smaller than 4 × 4 merged patches) and Qwen3-VL's 4 × 4
 * position grid is interpolated up and down. Then fp16 and int8 within their tolerances,
 * transformers.js (npm) on the same folders (its own positions and image merge, Qwen3-VL's DeepStack
 * carried in the packed inputs_embeds), and OnnxPolicy's greedy tokens against LocalPolicy's.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import type { ImageInput, Prompt } from '../../src/engine/types.js';
import { exportOnnx, graphParameters } from '../../src/export/index.js';
import { readConfig } from '../../src/engine/config.js';
import { decodeModel } from '../../src/export/onnx-schema.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { OnnxModel, OnnxPolicy } from '../../src/rollout/onnx.js';
import type { FamilyModelType } from '../../src/model/presets-family.js';
import { promptIds, randomVisual, writeFamilyModel } from './family-models.js';
import { maxDiff, synthOnDisk } from './helpers.js';

let work: string;
/** The engine's logits per `${family} ${case}`, for the later tests. */
const references = new Map<string, Float32Array>();
const continuation = Int32Array.from([5, 17, 99, 3, 250]);

before(() => {
  work = mkdtempSync(path.join(tmpdir(), 'vqalab-export-families-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

function cases(family: FamilyModelType): [string, Prompt][] {
  const a = randomVisual(family, [1, 10, 12], 1); // 5 × 6 merged patches: windows of 4 and 1 rows, 4 and 2 columns
  const b = randomVisual(family, [1, 4, 6], 2);
  const v = randomVisual(family, [2, 6, 4], 3, true);
  const prompt = (images: ImageInput[], seed: number): Prompt => ({ ids: promptIds(family, images, seed), images });
  return [
    ['text only', prompt([], 10)],
    ['one image', prompt([a], 11)],
    ['two images', prompt([a, b], 12)],
    ['a video', prompt([v], 13)],
  ];
}

for (const family of ['qwen2_5_vl', 'qwen3_vl'] as const) {
  test(`${family}: exported graphs load in onnxruntime and their logits equal the engine's (text, one image, two images, video)`, async (t) => {
    const model = writeFamilyModel(path.join(work, family), family);
    const out = path.join(work, `${family}-onnx`);
    const r = await exportOnnx({ model, out });
    assert.equal(r.externalData, false);
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
    assert.equal(cfg.model_type, family);
    // the grid input under transformers.js's name for these families
    const vision = decodeModel(readFileSync(path.join(out, 'onnx/vision_encoder.onnx')));
    assert.deepEqual(
      vision.graph.input.map((v: { name: string }) => v.name),
      ['pixel_values', 'image_grid_thw'],
    );
    const engine = await loadModel(model, { threads: 2 });
    const om = await OnnxModel.load(out, { threads: 2 });
    try {
      // the size estimate that decides external data counts every weight of the family
      const counts = graphParameters(readConfig(path.join(model, 'config.json')));
      const tied = readConfig(path.join(model, 'config.json')).tieWordEmbeddings;
      assert.equal(
        counts.vision_encoder + counts.decoder_model_merged + (tied ? 0 : counts.embed_tokens),
        engine.numParameters.total,
      );
      for (const [name, prompt] of cases(family)) {
        const [ref] = await engine.forward([{ prompt, completions: [continuation], returnLogits: true }]);
        const got = await om.logits(prompt, continuation);
        const d = maxDiff(ref!.logits![0]!, got);
        references.set(`${family} ${name}`, ref!.logits![0]!);
        t.diagnostic(
          `${family} ${name}: max |Δlogit| ${d.diff.toExponential(2)} of scale ${d.scale.toFixed(2)} = ${(d.diff / d.scale).toExponential(2)}`,
        );
        assert.ok(d.scale > 0.5, `${name}: logits of a real scale (${d.scale})`);
        assert.ok(d.diff <= 1e-4 * d.scale, `${family} ${name}: max |Δlogit| ${d.diff} > 1e-4 × ${d.scale}`);
      }
    } finally {
      engine.dispose();
      await om.dispose();
    }
  });
}

for (const family of ['qwen2_5_vl', 'qwen3_vl'] as const) {
  test(`${family}: fp16 and int8 exports within their tolerances (1e-2 and 0.15 of scale)`, async (t) => {
    const model = path.join(work, family);
    const prompt = cases(family)[2]![1];
    const ref = references.get(`${family} two images`);
    assert.ok(ref, 'the fp32 test ran first');
    for (const [dtype, tol] of [
      ['fp16', 1e-2],
      ['int8', 0.15],
    ] as const) {
      const out = path.join(work, `${family}-${dtype}`);
      await exportOnnx({ model, out, dtype });
      const om = await OnnxModel.load(out, { threads: 2 });
      try {
        const d = maxDiff(ref, await om.logits(prompt, continuation));
        t.diagnostic(`${family} ${dtype}, two images: ${(d.diff / d.scale).toExponential(2)} of scale`);
        assert.ok(d.diff <= tol * d.scale, `${family} ${dtype}: max |Δlogit| ${d.diff} > ${tol} × ${d.scale}`);
      } finally {
        await om.dispose();
      }
    }
  });

  test(`${family}: transformers.js (npm) runs the exported folder (its own M-RoPE positions and image merge) with the engine's logits`, async (t) => {
    const tjs = await import('@huggingface/transformers');
    tjs.env.allowRemoteModels = false;
    tjs.env.localModelPath = work;
    const model = await tjs.AutoModelForImageTextToText.from_pretrained(`${family}-onnx`, {
      local_files_only: true,
      dtype: 'fp32',
    });
    try {
      for (const [name, prompt] of cases(family).slice(0, 3)) {
        const ids = [...prompt.ids, ...continuation];
        const L = ids.length;
        const inputs: Record<string, unknown> = {
          input_ids: new tjs.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, L]),
          attention_mask: new tjs.Tensor('int64', new BigInt64Array(L).fill(1n), [1, L]),
        };
        if (prompt.images.length > 0) {
          const pixels = Float32Array.from(prompt.images.flatMap((im) => Array.from(im.pixels)));
          const N = prompt.images.reduce((a, im) => a + im.gridThw[0] * im.gridThw[1] * im.gridThw[2], 0);
          inputs.pixel_values = new tjs.Tensor('float32', pixels, [N, pixels.length / N]);
          inputs.image_grid_thw = new tjs.Tensor(
            'int64',
            BigInt64Array.from(prompt.images.flatMap((im) => im.gridThw.map(BigInt))),
            [prompt.images.length, 3],
          );
        }
        // its own get_rope_index, image merge into inputs_embeds and decoder call
        const out = (await model(inputs as never)) as { logits: { data: Float32Array } };
        const d = maxDiff(references.get(`${family} ${name}`)!, out.logits.data);
        t.diagnostic(`${family} ${name} via transformers.js: ${(d.diff / d.scale).toExponential(2)} of scale`);
        assert.ok(d.diff <= 1e-4 * d.scale, `${family} ${name}: max |Δlogit| ${d.diff} > 1e-4 × ${d.scale}`);
      }
    } finally {
      await model.dispose();
    }
  });
}

test("OnnxPolicy on the exported Qwen2.5-VL and Qwen3-VL folders answers with the engine's greedy tokens", async () => {
  const samples = await synthOnDisk(path.join(work, 'synth'), 4);
  for (const family of ['qwen2_5_vl', 'qwen3_vl'] as const) {
    const local = await LocalPolicy.load(path.join(work, family), { threads: 2 });
    const onnx = await OnnxPolicy.load(path.join(work, `${family}-onnx`), { threads: 2 });
    try {
      for (const s of samples) {
        const greedy = { n: 1, temperature: 0, maxTokens: 6 };
        const [a] = await local.generate(s, greedy);
        const [b] = await onnx.generate(s, greedy);
        assert.deepEqual(b!.tokenIds, a!.tokenIds, `${family} ${s.id}`);
        for (let t = 0; t < a!.logprobs!.length; t++)
          assert.ok(Math.abs(b!.logprobs![t]! - a!.logprobs![t]!) < 1e-4, `${family} ${s.id}: log-prob ${t}`);
      }
    } finally {
      local.dispose();
      await onnx.dispose();
    }
  }
});
