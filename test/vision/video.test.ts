/**
 * The video processor (src/vision/video.ts): frame sampling by fps as transformers' Qwen2-VL and
 * Qwen3-VL video processors do it (worked by hand from their formulas), their sizing rules, the
 * patch layout over temporal patches, padding, timestamps; frame folders and their errors; prompts
 * with videos (video pads; Qwen3-VL's `<t seconds>` text per temporal patch) with the real tokenizer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import {
  qwen2vlGenerationConfig,
  qwen2vlTokenizerConfig,
  qwen2vlTokenizerJson,
} from '../../src/model/qwen-tokenizer.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { CLIP_MEAN, CLIP_STD } from '../../src/vision/qwen2vl.js';
import { frameFiles, sampleVisuals, smartResizeVideo, VideoProcessor } from '../../src/vision/video.js';

const work = mkdtempSync(path.join(tmpdir(), 'vqalab-video-proc-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

test('frame sampling by fps: Qwen2-VL (arange over total / n, multiple of the temporal patch) and Qwen3-VL (rounded linspace)', () => {
  const q2 = new VideoProcessor({ family: 'qwen2_vl' }),
    q3 = new VideoProcessor({ family: 'qwen3_vl' });
  // 30 frames at 10 fps sampled at 2 fps: 6 frames
  assert.deepEqual(q2.sampleIndices(30, 10), [0, 5, 10, 15, 20, 25]);
  assert.deepEqual(q3.sampleIndices(30, 10), [0, 6, 12, 17, 23, 29]);
  // 5 frames at 10 fps: 1 frame by fps, raised to min_frames 4 (Qwen2-VL: arange(0, 5, 1.25) truncated)
  assert.deepEqual(q2.sampleIndices(5, 10), [0, 1, 2, 3]);
  assert.deepEqual(q3.sampleIndices(5, 10), [0, 1, 3, 4]);
  // 3 frames: Qwen2-VL floors to a multiple of 2; Qwen3-VL keeps all 3 (padded later)
  assert.deepEqual(q2.sampleIndices(3, 10), [0, 1]);
  assert.deepEqual(q3.sampleIndices(3, 10), [0, 1, 2]);
  // a frame count instead of fps
  assert.deepEqual(new VideoProcessor({ family: 'qwen2_vl', numFrames: 4 }).sampleIndices(8, 1), [0, 2, 4, 6]);
  assert.deepEqual(new VideoProcessor({ family: 'qwen3_vl', numFrames: 4 }).sampleIndices(8, 1), [0, 2, 5, 7]);
  assert.throws(
    () => new VideoProcessor({ family: 'qwen2_vl' }).sampleIndices(1, 10),
    /at least 2 \(one temporal patch\)/,
  );
});

test('sizes: Qwen2-VL per-frame smart_resize, Qwen3-VL smart_resize over frames × height × width', () => {
  // Qwen3-VL: 8 frames of 64² = 32768 < 128·32·32: scaled up by sqrt(131072 / 32768) = 2
  assert.deepEqual(smartResizeVideo(8, 64, 64), [128, 128]);
  // 16 frames of 1080p over 768·32·32: beta = sqrt(16·1080·1920 / 786432)
  assert.deepEqual(smartResizeVideo(16, 1080, 1920), [160, 288]);
  assert.throws(() => smartResizeVideo(1, 64, 64), /at least 2 frames/);
  assert.deepEqual(new VideoProcessor({ family: 'qwen3_vl' }).plan(8, 64, 64), { height: 128, width: 128 });
  // Qwen2-VL: each frame within [128·28·28, 768·28·28]: 56² is scaled up to 316² → 308² (multiples of 28)
  assert.deepEqual(new VideoProcessor({ family: 'qwen2_vl' }).plan(8, 56, 56), { height: 336, width: 336 });
  assert.deepEqual(new VideoProcessor({ family: 'qwen2_vl', minPixels: 3136 }).plan(8, 56, 56), {
    height: 56,
    width: 56,
  });
});

test('patches: rows over (t, block row, block col), each row (channel, frame of the temporal patch, y, x); odd frame counts repeat the last frame; timestamps', () => {
  const p = new VideoProcessor({ family: 'qwen2_vl', minPixels: 28 * 28 });
  const frame = (v: number) => ({ data: new Uint8Array(28 * 28 * 3).fill(v), width: 28, height: 28 });
  const out = p.processFrames([frame(0), frame(100), frame(200)], 2);
  assert.deepEqual(out.gridThw, [2, 2, 2]);
  assert.deepEqual(out.frameIndices, [0, 1, 2, 2]);
  assert.equal(out.secondPerGrid, 1);
  assert.equal(out.numTokens, 2);
  const norm = (v: number, c: number) =>
    Math.fround(Math.fround(Math.fround(v * (1 / 255)) - Math.fround(CLIP_MEAN[c]!)) / Math.fround(CLIP_STD[c]!));
  const dim = 3 * 2 * 14 * 14,
    plane = 14 * 14;
  // row 0 (temporal patch 0): channel 0 frame 0 = 0, frame 1 = 100; row 4 (temporal patch 1): frames 200, 200 (padding)
  assert.equal(out.pixels[0], norm(0, 0));
  assert.equal(out.pixels[plane], norm(100, 0));
  assert.equal(out.pixels[2 * plane], norm(0, 1));
  assert.equal(out.pixels[4 * dim], norm(200, 0));
  assert.equal(out.pixels[4 * dim + plane], norm(200, 0));
  assert.equal(out.timestamps, undefined);
  // Qwen3-VL: timestamps = mean time of each temporal patch (frames 0, 6, 12, 17, 23, 29 at 10 fps)
  const q3 = new VideoProcessor({ family: 'qwen3_vl', minPixels: 32 * 32 });
  const f32 = { data: new Uint8Array(32 * 32 * 3), width: 32, height: 32 };
  const v = q3.processFrames(Array(6).fill(f32), 10, [0, 6, 12, 17, 23, 29]);
  assert.deepEqual(
    v.timestamps!.map((t) => Number(t.toFixed(6))),
    [0.3, 1.45, 2.6],
  );
  assert.deepEqual(v.gridThw, [3, 2, 2]);
  assert.equal(v.pixels[0], Math.fround(Math.fround(0 - 0.5) / 0.5));
});

test('frame folders: natural order, video.json or a given fps, clear errors', async () => {
  const dir = path.join(work, 'clip');
  mkdirSync(dir);
  for (let i = 0; i < 12; i++) {
    const png = await sharp({ create: { width: 56, height: 56, channels: 3, background: { r: i * 20, g: 0, b: 0 } } })
      .png()
      .toBuffer();
    writeFileSync(path.join(dir, `f${i}.png`), png);
  }
  writeFileSync(path.join(dir, 'notes.txt'), 'not a frame');
  assert.deepEqual(
    frameFiles(dir).map((f) => path.basename(f)),
    Array.from({ length: 12 }, (_, i) => `f${i}.png`),
  );
  const p = new VideoProcessor({ family: 'qwen2_5_vl', minPixels: 3136 });
  await assert.rejects(
    p.processFolder(dir),
    /the frame rate is unknown; add video.json with \{"fps": N\} to the folder or a video_fps column/,
  );
  // 12 frames at 4 fps = 3 s, sampled at 2 fps: 6 frames (0, 2, 4, ...), 3 temporal patches
  const v = await p.processFolder(dir, 4);
  assert.deepEqual(v.frameIndices, [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(v.gridThw, [3, 4, 4]);
  const red = (k: number) =>
    Math.fround(Math.fround(Math.fround(k * 20 * (1 / 255)) - Math.fround(CLIP_MEAN[0])) / Math.fround(CLIP_STD[0]));
  const dim = 3 * 2 * 14 * 14;
  assert.equal(v.pixels[0], red(0));
  assert.equal(v.pixels[14 * 14], red(2), 'second frame of the first temporal patch is frame 2');
  assert.equal(v.pixels[16 * dim], red(4), 'temporal patch 1 starts at frame 4');
  // second_per_grid from the sampled fps (transformers 5's VideoMetadata.sampled_fps): 6 of 12 frames at 4 fps = 2 fps
  assert.equal(v.secondPerGrid, 1);
  // asked 1 fps of 12 frames at 6 fps: 2 frames, raised to min_frames 4 (0, 3, 6, 9) = 2 fps sampled, 1 s per temporal patch
  const slow = await new VideoProcessor({ family: 'qwen2_5_vl', fps: 1, minPixels: 3136 }).processFolder(dir, 6);
  assert.deepEqual(slow.frameIndices, [0, 3, 6, 9]);
  assert.equal(slow.secondPerGrid, 1);
  // Qwen3-VL the same way: int(2 s · 1 fps) = 2 frames, raised to 4 (linspace 0, 4, 7, 11) = 2 fps sampled
  const q3 = await new VideoProcessor({ family: 'qwen3_vl', fps: 1, minPixels: 32 * 32 }).processFolder(dir, 6);
  assert.deepEqual(q3.frameIndices, [0, 4, 7, 11]);
  assert.equal(q3.secondPerGrid, 1);
  writeFileSync(path.join(dir, 'video.json'), '{"fps": 4}');
  assert.deepEqual((await p.processFolder(dir)).frameIndices, [0, 2, 4, 6, 8, 10]);
  writeFileSync(path.join(dir, 'video.json'), '{"rate": 4}');
  await assert.rejects(p.processFolder(dir), /video.json: expected \{"fps": a positive number\}; got \{"rate":4\}/);
  await assert.rejects(p.processFolder(path.join(work, 'nope')), /video folder not found/);
  await assert.rejects(p.processFolder(path.join(dir, 'f0.png')), /expected a folder of frames/);
  assert.deepEqual(sampleVisuals({ imagePath: 'poster.png', videoPaths: ['a', 'b'] }), {
    images: [],
    videos: ['a', 'b'],
  });
  assert.deepEqual(sampleVisuals({ imagePath: 'x.png' }), { images: ['x.png'], videos: [] });
});

test('prompts with videos: video pads; Qwen3-VL writes <t seconds> before each temporal patch', () => {
  const dir = path.join(work, 'tok');
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(qwen2vlTokenizerJson()));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(qwen2vlTokenizerConfig()));
  writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(qwen2vlGenerationConfig()));
  const tok = VlmTokenizer.load(dir);
  const VS = 151652,
    VE = 151653,
    IP = 151655,
    VP = 151656;
  const img = { pixels: new Float32Array(0), gridThw: [1, 2, 2] as [number, number, number] };
  const vid = { pixels: new Float32Array(0), gridThw: [2, 2, 4] as [number, number, number], video: true };
  const msgs = VlmTokenizer.vqaMessages('Which way?', ['image', 'video']);
  const p = tok.buildPrompt(msgs, [img, vid]);
  const ids = [...p.ids];
  assert.equal(ids.filter((t) => t === IP).length, 1);
  assert.equal(ids.filter((t) => t === VP).length, 4);
  const at = ids.indexOf(VP);
  assert.deepEqual(ids.slice(at - 1, at + 5), [VS, VP, VP, VP, VP, VE]);
  assert.throws(() => tok.buildPrompt(msgs, [vid, img]), /input 0 is a video but the conversation has an image there/);
  assert.throws(() => tok.buildPrompt(msgs, [img]), /the conversation has 1 video but 0 videos were given/);
  // Qwen3-VL (Qwen3VLProcessor, transformers 5): the template's <|video_pad|> alone becomes, per temporal
  // patch, "<0.2 seconds>" <|vision_start|> pads <|vision_end|>; the template's start and end stay around them
  const q3 = tok.buildPrompt(msgs, [img, { ...vid, timestamps: [0.25, 1.3] }]);
  const t0 = [...tok.encode('<0.2 seconds>')],
    t1 = [...tok.encode('<1.3 seconds>')];
  const from = [...q3.ids].indexOf(IP) + 2; // after the image pad and its <|vision_end|>
  const run = [VS, ...t0, VS, VP, VP, VE, ...t1, VS, VP, VP, VE, VE];
  assert.deepEqual([...q3.ids].slice(from, from + run.length), run);
  assert.equal(tok.decode([...q3.ids].slice(from + run.length)).startsWith('Which way?'), true);
  assert.equal([...q3.ids].filter((t) => t === VS).length, 4);
  // the same ids as tokenizing the processor's expanded text in one piece
  const text = tok
    .applyChatTemplate(msgs)
    .replace(
      '<|video_pad|>',
      '<0.2 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|><1.3 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>',
    );
  assert.deepEqual([...q3.ids], tok.encode(text));
  assert.throws(
    () => tok.buildPrompt(msgs, [img, { ...vid, timestamps: [0.5] }]),
    /video 1: 1 timestamps for 2 temporal patches/,
  );
  // the timestamp text is Python's f"{x:.1f}": exact binary ties to even (0.25 -> 0.2, 0.75 -> 0.8), else the nearest (0.35 is below 0.35)
  const stamps = [0.25, 0.75, 1.25, 0.35, 1.45, 2.6, 0.3];
  const many = tok.buildPrompt(msgs, [img, { ...vid, gridThw: [stamps.length, 2, 4], timestamps: stamps }]);
  assert.deepEqual(
    tok.decode([...many.ids]).match(/<[0-9.]+ seconds>/g),
    ['0.2', '0.8', '1.2', '0.3', '1.4', '2.6', '0.3'].map((t) => `<${t} seconds>`),
  );
});
