/**
 * Videos in the CPU engine, for the three families: video pads, M-RoPE time positions (Qwen2-VL:
 * the temporal patch index; Qwen2.5-VL: index · tokens_per_second · int(second_per_grid); Qwen3-VL:
 * one run per temporal patch, each after its timestamp text, time 0; the text after a visual run
 * max(h, w) after its start) checked against positions worked out by hand from transformers 5's
 * get_rope_index; the frames' order reaches the output; prompts that do not match their videos are
 * refused with what was expected.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import type { ImageInput } from '../../src/engine/types.js';
import { randn, rng } from './helpers.js';
import {
  TINY_IMAGE as IMAGE,
  TINY_VEND as VEND,
  TINY_VIDEO as VIDEO,
  TINY_VSTART as VSTART,
  type Family,
  writeTiny,
} from './tiny-family.js';

const patchOf = (f: Family) => (f === 'qwen3_vl' ? 16 : 14);

/** A random video of t temporal patches of h × w patches. */
function video(f: Family, t: number, h: number, w: number, seed: number, secondPerGrid = 1): ImageInput {
  return {
    pixels: randn(t * h * w * 3 * 2 * patchOf(f) ** 2, rng(seed)),
    gridThw: [t, h, w],
    video: true,
    secondPerGrid,
  };
}

/** The same video with its temporal patches in reverse order. */
function reversed(v: ImageInput): ImageInput {
  const [t, h, w] = v.gridThw,
    per = v.pixels.length / t;
  const px = new Float32Array(v.pixels.length);
  for (let i = 0; i < t; i++) px.set(v.pixels.subarray(i * per, (i + 1) * per), (t - 1 - i) * per);
  void h;
  void w;
  return { ...v, pixels: px };
}

/** Prompt ids around one video of grid [t, 4, 4] (4 merged tokens a temporal patch): Qwen3-VL splits it per temporal patch after a "timestamp" (ids 20, 21). */
function videoIds(f: Family, t: number): Int32Array {
  const pads = (n: number) => new Array<number>(n).fill(VIDEO);
  if (f !== 'qwen3_vl') return Int32Array.from([3, VSTART, ...pads(4 * t), VEND, 9]);
  const ids = [3];
  for (let i = 0; i < t; i++) ids.push(20 + i, ...(i === 0 ? [21] : []), VSTART, ...pads(4), VEND);
  ids.push(9);
  return Int32Array.from(ids);
}

test('M-RoPE positions of a video: Qwen2-VL temporal index, Qwen2.5-VL scaled by second_per_grid × tokens_per_second, Qwen3-VL per-patch runs', async () => {
  const grid = (b: number, tp: number) => [
    [b + tp, b, b],
    [b + tp, b, b + 1],
    [b + tp, b + 1, b],
    [b + tp, b + 1, b + 1],
  ];
  const expected: Record<Family, number[][]> = {
    // [3, VSTART, 8 pads, VEND, 9]: text 0, 1; video from 2 (t index 0 and 1); text from 2 + max(h 2, w 2) = 4
    qwen2_vl: [[0, 0, 0], [1, 1, 1], ...grid(2, 0), ...grid(2, 1).map(([t, h, w]) => [t, h, w]), [4, 4, 4], [5, 5, 5]],
    // tokens_per_second 2, second_per_grid 1: t index 0 and 2; the text from 2 + max(h 2, w 2) = 4, not
    // past the time axis (transformers 5): VEND shares position 4 with the second temporal patch
    qwen2_5_vl: [[0, 0, 0], [1, 1, 1], ...grid(2, 0), ...grid(2, 2), [4, 4, 4], [5, 5, 5]],
    // [3, 20, 21, VSTART, 4 pads, VEND, 22, VSTART, 4 pads, VEND, 9]: patch 0 from 4, patch 1 from 9 (time 0 each)
    qwen3_vl: [
      [0, 0, 0],
      [1, 1, 1],
      [2, 2, 2],
      [3, 3, 3],
      ...grid(4, 0),
      [6, 6, 6],
      [7, 7, 7],
      [8, 8, 8],
      ...grid(9, 0),
      [11, 11, 11],
      [12, 12, 12],
    ],
  };
  // grid() gives (t, h, w) with t = base + tp for the first coordinate
  for (const f of ['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl'] as Family[]) {
    const m = await loadModel(writeTiny(f), { threads: 1 });
    try {
      const v = video(f, 2, 4, 4, 1);
      const ids = videoIds(f, 2);
      const { positions: pos, next } = m._native._ropeIndex({
        ids,
        images: [{ pixels: v.pixels, gridThw: v.gridThw, video: true, secondPerGrid: 1 }],
      });
      const L = ids.length;
      const got = Array.from({ length: L }, (_, i) => [pos[i]!, pos[L + i]!, pos[2 * L + i]!]);
      assert.deepEqual(got, expected[f], f);
      assert.equal(next, Math.max(...expected[f]!.flat()) + 1, `${f}: generation goes on at the largest position + 1`);
    } finally {
      m.dispose();
    }
  }
  // Qwen2.5-VL's seconds are truncated before scaling (transformers 5): second_per_grid 0.5 (4 fps) puts
  // every temporal patch at time 0; 4/3 s (1.5 fps) steps by 1 s · tokens_per_second 2 = 2; 2.5 s by 4
  const m = await loadModel(writeTiny('qwen2_5_vl'), { threads: 1 });
  try {
    const cases: [number, number[]][] = [
      [0.5, [2, 2, 2, 2]],
      [4 / 3, [2, 4, 6, 8]],
      [2.5, [2, 6, 10, 14]],
    ];
    for (const [spg, times] of cases) {
      const v = video('qwen2_5_vl', 4, 4, 4, 2, spg);
      const ids = videoIds('qwen2_5_vl', 4);
      const L = ids.length;
      const { positions: pos, next } = m._native._ropeIndex({
        ids,
        images: [{ pixels: v.pixels, gridThw: v.gridThw, video: true, secondPerGrid: spg }],
      });
      assert.deepEqual([pos[2], pos[6], pos[10], pos[14]], times, `second_per_grid ${spg}: time positions`);
      assert.deepEqual([pos[L - 2], pos[L - 1]], [4, 5], `second_per_grid ${spg}: text from 2 + max(h 2, w 2)`);
      assert.equal(next, Math.max(times[3]!, 5) + 1, `second_per_grid ${spg}: generation after the largest position`);
    }
  } finally {
    m.dispose();
  }
});

for (const f of ['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl'] as Family[]) {
  test(`${f}: a video prompt runs forward and greedy sampling; the frames' order reaches the log-probs`, async () => {
    const m = await loadModel(writeTiny(f), { threads: 1 });
    try {
      const v = video(f, 2, 4, 4, 3);
      const ids = videoIds(f, 2);
      const completions = [Int32Array.from([5, 6, 7])];
      const [a] = await m.forward([{ prompt: { ids, images: [v] }, completions }]);
      const [b] = await m.forward([{ prompt: { ids, images: [reversed(v)] }, completions }]);
      const [c] = await m.forward([{ prompt: { ids, images: [v] }, completions }]);
      assert.ok(a!.logprobs[0]!.every((x) => Number.isFinite(x) && x < 0));
      assert.deepEqual(c!.logprobs[0], a!.logprobs[0], 'deterministic');
      const diff = Math.max(...a!.logprobs[0]!.map((x, i) => Math.abs(x - b!.logprobs[0]![i]!)));
      assert.ok(diff > 1e-5, `reversing the frames changed the log-probs by ${diff}`);
      // the same pixels as an image pair would be two images with image pads: the video's own tokens are required
      await assert.rejects(
        m.forward([{ prompt: { ids, images: [{ ...v, video: false }] }, completions }]),
        /image tokens .* need 8|has 0 image tokens/,
      );
      const s = await m.sample({ prompt: { ids, images: [v] }, n: 1, temperature: 0, maxTokens: 3, seed: 0 });
      assert.equal(s.tokenIds[0]!.length, 3);
      // a training step on a video prompt reaches the vision tower
      await m.forward([{ prompt: { ids, images: [v] }, completions, keepForBackward: true }]);
      await m.backward([[Float32Array.from([-1, -1, -1])]]);
      const g = m._native._grad('visual.patch_embed.proj.weight');
      assert.ok(g && g.some((x) => x !== 0), 'patch embedding gradient from the video');
    } finally {
      m.dispose();
    }
  });
}

test('video prompts that do not match their inputs are refused with what was expected', async () => {
  const m = await loadModel(writeTiny('qwen3_vl'), { threads: 1 });
  try {
    const v = video('qwen3_vl', 2, 4, 4, 4);
    const completions = [Int32Array.from([5])];
    // images and videos in the prompt's order: a video given where the prompt has image pads
    const img = { pixels: randn(4 * 4 * 3 * 2 * 256, rng(5)), gridThw: [1, 4, 4] as [number, number, number] };
    const mixed = Int32Array.from([3, VSTART, IMAGE, IMAGE, IMAGE, IMAGE, VEND, ...videoIds('qwen3_vl', 2)]);
    const [ok] = await m.forward([{ prompt: { ids: mixed, images: [img, v] }, completions }]);
    assert.ok(Number.isFinite(ok!.logprobs[0]![0]!));
    await assert.rejects(
      m.forward([{ prompt: { ids: mixed, images: [v, img] }, completions }]),
      /video 0 frame 0 needs 4 consecutive video tokens from position 2, found a run of 0/,
    );
    const short = Int32Array.from([3, VSTART, ...new Array<number>(4).fill(VIDEO), VEND]);
    await assert.rejects(
      m.forward([{ prompt: { ids: short, images: [v] }, completions }]),
      /has 4 video tokens \(id 61\) but its 1 video\(s\) of grid \[2, 4, 4\] need 8/,
    );
    await assert.rejects(
      m.forward([{ prompt: { ids: videoIds('qwen3_vl', 2), images: [{ ...v, secondPerGrid: 0 }] }, completions }]),
      /secondPerGrid/,
    );
  } finally {
    m.dispose();
  }
});

test('device cuda: no family is refused by the family (Qwen2.5-VL and Qwen3-VL passed the GPU checks)', async () => {
  // Without a GPU, they meet the same check as Qwen2-VL: the device itself; with one, they load.
  for (const family of ['qwen2_5_vl', 'qwen3_vl'] as const) {
    if (!native()._cuda().available)
      await assert.rejects(loadModel(writeTiny(family), { device: 'cuda' }), (err: Error) => {
        assert.doesNotMatch(err.message, /models so far/);
        return true;
      });
    else (await loadModel(writeTiny(family), { device: 'cuda' })).dispose();
  }
});
