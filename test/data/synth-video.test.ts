/**
 * The synthetic video set: folders of frames + a Parquet of the VQA schema with video_path; every
 * answer follows from the frames (recomputed here from the decoded PNGs), one state per temporal
 * patch, and clips with the same first frame have different answers (blink: the same at any frame); the same seed gives the same bytes; a video sample runs end to end through LocalPolicy on a
 * tiny Qwen2.5-VL folder made by `vqalab model init`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VqaDataset } from '../../src/data/dataset.js';
import {
  renderFrame,
  SYNTH_VIDEO_COLOURS,
  SYNTH_VIDEO_FAMILIES,
  type SynthClip,
  synthClips,
  writeSynthVideo,
} from '../../src/data/synth-video.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { decodeRgb } from '../../src/vision/qwen2vl.js';
import { frameFiles, VideoProcessor } from '../../src/vision/video.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');
const work = mkdtempSync(path.join(tmpdir(), 'vqalab-synth-video-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

/** Centre and colour of the non-background pixels of a frame, or null when the circle is hidden. */
async function circle(file: string): Promise<{ c: [number, number]; rgb: number[] } | null> {
  const { data, width, height } = await decodeRgb(file);
  let n = 0,
    sx = 0,
    sy = 0;
  let rgb: number[] = [];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 3 * (y * width + x);
      if (data[i] !== 235 || data[i + 1] !== 235 || data[i + 2] !== 235) {
        n++;
        sx += x + 0.5;
        sy += y + 0.5;
        rgb = [data[i]!, data[i + 1]!, data[i + 2]!];
      }
    }
  }
  return n === 0 ? null : { c: [sx / n, sy / n], rgb };
}

const colourName = (rgb: number[]) =>
  Object.entries(SYNTH_VIDEO_COLOURS).find(([, v]) => v.every((x, i) => x === rgb[i]))?.[0];

test('synthetic videos: the Parquet reads back with video paths; answers follow from the frames; one state per temporal patch', async () => {
  const dir = path.join(work, 'set');
  const r = await writeSynthVideo(dir, { videos: 12, seed: 4 });
  const ds = await VqaDataset.fromParquet(r.parquet);
  assert.equal(ds.size, 12);
  for (let i = 0; i < ds.size; i++) {
    const s = ds.get(i);
    assert.equal(s.videoPaths?.length, 1, s.id);
    assert.equal(s.imagePath, path.join(s.videoPaths![0]!, '00000.png'), 'the poster is the first frame');
    const files = frameFiles(s.videoPaths![0]!);
    assert.equal(files.length, 14);
    assert.deepEqual(JSON.parse(readFileSync(path.join(s.videoPaths![0]!, 'video.json'), 'utf8')), { fps: 2 });
    // frames 2k and 2k + 1 are the same: each temporal patch shows one state
    for (let f = 0; f < 14; f += 2) {
      assert.ok(readFileSync(files[f]!).equals(readFileSync(files[f + 1]!)), `${s.id}: frames ${f}, ${f + 1}`);
    }
    const cs = await Promise.all(files.map(circle));
    const family = s.extra!.family;
    if (family === 'color') {
      assert.equal(s.question, 'What color is the circle at the end?');
      assert.equal(s.answer, colourName(cs[13]!.rgb), s.id);
      assert.notEqual(colourName(cs[0]!.rgb), s.answer, `${s.id}: the first frame shows the other colour`);
    } else if (family === 'motion') {
      assert.equal(s.question, 'Which way does the circle move?');
      const [a, b] = [cs[0]!.c, cs[13]!.c];
      assert.equal(a[0], 28, 'it starts in the middle');
      assert.ok(Math.abs(b[0] - a[0]) >= 13 && b[1] === a[1], `${s.id}: moves ${b[0] - a[0]} px across`);
      assert.equal(s.answer, b[0] > a[0] ? 'right' : 'left', s.id);
    } else {
      assert.equal(s.question, 'How many times does the circle blink?');
      let blinks = 0;
      for (let f = 1; f < 14; f++) if (cs[f] === null && cs[f - 1] !== null) blinks++;
      assert.equal(s.answer, String(blinks), s.id);
      assert.ok(cs[0] !== null && cs[13] !== null, 'first and last frames show the circle');
    }
  }
  assert.deepEqual(new Set(r.clips.map((c) => c.family)), new Set(['color', 'motion', 'blink']));
  // same seed, same bytes
  const again = await writeSynthVideo(path.join(work, 'again'), { videos: 12, seed: 4 });
  for (const name of ['vid_000000', 'vid_000007', 'vid_000011']) {
    for (const f of readdirSync(path.join(dir, 'videos', name))) {
      assert.ok(
        readFileSync(path.join(dir, 'videos', name, f)).equals(readFileSync(path.join(again.dir, 'videos', name, f))),
        `${name}/${f}`,
      );
    }
  }
  // the video processor reads a clip: 14 frames of 56² at 2 fps → 7 temporal patches of 4 × 4 patches
  const v = await new VideoProcessor({ family: 'qwen2_5_vl', minPixels: 3136 }).processFolder(
    ds.get(0).videoPaths![0]!,
  );
  assert.deepEqual(v.gridThw, [7, 4, 4]);
});

test('every synthetic video question needs more than the first frame: clips that start alike have different answers', () => {
  const frameKey = (clip: SynthClip, f: number) => Buffer.from(renderFrame(clip, f, 56)).toString('base64');
  for (const family of SYNTH_VIDEO_FAMILIES) {
    const clips = synthClips({ videos: 400, seed: 3, families: [family] });
    // frames that some clips share while their answers differ: no such frame index answers the question
    const ambiguousAt = (f: number) => {
      const answers = new Map<string, Set<string>>();
      for (const c of clips) {
        const k = frameKey(c, f);
        answers.set(k, (answers.get(k) ?? new Set()).add(c.answer));
      }
      return [...answers.values()].some((a) => a.size > 1);
    };
    assert.ok(ambiguousAt(0), `${family}: some clips with the same first frame have different answers`);
    assert.ok(new Set(clips.map((c) => c.answer)).size > 1, `${family}: more than one answer`);
    // blink: no single frame tells the count (each frame is the circle or nothing, at every index)
    if (family === 'blink') for (let f = 0; f < 14; f++) assert.ok(ambiguousAt(f), `blink: frame ${f}`);
  }
  // the answers' vocabulary: 4 colours, 2 directions, 1-3 blinks
  const all = synthClips({ videos: 300, seed: 5 });
  const by = (f: string) => [...new Set(all.filter((c) => c.family === f).map((c) => c.answer))].sort();
  assert.deepEqual(by('color'), ['blue', 'green', 'red', 'yellow']);
  assert.deepEqual(by('motion'), ['left', 'right']);
  assert.deepEqual(by('blink'), ['1', '2', '3']);
  // in memory and on disk the same clips
  assert.deepEqual(
    synthClips({ videos: 5, seed: 9 }).map((c) => c.answer),
    synthClips({ videos: 5, seed: 9 }).map((c) => c.answer),
  );
});

test('a dataset with videos written back to Parquet keeps them: frame folders (relative or not), fps, rows without video', async () => {
  const dir = path.join(work, 'rewrite');
  const r = await writeSynthVideo(dir, { videos: 4, seed: 7 });
  const ds = await VqaDataset.fromParquet(r.parquet);
  const rows = [...ds];
  // two folders on one row, an fps on another, a row with no video at all
  rows[1] = { ...rows[1]!, videoPaths: [rows[1]!.videoPaths![0]!, rows[2]!.videoPaths![0]!] };
  rows[2] = { ...rows[2]!, videoFps: 4 };
  rows[3] = { ...rows[3]!, videoPaths: undefined };
  for (const relativePaths of [false, true]) {
    const out = path.join(dir, `again-${relativePaths}.parquet`);
    await VqaDataset.fromSamples(rows).writeParquet(out, { relativePaths });
    const back = [...(await VqaDataset.fromParquet(out))];
    assert.deepEqual(
      back.map((s) => [s.id, s.videoPaths, s.videoFps, s.extra?.family]),
      rows.map((s) => [s.id, s.videoPaths, s.videoFps, s.extra?.family]),
      `relativePaths ${relativePaths}`,
    );
  }
});

test('a video sample end to end: LocalPolicy on a tiny Qwen2.5-VL folder samples answers to a synthetic video question', async () => {
  const model = path.join(work, 'q25');
  const init = spawnSync(
    process.execPath,
    [
      bin,
      'model',
      'init',
      model,
      '--preset',
      'qwen2.5-vl-3b',
      '--hidden',
      '32',
      '--layers',
      '1',
      '--heads',
      '4',
      '--kv-heads',
      '2',
      '--intermediate',
      '48',
      '--vocab',
      '151680',
      '--vision-depth',
      '2',
      '--vision-dim',
      '16',
      '--vision-heads',
      '2',
      '--vision-intermediate',
      '24',
      '--dtype',
      'f32',
      '--quiet',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(init.status, 0, init.stderr);
  const set = await writeSynthVideo(path.join(work, 'e2e'), { videos: 2, seed: 1 });
  const policy = await LocalPolicy.load(model, { threads: 1 });
  try {
    const sample = set.samples[0]!;
    const messages = policy.messagesFor(sample);
    assert.deepEqual(
      (messages.at(-1)!.content as { type: string }[]).map((c) => c.type),
      ['video', 'text'],
    );
    const out = await policy.generate(sample, { n: 2, temperature: 1, maxTokens: 3, seed: 5 });
    assert.equal(out.length, 2);
    for (const c of out) assert.notEqual(c.finishReason, 'error', c.error);
    // one video pad per merged token of the video
    const v = await policy.video(sample.videoPaths![0]!);
    assert.equal(v.video, true);
    const prompt = policy.prompt(messages, [v]);
    assert.equal([...prompt.ids].filter((t) => t === 151656).length, (v.gridThw[0] * v.gridThw[1] * v.gridThw[2]) / 4);
  } finally {
    policy.model.dispose();
  }
});

test('vqalab data synth-video writes the set and shows it; bad options get clear messages', () => {
  const out = path.join(work, 'cli');
  const r = spawnSync(
    process.execPath,
    [bin, 'data', 'synth-video', '--out', out, '--videos', '3', '--seed', '2', '--show', '3'],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /data synth-video: 3 clips -> .*synth-video\.parquet/);
  assert.match(r.stdout, /\[0\] synthvid_000000  vid_000000 \(video\)  Q: What color is the circle at the end\?/);
  const bad = spawnSync(
    process.execPath,
    [bin, 'data', 'synth-video', '--out', path.join(work, 'bad'), '--frames', '7'],
    { encoding: 'utf8' },
  );
  assert.equal(bad.status, 1);
  assert.match(
    bad.stderr,
    /synth-video: Expected an even number of frames \(whole temporal patches of 2\) for frames but received 7/,
  );
});
