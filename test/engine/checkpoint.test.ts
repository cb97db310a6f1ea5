/** Checkpoints: save -> load round trips (both naming schemes), optimizer resume, shards, F16/BF16. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import { copyCheckpoint, fixture, maxAbsDiff, maxAbs, randn, rng, tmpDir } from './helpers.js';

const opts = { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1.0 };

async function trainStep(m: Awaited<ReturnType<typeof loadModel>>, c: ReturnType<typeof fixture>, seed: number) {
  const r = rng(seed);
  await m.forward([{ prompt: c.prompt, completions: c.completions, keepForBackward: true }]);
  m.zeroGrad();
  await m.backward([c.completions.map((comp) => randn(comp.length, r))]);
  return m.step(opts);
}

for (const name of ['tied_gqa2_one_image', 'untied_mqa_two_images']) {
  test(`save -> load gives the same weights and logits, in the checkpoint's naming scheme: ${name}`, async () => {
    const c = fixture(name);
    const m = await loadModel(`${c.dir}/policy`);
    const dir = tmpDir();
    try {
      await trainStep(m, c, 1);
      await m.save(dir);
      assert.equal(
        readFileSync(path.join(dir, 'config.json'), 'utf8'),
        readFileSync(path.join(c.dir, 'policy', 'config.json'), 'utf8'),
      );
      const keys = Object.keys(native()._readSafetensors(path.join(dir, 'model.safetensors')).tensors);
      const internal = m.namingScheme === 'internal';
      assert.equal(
        keys.some((k) => k.startsWith('model.language_model.')),
        internal,
      );
      assert.equal(keys.includes('lm_head.weight'), !m.config.tieWordEmbeddings);
      const back = await loadModel(dir);
      try {
        assert.equal(back.namingScheme, m.namingScheme);
        for (const n of m._native._names()) assert.deepEqual(back._native._get(n), m._native._get(n), n);
        const [a] = await m.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
        const [b] = await back.forward([{ prompt: c.prompt, completions: c.completions, returnLogits: true }]);
        assert.equal(maxAbsDiff(a!.logits![0]!, b!.logits![0]!), 0);
      } finally {
        back.dispose();
      }
      // the other scheme on request
      const other = tmpDir();
      await m.save(other, { naming: internal ? 'published' : 'internal' });
      const keys2 = Object.keys(native()._readSafetensors(path.join(other, 'model.safetensors')).tensors);
      assert.equal(
        keys2.some((k) => k.startsWith('model.language_model.')),
        !internal,
      );
      const back2 = await loadModel(other);
      assert.deepEqual(back2._native._get('model.norm.weight'), m._native._get('model.norm.weight'));
      back2.dispose();
    } finally {
      m.dispose();
    }
  });
}

test('optimizer state: save after one step, load, step again = two steps without stopping', async () => {
  const c = fixture('gqa3_text_only');
  const straight = await loadModel(`${c.dir}/policy`);
  const first = await loadModel(`${c.dir}/policy`);
  const dir = tmpDir();
  try {
    await trainStep(straight, c, 1);
    await trainStep(straight, c, 2);
    await trainStep(first, c, 1);
    await first.save(dir, { optimizer: true });
    const resumed = await loadModel(dir, { loadOptimizer: true });
    try {
      assert.equal(resumed.stepCount, 1);
      await trainStep(resumed, c, 2);
      assert.equal(resumed.stepCount, 2);
      for (const n of straight._native._names()) {
        assert.ok(
          maxAbsDiff(resumed._native._get(n), straight._native._get(n)) <=
            1e-7 * Math.max(1, maxAbs(straight._native._get(n))),
          n,
        );
      }
    } finally {
      resumed.dispose();
    }
  } finally {
    straight.dispose();
    first.dispose();
  }
});

test('sharded checkpoints load through model.safetensors.index.json', async () => {
  const c = fixture('mha_odd_grid_text_after');
  const dir = copyCheckpoint('mha_odd_grid_text_after');
  const st = native()._readSafetensors(path.join(dir, 'model.safetensors'));
  const names = Object.keys(st.tensors).sort();
  const half = Math.floor(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((ns, k) => {
    const file = `model-0000${k + 1}-of-00002.safetensors`;
    native()._writeSafetensors(path.join(dir, file), Object.fromEntries(ns.map((n) => [n, st.tensors[n]!])));
    for (const n of ns) weightMap[n] = file;
  });
  rmSync(path.join(dir, 'model.safetensors'));
  writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  const a = await loadModel(`${c.dir}/policy`);
  const b = await loadModel(dir);
  try {
    const [x] = await a.forward([{ prompt: c.prompt, completions: c.completions }]);
    const [y] = await b.forward([{ prompt: c.prompt, completions: c.completions }]);
    assert.deepEqual(x!.logprobs, y!.logprobs);
  } finally {
    a.dispose();
    b.dispose();
  }
});

/** Writes tensors as F16 (for the loader's half-precision path). */
function writeF16(file: string, tensors: Record<string, { shape: number[]; data: Float32Array }>) {
  const f32 = new Float32Array(1),
    u32 = new Uint32Array(f32.buffer);
  const toHalf = (v: number) => {
    f32[0] = v;
    const x = u32[0]!;
    const sign = (x >>> 16) & 0x8000;
    let exp = ((x >>> 23) & 0xff) - 127 + 15;
    let mant = x & 0x7fffff;
    if (exp <= 0) {
      // subnormal half
      if (exp < -10) return sign;
      mant = (mant | 0x800000) >> (1 - exp);
      return sign | ((mant + 0x1000) >> 13);
    }
    if (exp >= 31) return sign | 0x7c00;
    const h = sign | (exp << 10) | (mant >> 13);
    return mant & 0x1000 ? h + 1 : h; // round half up (good enough here)
  };
  const header: Record<string, unknown> = {};
  let off = 0;
  const names = Object.keys(tensors).sort();
  for (const n of names) {
    const bytes = tensors[n]!.data.length * 2;
    header[n] = { dtype: 'F16', shape: tensors[n]!.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let h = JSON.stringify(header);
  while ((h.length + 8) % 8) h += ' ';
  const buf = Buffer.alloc(8 + h.length + off);
  buf.writeBigUInt64LE(BigInt(h.length), 0);
  buf.write(h, 8, 'utf8');
  let p = 8 + h.length;
  for (const n of names)
    for (const v of tensors[n]!.data) {
      buf.writeUInt16LE(toHalf(v), p);
      p += 2;
    }
  writeFileSync(file, buf);
}

test('F16 and BF16 weights load as fp32', async () => {
  const c = fixture('tied_gqa2_one_image');
  const dir = copyCheckpoint('tied_gqa2_one_image');
  const st = native()._readSafetensors(path.join(dir, 'model.safetensors'));
  writeF16(path.join(dir, 'model.safetensors'), st.tensors);
  const back = native()._readSafetensors(path.join(dir, 'model.safetensors'));
  for (const [n, t] of Object.entries(st.tensors)) {
    assert.equal(back.tensors[n]!.dtype, 'F16');
    for (let i = 0; i < t.data.length; i++) {
      assert.ok(Math.abs(back.tensors[n]!.data[i]! - t.data[i]!) <= 1e-3 * Math.abs(t.data[i]!) + 6e-8, `${n}[${i}]`);
    }
  }
  const a = await loadModel(`${c.dir}/policy`);
  const h = await loadModel(dir);
  try {
    const [x] = await a.forward([{ prompt: c.prompt, completions: c.completions }]);
    const [y] = await h.forward([{ prompt: c.prompt, completions: c.completions }]);
    assert.ok(maxAbsDiff(x!.logprobs[0]!, y!.logprobs[0]!) < 0.05);
  } finally {
    a.dispose();
    h.dispose();
  }
  // BF16: the reference checkpoints are stored so; every value is a BF16 value widened exactly
  const ref = native()._readSafetensors(path.join(c.dir, 'reference', 'model.safetensors'));
  const t = Object.values(ref.tensors)[0]!;
  assert.equal(t.dtype, 'BF16');
  const u = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
  for (const bits of u) assert.equal(bits & 0xffff, 0);
});
