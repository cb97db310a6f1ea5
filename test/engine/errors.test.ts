/** Bad input fails before any compute with messages that name the problem; native errors keep the JS stack. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import { copyCheckpoint, fixture } from './helpers.js';

const c = fixture('tied_gqa2_one_image');
const policy = `${c.dir}/policy`;

function editConfig(dir: string, edit: (cfg: Record<string, unknown>) => void) {
  const f = path.join(dir, 'config.json');
  const cfg = JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>;
  edit(cfg);
  writeFileSync(f, JSON.stringify(cfg));
}

function rewriteWeights(dir: string, edit: (t: Record<string, { shape: number[]; data: Float32Array }>) => void) {
  const f = path.join(dir, 'model.safetensors');
  const st = native()._readSafetensors(f).tensors;
  const t: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [n, v] of Object.entries(st)) t[n] = { shape: v.shape, data: v.data };
  edit(t);
  native()._writeSafetensors(f, t);
}

test('config: unsupported model_type, bad mrope_section, missing files', async () => {
  const dir = copyCheckpoint('tied_gqa2_one_image');
  editConfig(dir, (cfg) => {
    cfg.model_type = 'llava';
  });
  await assert.rejects(loadModel(dir), {
    message: `${dir}/config.json: unsupported model_type "llava"; supported: "qwen2_vl", "qwen2_5_vl", "qwen3_vl"`,
  });
  editConfig(dir, (cfg) => {
    cfg.model_type = 'qwen3_vl_moe';
  });
  await assert.rejects(loadModel(dir), {
    message: `${dir}/config.json: model_type "qwen3_vl_moe" (Qwen3-VL with mixture-of-experts layers) is not supported; supported: "qwen2_vl", "qwen2_5_vl", "qwen3_vl" (Qwen3-VL dense)`,
  });
  editConfig(dir, (cfg) => {
    cfg.model_type = 'qwen2_vl';
    (cfg.rope_scaling as Record<string, unknown>).mrope_section = [2, 2, 2];
  });
  await assert.rejects(loadModel(dir), {
    message: `${dir}/config.json: mrope_section [2,2,2] sums to 6, but head_dim / 2 is 4`,
  });
  await assert.rejects(loadModel(path.join(dir, 'nowhere')), {
    message: new RegExp(`^${path.join(dir, 'nowhere')}/config.json: cannot read the model config \\(ENOENT\\)$`),
  });
});

test('checkpoint: a missing tensor is named with its expected shape', async () => {
  const dir = copyCheckpoint('tied_gqa2_one_image');
  rewriteWeights(dir, (t) => {
    delete t['model.layers.1.mlp.up_proj.weight'];
  });
  await assert.rejects(loadModel(dir), (err: Error) => {
    assert.match(
      err.message,
      new RegExp(
        `^missing tensor model\\.layers\\.1\\.mlp\\.up_proj\\.weight \\(expected shape \\[48, 32\\]\\) in ${dir}/model\\.safetensors \\[native/src/model_load\\.cc:\\d+\\]$`,
      ),
    );
    return true;
  });
});

test('checkpoint: a mis-shaped tensor is named with both shapes', async () => {
  const dir = copyCheckpoint('tied_gqa2_one_image');
  rewriteWeights(dir, (t) => {
    t['visual.blocks.0.attn.qkv.weight'] = { shape: [48, 15], data: new Float32Array(48 * 15) };
  });
  await assert.rejects(loadModel(dir), {
    message: new RegExp(
      `^tensor visual\\.blocks\\.0\\.attn\\.qkv\\.weight in ${dir}/model\\.safetensors has shape \\[48, 15\\] but the config needs \\[48, 16\\] \\[native/src/model_load\\.cc:\\d+\\]$`,
    ),
  });
});

test('checkpoint: a truncated safetensors file is reported, not read past its end', async () => {
  const dir = copyCheckpoint('tied_gqa2_one_image');
  const f = path.join(dir, 'model.safetensors');
  const buf = readFileSync(f);
  writeFileSync(f, buf.subarray(0, buf.length - 100));
  await assert.rejects(loadModel(dir), { message: /lies past the end of the file \(truncated\?\)/ });
});

test('inputs: token ids out of range, prompts too long, image tokens not matching the grids', async () => {
  const m = await loadModel(policy, { maxSequenceLength: 24 });
  try {
    const bad = Int32Array.from(c.completions[0]!);
    bad[2] = 64;
    await assert.rejects(m.forward([{ prompt: c.prompt, completions: [c.completions[1]!, bad] }]), {
      name: 'RangeError',
      message: 'requests[0].completions[1][2]: token id 64 is outside the vocabulary [0, 64)',
    });
    const ids = Int32Array.from(c.prompt.ids);
    ids[0] = -1;
    await assert.rejects(
      m.sample({ prompt: { ids, images: c.prompt.images }, n: 1, temperature: 0, maxTokens: 2, seed: 0 }),
      { message: 'request.prompt.ids[0]: token id -1 is outside the vocabulary [0, 64)' },
    );
    const long = new Int32Array(10).fill(3);
    await assert.rejects(m.forward([{ prompt: c.prompt, completions: [long] }]), {
      message: 'requests[0]: prompt (16 tokens) + completions[0] (10 tokens) = 26 tokens exceeds maxSequenceLength 24',
    });
    await assert.rejects(m.sample({ prompt: c.prompt, n: 2, temperature: 1, maxTokens: 9, seed: 0 }), {
      message: 'request: prompt (16 tokens) + maxTokens 9 = 25 tokens exceeds maxSequenceLength 24',
    });
    const fewer = Int32Array.from(c.prompt.ids);
    fewer[5] = 7; // one image pad token replaced by text
    await assert.rejects(m.forward([{ prompt: { ids: fewer, images: c.prompt.images }, completions: [] }]), {
      message:
        'requests[0].prompt.ids has 5 image tokens (id 60) but its 1 image(s) of grid [1, 4, 6] need 6 (t·h·w / 4 each)',
    });
    const split = Int32Array.from(c.prompt.ids);
    split[5] = 7;
    split[12] = 60; // right count, but the run is broken
    await assert.rejects(m.forward([{ prompt: { ids: split, images: c.prompt.images }, completions: [] }]), {
      message: 'requests[0].prompt.ids: image 0 needs 6 consecutive image tokens from position 4, found a run of 1',
    });
    await assert.rejects(m.forward([{ prompt: { ids: c.prompt.ids, images: [] }, completions: [] }]), {
      message: 'requests[0].prompt.ids has 6 image tokens (id 60) but its 0 image(s) need 0 (t·h·w / 4 each)',
    });
    await assert.rejects(
      m.forward([
        {
          prompt: { ids: c.prompt.ids, images: [{ pixels: new Float32Array(10), gridThw: [1, 4, 6] }] },
          completions: [],
        },
      ]),
      {
        message: 'requests[0].prompt.images[0].pixels has 10 values; gridThw [1, 4, 6] needs 24 patches x 1176 = 28224',
      },
    );
    await assert.rejects(
      m.forward([
        {
          prompt: { ids: c.prompt.ids, images: [{ pixels: new Float32Array(10), gridThw: [1, 3, 6] }] },
          completions: [],
        },
      ]),
      {
        message:
          'requests[0].prompt.images[0].gridThw [1, 3, 6]: h and w must be multiples of the spatial merge size 2',
      },
    );
  } finally {
    m.dispose();
  }
});

test('arguments: exact messages from invalidParameterError', async () => {
  const m = await loadModel(policy);
  try {
    const req = { prompt: c.prompt, n: 2, temperature: 1, maxTokens: 4, seed: 1 };
    await assert.rejects(m.sample({ ...req, n: 0 }), {
      message: 'Expected integer between 1 and 4096 for request.n but received 0 of type number',
    });
    await assert.rejects(m.sample({ ...req, temperature: -0.5 }), {
      message: 'Expected number >= 0 for request.temperature but received -0.5 of type number',
    });
    await assert.rejects(m.sample({ ...req, topP: 1.5 }), {
      message: 'Expected number between 0 and 1 for request.topP but received 1.5 of type number',
    });
    await assert.rejects(m.sample({ ...req, seed: 1.5 }), {
      message: 'Expected integer between 0 and 9007199254740991 for request.seed but received 1.5 of type number',
    });
    await assert.rejects(m.sample({ ...req, stopTokenIds: [64] }), {
      message: 'Expected integer between 0 and 63 for request.stopTokenIds[0] but received 64 of type number',
    });
    await assert.rejects(
      m.forward([{ prompt: { ids: [1, 2, 3] as unknown as Int32Array, images: [] }, completions: [] }]),
      { message: 'Expected Int32Array for requests[0].prompt.ids but received an array of length 3' },
    );
    await assert.rejects(
      m.forward([{ prompt: c.prompt, completions: [new Float32Array(2) as unknown as Int32Array] }]),
      { message: 'Expected Int32Array for requests[0].completions[0] but received an object of type Float32Array' },
    );
    await assert.rejects(m.step({ lr: -1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, maxGradNorm: 0 }), {
      message: 'Expected number >= 0 for options.lr but received -1 of type number',
    });
    await assert.rejects(loadModel(policy, { lora: { rank: 4, alpha: 8, targetModules: ['qkv'], vision: false } }), {
      message:
        'Expected one of "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" for options.lora.targetModules[0] but received "qkv" of type string',
    });
    // a build without the CUDA backend (or a machine without a GPU) says so
    if (!native()._cuda().available)
      await assert.rejects(loadModel(policy, { device: 'cuda' }), { message: /^device cuda:0 is not available: / });
    await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
    await assert.rejects(m.backward([[new Float32Array(5)]]), {
      message:
        'Expected array of 2 Float32Array (one per completion) for gradLogprobs[0] but received an array of length 1',
    });
  } finally {
    m.dispose();
  }
});

test('native errors keep the JS stack of the caller; backward without forward; a disposed model', async () => {
  const dir = copyCheckpoint('tied_gqa2_one_image');
  rewriteWeights(dir, (t) => {
    delete t['model.norm.weight'];
  });
  const err = await loadModel(dir).then(
    () => null,
    (e: Error) => e,
  );
  assert.ok(err);
  assert.match(err.message, /^missing tensor model\.norm\.weight/);
  assert.match(err.stack ?? '', /errors\.test\.js/, 'the stack points at the caller');
  const m = await loadModel(policy);
  await assert.rejects(m.backward([[new Float32Array(5), new Float32Array(3)]]), {
    message: 'backward needs a forward with keepForBackward: true first (each forward is consumed once)',
  });
  m.dispose();
  await assert.rejects(m.forward([{ prompt: c.prompt, completions: [] }]), { message: 'this model was disposed' });
});

test('a failing call does not stop the next ones (the queue goes on)', async () => {
  const m = await loadModel(policy);
  try {
    const p1 = m.backward([[new Float32Array(1)]]); // no forward yet
    const p2 = m.forward([{ prompt: c.prompt, completions: c.completions }]);
    await assert.rejects(p1);
    const [r] = await p2;
    assert.equal(r!.logprobs.length, 2);
  } finally {
    m.dispose();
  }
});
