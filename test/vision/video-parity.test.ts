/**
 * Videos against transformers itself: each folder of test/fixtures/video (made by
 * scripts/gen/video_fixtures.py with the family's transformers processor and get_rope_index) is run
 * through our pipeline on the same frames and settings — VideoProcessor (sampling, sizing, patches,
 * second_per_grid, timestamps), the image processor, the chat template and VlmTokenizer.buildPrompt
 * (video pads, Qwen3-VL's `<t seconds>` text), the CPU engine's rope_index and the ONNX rollout's
 * (src/rollout/onnx-rope.ts) — and must give the same input_ids, grids, sampled frames, second_per_grid,
 * positions and rope delta (where generation goes on), and pixel values within 1e-5 where
 * transformers did not resize the clip (it resizes videos with torchvision, we with PIL's bicubic).
 * VQALAB_VIDEO_FIXTURES points at another folder of such cases.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import type { ImageInput } from '../../src/engine/types.js';
import {
  qwen2vlGenerationConfig,
  qwen2vlTokenizerConfig,
  qwen2vlTokenizerJson,
} from '../../src/model/qwen-tokenizer.js';
import { ropeIndex } from '../../src/rollout/onnx-rope.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../../src/vision/qwen2vl.js';
import { VideoProcessor } from '../../src/vision/video.js';
import { ROOT, tmpDir } from '../engine/helpers.js';
import { type Family, TINY_IMAGE, TINY_VEND, TINY_VIDEO, TINY_VSTART, writeTiny } from '../engine/tiny-family.js';

const FIXTURES = process.env.VQALAB_VIDEO_FIXTURES ?? path.join(ROOT, 'test', 'fixtures', 'video');

type Triple = [number, number, number];
interface VideoCase {
  name: string;
  family: Family;
  question: string;
  kinds: ('image' | 'video')[];
  images: string[];
  videos: { dir: string; frames: number; height: number; width: number; fps: number }[];
  video_processor: {
    fps?: number;
    num_frames?: number;
    min_pixels: number;
    max_pixels: number;
    min_frames: number | null;
    max_frames: number | null;
    patch_size: number;
    merge_size: number;
    temporal_patch_size: number;
    image_mean: Triple;
    image_std: Triple;
  };
  image_processor: {
    min_pixels: number;
    max_pixels: number;
    patch_size: number;
    merge_size: number;
    temporal_patch_size: number;
    image_mean: Triple;
    image_std: Triple;
  };
  model: {
    tokens_per_second: number | null;
    image_token_id: number;
    video_token_id: number;
    vision_start_token_id: number;
    vision_end_token_id: number;
  };
  expected: {
    prompt_text: string;
    input_ids: number[];
    image_grid_thw: Triple[];
    video_grid_thw: Triple[];
    second_per_grid_ts: number[] | null;
    frames_indices: (number[] | null)[] | null;
    timestamps: number[][] | null;
    pixel_values_videos: {
      videos: { rows: [number, number]; resized: boolean; sum: number; file: string | null }[];
    };
    position_ids: [number[], number[], number[]];
    rope_deltas: number;
  };
  generator?: { transformers?: string };
}

function caseDirs(): string[] {
  if (!existsSync(FIXTURES)) return [];
  return readdirSync(FIXTURES, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(path.join(FIXTURES, d.name, 'case.json')))
    .map((d) => path.join(FIXTURES, d.name))
    .sort();
}

function readCase(dir: string): VideoCase {
  const file = path.join(dir, 'case.json');
  const c = JSON.parse(readFileSync(file, 'utf8')) as VideoCase;
  for (const k of ['family', 'kinds', 'videos', 'video_processor', 'image_processor', 'model', 'expected'] as const)
    if (c[k] === undefined)
      throw new Error(`${file}: no "${k}" (expected the layout scripts/gen/video_fixtures.py writes)`);
  return c;
}

let tokenizer: VlmTokenizer | undefined;
function qwenTokenizer(): VlmTokenizer {
  if (tokenizer) return tokenizer;
  const dir = path.join(tmpDir('vqalab-video-parity-'), 'tok');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(qwen2vlTokenizerJson()));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(qwen2vlTokenizerConfig()));
  writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(qwen2vlGenerationConfig()));
  tokenizer = VlmTokenizer.load(dir);
  return tokenizer;
}

/** Our inputs in prompt order: the images, then the videos, as the case's settings ask. */
async function ourInputs(dir: string, c: VideoCase): Promise<ImageInput[]> {
  const ip = c.image_processor,
    vp = c.video_processor;
  const images = new Qwen2VLImageProcessor({
    minPixels: ip.min_pixels,
    maxPixels: ip.max_pixels,
    patchSize: ip.patch_size,
    mergeSize: ip.merge_size,
    temporalPatchSize: ip.temporal_patch_size,
    imageMean: ip.image_mean,
    imageStd: ip.image_std,
  });
  const videos = new VideoProcessor({
    family: c.family,
    ...(vp.num_frames !== undefined ? { numFrames: vp.num_frames } : { fps: vp.fps! }),
    minPixels: vp.min_pixels,
    maxPixels: vp.max_pixels,
    ...(vp.min_frames !== null ? { minFrames: vp.min_frames } : {}),
    ...(vp.max_frames !== null ? { maxFrames: vp.max_frames } : {}),
    patchSize: vp.patch_size,
    mergeSize: vp.merge_size,
    temporalPatchSize: vp.temporal_patch_size,
    imageMean: vp.image_mean,
    imageStd: vp.image_std,
  });
  const out: ImageInput[] = [];
  for (const f of c.images) out.push(await images.process(path.join(dir, f)));
  for (const v of c.videos) out.push(await videos.processFolder(path.join(dir, v.dir)));
  return out;
}

/** The prompt in the tiny model's vocabulary: only the vision tokens decide the positions. */
function tinyIds(ids: readonly number[], m: VideoCase['model']): Int32Array {
  const map = new Map([
    [m.image_token_id, TINY_IMAGE],
    [m.video_token_id, TINY_VIDEO],
    [m.vision_start_token_id, TINY_VSTART],
    [m.vision_end_token_id, TINY_VEND],
  ]);
  return Int32Array.from(ids, (t) => map.get(t) ?? 3);
}

type Model = Awaited<ReturnType<typeof loadModel>>;
const models = new Map<string, Model>();
async function tinyModel(family: Family, tokensPerSecond: number | null): Promise<Model> {
  const key = `${family}:${tokensPerSecond}`;
  let m = models.get(key);
  if (!m) {
    m = await loadModel(writeTiny(family, tokensPerSecond === null ? {} : { tokensPerSecond }), { threads: 1 });
    models.set(key, m);
  }
  return m;
}
test.after(() => {
  for (const m of models.values()) m.dispose();
});

const maxAbsDiff = (a: Float32Array, b: Float32Array): number => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

const dirs = caseDirs();
if (dirs.length === 0) {
  test('video parity with transformers', {
    skip: `no fixtures in ${FIXTURES}: make them with scripts/gen/video_fixtures.py (torch + transformers; on the GPU machine VIDEO_FIXTURES=1 scripts/gpu/bench-trainer.sh writes video-fixtures.tgz) and unpack them there`,
  }, () => {});
}

for (const dir of dirs) {
  const c = readCase(dir);
  test(`${path.basename(dir)} (${c.family}, transformers ${c.generator?.transformers ?? '?'}): frames, grids, prompt ids and M-RoPE positions as transformers`, async (t) => {
    const e = c.expected;
    const inputs = await ourInputs(dir, c);
    const images = inputs.filter((x) => !x.video),
      videos = inputs.filter((x) => x.video) as (ImageInput & {
        frameIndices: number[];
        secondPerGrid: number;
        timestamps?: number[];
      })[];
    assert.deepEqual(
      images.map((x) => x.gridThw),
      e.image_grid_thw,
      'image_grid_thw',
    );
    // the sampled frames first: a wrong sampling explains every later difference
    if (e.frames_indices)
      e.frames_indices.forEach((want, k) => {
        if (!want) return;
        // transformers reports the sampled indices before padding to the temporal patch size; ours after
        assert.deepEqual(videos[k]!.frameIndices.slice(0, want.length), want, `video ${k} frames_indices`);
      });
    assert.deepEqual(
      videos.map((x) => x.gridThw),
      e.video_grid_thw,
      'video_grid_thw',
    );
    if (e.second_per_grid_ts)
      e.second_per_grid_ts.forEach((s, k) =>
        assert.ok(
          Math.abs(videos[k]!.secondPerGrid - s) < 1e-6,
          `video ${k}: second_per_grid ${videos[k]!.secondPerGrid}, transformers ${s}`,
        ),
      );
    if (e.timestamps)
      e.timestamps.forEach((ts, k) => {
        const ours = videos[k]!.timestamps;
        assert.ok(
          ours && ours.length === ts.length,
          `video ${k}: timestamps ${JSON.stringify(ours)}, transformers ${JSON.stringify(ts)}`,
        );
        ts.forEach((x, i) => assert.ok(Math.abs(ours[i]! - x) < 1e-9, `video ${k} timestamp ${i}: ${ours[i]} vs ${x}`));
      });
    e.pixel_values_videos.videos.forEach((pv, k) => {
      const ours = videos[k]!.pixels;
      assert.equal(ours.length, pv.rows[0] * pv.rows[1], `video ${k}: pixel values of ${pv.rows.join('x')}`);
      if (!pv.file) {
        let sum = 0;
        for (const x of ours) sum += x;
        t.diagnostic(
          `video ${k} was resized by transformers (torchvision): sums ${sum.toFixed(3)} ours, ${pv.sum.toFixed(3)} transformers; values not compared`,
        );
        return;
      }
      const buf = readFileSync(path.join(dir, pv.file));
      const want = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      const d = maxAbsDiff(ours, want);
      assert.ok(d <= 1e-5, `video ${k}: pixel values differ by up to ${d}`);
    });

    const tok = qwenTokenizer();
    const messages = VlmTokenizer.vqaMessages(c.question, c.kinds);
    assert.equal(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), e.prompt_text, 'the rendered prompt');
    const prompt = tok.buildPrompt(messages, inputs, { mergeSize: c.video_processor.merge_size });
    assert.deepEqual([...prompt.ids], e.input_ids, 'input_ids');

    const m = await tinyModel(c.family, c.model.tokens_per_second);
    const ids = tinyIds(e.input_ids, c.model);
    const { positions: pos, next } = m._native._ropeIndex({ ids, images: inputs });
    const L = ids.length;
    const samePositions = (what: string, at: (a: number, i: number) => number) =>
      ['temporal', 'height', 'width'].forEach((axis, a) => {
        const i = e.position_ids[a]!.findIndex((x, i) => x !== at(a, i));
        assert.equal(
          i,
          -1,
          `${what}: ${axis} positions first differ at ${i}: ours ${at(a, i)}, transformers ${e.position_ids[a]![i]}`,
        );
      });
    samePositions('the engine', (a, i) => pos[a * L + i]!);
    // generation goes on at transformers' rope delta + the prompt's length
    assert.equal(next - L, e.rope_deltas, 'the engine: rope delta (next position - length)');
    // the ONNX rollout's positions (src/rollout/onnx-rope.ts), on transformers' own ids
    const onnx = ropeIndex(Int32Array.from(e.input_ids), inputs, {
      modelType: c.family,
      imageTokenId: c.model.image_token_id,
      videoTokenId: c.model.video_token_id,
      vision: { spatialMergeSize: c.video_processor.merge_size, tokensPerSecond: c.model.tokens_per_second ?? 1 },
    });
    samePositions('onnx-rope', (a, i) => Number(onnx.pos[a * L + i]));
    assert.equal(onnx.next - L, e.rope_deltas, 'onnx-rope: rope delta (next position - length)');
  });
}
