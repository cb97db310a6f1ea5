import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { Qwen2VLImageProcessor, smartResize, decodeRgb, CLIP_MEAN, CLIP_STD } from '../../src/vision/qwen2vl.js';
import { resizeBicubic } from '../../src/vision/resize.js';
import { SafetensorsFile } from '../../src/util/safetensors.js';

const FIX = path.resolve('test/fixtures/vision');
const CASE = path.join(FIX, 'qwen2vl-pil');

test('smartResize equals transformers 5.17 smart_resize over the recorded table', () => {
  const table = JSON.parse(readFileSync(path.join(FIX, 'smart_resize.json'), 'utf8')) as {
    rows: {
      height: number;
      width: number;
      min_pixels: number;
      max_pixels: number;
      resized?: [number, number];
      error?: string;
    }[];
  };
  assert.ok(table.rows.length >= 100);
  for (const r of table.rows) {
    const opts = { factor: 28, minPixels: r.min_pixels, maxPixels: r.max_pixels };
    if (r.resized) assert.deepEqual(smartResize(r.height, r.width, opts), r.resized, JSON.stringify(r));
    else
      assert.throws(
        () => smartResize(r.height, r.width, opts),
        /aspect ratio of .*accepts at most 200/,
        JSON.stringify(r),
      );
  }
  // Python's round is half-to-even: 70/28 = 2.5 -> 2, 98/28 = 3.5 -> 4.
  assert.deepEqual(smartResize(70, 98), [56, 112]);
});

test('every fixture image: same grid and patches as transformers (exact without and with resize)', async () => {
  const meta = JSON.parse(readFileSync(path.join(CASE, 'meta.json'), 'utf8'));
  const file = await SafetensorsFile.open(path.join(CASE, 'inputs.safetensors'));
  let checked = 0;
  try {
    for (const [name, e] of Object.entries(
      meta.images as Record<
        string,
        { grid_thw: number[] | null; min_pixels: number; max_pixels: number; error?: string }
      >,
    )) {
      const img = path.join(CASE, 'images', `${name}.${name.startsWith('photo') ? 'jpg' : 'png'}`);
      const proc = new Qwen2VLImageProcessor({ minPixels: e.min_pixels, maxPixels: e.max_pixels });
      if (e.error) {
        await assert.rejects(
          proc.process(img),
          new RegExp(`${name}\\.png: image of 6100x30 pixels has an aspect ratio of 203\\.3`),
        );
        continue;
      }
      const r = await proc.process(img);
      assert.deepEqual(r.gridThw, e.grid_thw, name);
      const want = await file.readFloat32(`${name}.pixel_values`);
      assert.equal(r.pixels.length, want.length, name);
      let max = 0;
      for (let i = 0; i < want.length; i++) max = Math.max(max, Math.abs(want[i]! - r.pixels[i]!));
      assert.ok(max <= 1e-6, `${name}: max abs error ${max}`);
      assert.equal(r.numTokens, (r.gridThw[1] * r.gridThw[2]) / 4);
      checked++;
    }
  } finally {
    await file.close();
  }
  assert.equal(checked, 10);
  assert.equal(meta.multi_image.equals_concatenation, true);
});

test('processMany concatenates the images of one prompt in order', async () => {
  const proc = new Qwen2VLImageProcessor();
  const a = path.join(CASE, 'images/plain_56x84.png'),
    b = path.join(CASE, 'images/odd_61x47.png');
  const many = await proc.processMany([a, b]);
  assert.deepEqual(many.gridThw, [
    [1, 4, 6],
    [1, 4, 4],
  ]);
  assert.equal(many.pixelValues.length, (24 + 16) * 1176);
  const one = await proc.process(b);
  assert.deepEqual(many.pixelValues.subarray(24 * 1176), one.pixels);
  // Decoded RGB and encoded bytes are accepted as well as paths.
  const bytes = readFileSync(b);
  assert.deepEqual((await proc.process(bytes)).pixels, one.pixels);
  assert.deepEqual((await proc.process(await decodeRgb(b))).pixels, one.pixels);
});

test('patch rows follow transformers order: (block row, block col, row, col) x (channel, frame, y, x)', () => {
  // A 56x56 image whose red value encodes x and green value encodes y; blue fixed.
  const w = 56,
    h = 56;
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      rgb[3 * (y * w + x)] = x;
      rgb[3 * (y * w + x) + 1] = y;
      rgb[3 * (y * w + x) + 2] = 7;
    }
  const proc = new Qwen2VLImageProcessor();
  const out = proc.patchify(rgb, h, w);
  assert.equal(out.length, 16 * 1176);
  const norm = (v: number, c: number) =>
    Math.fround(Math.fround(Math.fround(v / 255) - Math.fround(CLIP_MEAN[c]!)) / Math.fround(CLIP_STD[c]!));
  // Row 5 = block (0,1), patch (mh=0, mw=1) -> patch column 3, row 0: x0 = 42, y0 = 0.
  // Row 6 = block (0,1), patch (mh=1, mw=0) -> patch column 2, row 1: x0 = 28, y0 = 14.
  for (const [row, x0, y0] of [
    [5, 42, 0],
    [6, 28, 14],
    [15, 42, 42],
  ] as const) {
    for (const [c, t, py, px] of [
      [0, 0, 0, 0],
      [0, 1, 3, 5],
      [1, 0, 13, 2],
      [1, 1, 7, 13],
      [2, 1, 0, 0],
    ] as const) {
      const col = ((c * 2 + t) * 14 + py) * 14 + px;
      const expected = c === 0 ? norm(x0 + px, 0) : c === 1 ? norm(y0 + py, 1) : norm(7, 2);
      assert.equal(out[row * 1176 + col], expected, `row ${row} c${c} t${t} y${py} x${px}`);
    }
  }
});

test('resizeBicubic: identity, constant images stay constant, shape checks', () => {
  const src = new Uint8Array(30 * 20 * 3).fill(99);
  assert.deepEqual(resizeBicubic(src, 30, 20, 3, 30, 20), src);
  const up = resizeBicubic(src, 30, 20, 3, 57, 41);
  assert.equal(up.length, 57 * 41 * 3);
  assert.ok(up.every((v) => v === 99));
  assert.ok(resizeBicubic(src, 30, 20, 3, 7, 5).every((v) => v === 99));
  assert.throws(() => resizeBicubic(src, 31, 20, 3, 10, 10), /expected 1860 bytes for 31x20x3 but received 1800/);
});

test('bad images: missing file, corrupt JPEG, wrong options name what is wrong', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-vis-'));
  const proc = new Qwen2VLImageProcessor();
  await assert.rejects(proc.process(path.join(dir, 'nope.jpg')), {
    message: `${path.join(dir, 'nope.jpg')}: image file not found`,
  });
  const good = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } })
    .jpeg()
    .toBuffer();
  const bad = path.join(dir, 'truncated.jpg');
  writeFileSync(bad, good.subarray(0, Math.floor(good.length / 2)));
  await assert.rejects(
    proc.process(bad),
    (err: Error) =>
      err.message.startsWith(`${bad}: cannot decode image: `) && /premature end|truncated/i.test(err.message),
  );
  const junk = path.join(dir, 'junk.png');
  writeFileSync(junk, 'not an image at all');
  await assert.rejects(proc.process(junk), /junk\.png: cannot decode image: .*unsupported image format/);
  assert.throws(() => new Qwen2VLImageProcessor({ minPixels: 0 }), {
    message: 'Expected positive integer for minPixels but received 0 of type number',
  });
  assert.throws(() => new Qwen2VLImageProcessor({ minPixels: 5000, maxPixels: 4000 }), {
    message: 'Expected integer <= maxPixels (4000) for minPixels but received 5000 of type number',
  });
  assert.throws(() => new Qwen2VLImageProcessor({ resample: 'nearest' as 'pil-bicubic' }), {
    message: 'Expected one of "pil-bicubic", "sharp-cubic" for resample but received "nearest" of type string',
  });
  await assert.rejects(
    new Qwen2VLImageProcessor({ doResize: false }).process({
      data: new Uint8Array(30 * 28 * 3),
      width: 30,
      height: 28,
    }),
    /<30x28 RGB>: image of 30x28 pixels: with doResize false both sides must be multiples of 28/,
  );
});
