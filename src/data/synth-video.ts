/**
 * The synthetic video set: short clips of one moving or blinking circle, written as folders of PNG
 * frames (src/vision/video.ts reads them), with questions that only several frames answer:
 * - motion: "Which way does the circle move?" (left / right / up / down). The circle starts far
 *   enough from every edge that the opposite motion would fit too, so the first frame (or any one
 *   frame) does not tell the direction; only the change between frames does.
 * - blink: "How many times does the circle blink?" (1 / 2 / 3). The circle sits still and vanishes
 *   for single frames; the first and last frames always show it, so no one frame tells the count.
 * The same options and seed give byte-identical files.
 *
 * Output folder: `synth-video.parquet` (VQA schema: id, image_path = the clip's first frame,
 * question, answer, answers; video_path = the frame folder; extra column `family`) and
 * `videos/vid_000000/00000.png ...` with `video.json` ({"fps": N}); paths relative to the folder.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { withAtomicOutput } from '../util/fs.js';
import { expectInteger, expectNumber, invalidParameterError } from '../util/validate.js';
import { writeParquetAtomic } from './parquet.js';
import { mulberry32 } from '../util/rng.js';
import { VqaTableBuilder } from './schema.js';
import type { VqaSample } from './types.js';

export type SynthVideoFamily = 'motion' | 'blink';
export const SYNTH_VIDEO_FAMILIES: readonly SynthVideoFamily[] = ['motion', 'blink'];
export const SYNTH_DIRECTIONS = ['left', 'right', 'up', 'down'] as const;

export interface SynthVideoOptions {
  /** Clips. Default 200. */
  videos?: number;
  /** Default 0. */
  seed?: number;
  /** Frames per clip (even, at least 6). Default 8. */
  frames?: number;
  /** Side of the square frames in pixels. Default 56 (a multiple of 28: no resize for Qwen2-VL / Qwen2.5-VL). */
  frameSize?: number;
  /** Frame rate written to video.json. Default 2 (the processors' default sampling rate: every frame is kept). */
  fps?: number;
  /** Families, drawn in turn. Default both. */
  families?: SynthVideoFamily[];
}

/** One clip: what is drawn in each frame, and its question. */
export interface SynthClip {
  family: SynthVideoFamily;
  question: string;
  answer: string;
  /** Circle centre per frame (x, y), or null when the circle is hidden. */
  centres: ([number, number] | null)[];
  radius: number;
  colour: [number, number, number];
}

const COLOURS: [number, number, number][] = [
  [220, 40, 40],
  [40, 90, 220],
  [30, 170, 60],
  [230, 180, 20],
];
const BACKGROUND: [number, number, number] = [235, 235, 235];

/** A clip of the family from the generator (see the module comment for the rules). */
export function makeClip(rand: () => number, family: SynthVideoFamily, frames: number, size: number): SynthClip {
  const radius = Math.max(3, Math.round(size * 0.11));
  const colour = COLOURS[Math.floor(rand() * COLOURS.length)]!;
  const pick = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  if (family === 'motion') {
    const dir = SYNTH_DIRECTIONS[Math.floor(rand() * 4)]!;
    const travel = Math.round(size * 0.3);
    // the start is at least `travel` from both edges of the motion's axis: either direction fits
    const lo = radius + travel,
      hi = size - 1 - radius - travel;
    const sx = pick(radius + 1, size - 2 - radius),
      sy = pick(radius + 1, size - 2 - radius);
    const s = pick(lo, hi);
    const [dx, dy] = dir === 'left' ? [-1, 0] : dir === 'right' ? [1, 0] : dir === 'up' ? [0, -1] : [0, 1];
    const x0 = dx !== 0 ? s : sx,
      y0 = dy !== 0 ? s : sy;
    const centres: [number, number][] = [];
    for (let f = 0; f < frames; f++) {
      const k = (travel * f) / (frames - 1);
      centres.push([x0 + dx * k, y0 + dy * k]);
    }
    return { family, question: 'Which way does the circle move?', answer: dir, centres, radius, colour };
  }
  const blinks = 1 + Math.floor(rand() * 3);
  // hidden frames: `blinks` distinct, non-adjacent indices in 1 .. frames - 2
  const slots: number[] = [];
  for (let i = 1; i <= frames - 2; i++) slots.push(i);
  let hidden: number[] = [];
  for (let attempt = 0; attempt < 1000; attempt++) {
    const cand = [...slots]
      .sort(() => rand() - 0.5)
      .slice(0, blinks)
      .sort((a, b) => a - b);
    if (cand.every((v, i) => i === 0 || v - cand[i - 1]! > 1)) {
      hidden = cand;
      break;
    }
  }
  if (hidden.length !== blinks) hidden = Array.from({ length: blinks }, (_, i) => 1 + 2 * i);
  const x = pick(radius + 1, size - 2 - radius),
    y = pick(radius + 1, size - 2 - radius);
  const centres = Array.from({ length: frames }, (_, f) => (hidden.includes(f) ? null : ([x, y] as [number, number])));
  return { family, question: 'How many times does the circle blink?', answer: String(blinks), centres, radius, colour };
}

/** Frame f of a clip as 8-bit RGB (size × size, interleaved). */
export function renderFrame(clip: SynthClip, f: number, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++) out.set(BACKGROUND, 3 * i);
  const c = clip.centres[f];
  if (c) {
    const r2 = clip.radius * clip.radius;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const dx = x + 0.5 - c[0],
          dy = y + 0.5 - c[1];
        if (dx * dx + dy * dy <= r2) out.set(clip.colour, 3 * (y * size + x));
      }
    }
  }
  return out;
}

export interface SynthVideoResult {
  dir: string;
  parquet: string;
  samples: VqaSample[];
  clips: SynthClip[];
}

/** Write the set to `dir` (atomically: a temporary folder renamed into place). */
export async function writeSynthVideo(dir: string, options: SynthVideoOptions = {}): Promise<SynthVideoResult> {
  const n = expectInteger('videos', options.videos ?? 200, 1);
  const seed = expectInteger('seed', options.seed ?? 0, 0);
  const frames = expectInteger('frames', options.frames ?? 8, 6);
  if (frames % 2 !== 0)
    throw invalidParameterError('frames', 'an even number of frames (whole temporal patches of 2)', frames);
  const size = expectInteger('frameSize', options.frameSize ?? 56, 16);
  const fps = expectNumber('fps', options.fps ?? 2, 0.001);
  const families = options.families ?? [...SYNTH_VIDEO_FAMILIES];
  if (!Array.isArray(families) || families.length === 0 || families.some((f) => !SYNTH_VIDEO_FAMILIES.includes(f))) {
    throw invalidParameterError('families', `a non-empty array of ${SYNTH_VIDEO_FAMILIES.join(', ')}`, families);
  }
  const target = path.resolve(dir);
  const rand = mulberry32(seed);
  const clips: SynthClip[] = [];
  const samples: VqaSample[] = [];
  await withAtomicOutput(target, async (tmp) => {
    mkdirSync(tmp, { recursive: true });
    const table = new VqaTableBuilder({ relativeTo: tmp, extras: { video_path: 'string', family: 'string' } });
    for (let i = 0; i < n; i++) {
      const clip = makeClip(rand, families[i % families.length]!, frames, size);
      clips.push(clip);
      const name = `vid_${String(i).padStart(6, '0')}`;
      const folder = path.join(tmp, 'videos', name);
      mkdirSync(folder, { recursive: true });
      for (let f = 0; f < frames; f++) {
        const png = await sharp(renderFrame(clip, f, size), { raw: { width: size, height: size, channels: 3 } })
          .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false })
          .toBuffer();
        writeFileSync(path.join(folder, `${String(f).padStart(5, '0')}.png`), png);
      }
      writeFileSync(path.join(folder, 'video.json'), JSON.stringify({ fps }) + '\n');
      const rel = `videos/${name}`;
      const s: VqaSample = {
        id: `synthvid_${String(i).padStart(6, '0')}`,
        imagePath: path.join(folder, '00000.png'),
        question: clip.question,
        answer: clip.answer,
        answers: Array.from({ length: 10 }, () => clip.answer),
        extra: { video_path: rel, family: clip.family },
      };
      table.add(s);
      samples.push({ ...s, imagePath: path.join(target, rel, '00000.png'), videoPaths: [path.join(target, rel)] });
    }
    const built = table.build();
    await writeParquetAtomic(path.join(tmp, 'synth-video.parquet'), async (write) => {
      await write(built);
    });
  });
  return { dir: target, parquet: path.join(target, 'synth-video.parquet'), samples, clips };
}
