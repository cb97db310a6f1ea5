/**
 * The synthetic video set: short clips of one large circle, written as folders of PNG frames
 * (src/vision/video.ts reads them), with questions that the first frame does not answer:
 * - color: "What color is the circle at the end?" (red / blue / green / yellow). The circle changes
 *   colour once, between two temporal patches at a random point; the first frames show the other
 *   colour, so clips that start alike end differently.
 * - motion: "Which way does the circle move?" (left / right). The circle starts in the middle and
 *   moves a quarter of the side; the first frame is the same for both answers.
 * - blink: "How many times does the circle blink?" (1 / 2 / 3 with 14 frames; fewer with fewer
 *   frames). The circle sits still and vanishes for single temporal patches; the first and last
 *   frames always show it, so no one frame tells the count.
 * Built for Qwen-VL's video tokens (patches of 14 px, 2 × 2 merged, temporal patches of 2 frames),
 * so the tiny model learns to read them in minutes (bench/video-learn.sh): the state changes only
 * between temporal patches (frames 2k and 2k + 1 are the same), so each temporal patch shows one
 * state, never a blend of two; the circle is large (radius 0.4 of the side for color and blink, in
 * the middle, covering part of each of the 2 × 2 merged tokens of a 56² frame; 0.25 for motion,
 * which starts across both token columns and ends inside one); a 14-frame clip of 56² is 28 video
 * tokens. Motion asks left / right only: "up" and "down" are not words of the tiny model's
 * vocabulary. Color and motion are answered by the last temporal patch alone (not by the first);
 * blink needs the whole clip. The same options and seed give byte-identical files.
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

export type SynthVideoFamily = 'color' | 'motion' | 'blink';
export const SYNTH_VIDEO_FAMILIES: readonly SynthVideoFamily[] = ['color', 'motion', 'blink'];
export const SYNTH_DIRECTIONS = ['left', 'right'] as const;

export interface SynthVideoOptions {
  /** Clips. Default 200. */
  videos?: number;
  /** Default 0. */
  seed?: number;
  /** Frames per clip (even, at least 6). Default 14 (7 temporal patches: room for 3 blinks). */
  frames?: number;
  /** Side of the square frames in pixels. Default 56 (a multiple of 28: no resize for Qwen2-VL / Qwen2.5-VL). */
  frameSize?: number;
  /** Frame rate written to video.json. Default 2 (the processors' default sampling rate: every frame is kept). */
  fps?: number;
  /** Families, drawn in turn. Default all three. */
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
  /** Circle colour per frame. */
  colours: [number, number, number][];
}

export const SYNTH_VIDEO_COLOURS: Record<string, [number, number, number]> = {
  red: [220, 40, 40],
  blue: [40, 90, 220],
  green: [30, 170, 60],
  yellow: [230, 180, 20],
};
const COLOUR_NAMES = Object.keys(SYNTH_VIDEO_COLOURS);
const BACKGROUND: [number, number, number] = [235, 235, 235];

/** The most blinks a clip of `frames` frames holds: hidden temporal patches, apart, never the first or last. */
export function maxBlinks(frames: number): number {
  return Math.min(3, Math.floor((frames / 2 - 1) / 2));
}

/** A clip of the family from the generator (see the module comment for the rules). */
export function makeClip(rand: () => number, family: SynthVideoFamily, frames: number, size: number): SynthClip {
  // colour and blink: a circle of radius 0.4 · side in the middle covers part of every token
  const big = Math.round(size * 0.4);
  const patches = frames / 2;
  const pick = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const pickColour = (not?: string) => {
    const names = COLOUR_NAMES.filter((c) => c !== not);
    return names[Math.floor(rand() * names.length)]!;
  };
  // one state per temporal patch: frame f shows the state of patch floor(f / 2)
  const perFrame = <T>(perPatch: (t: number) => T): T[] => Array.from({ length: frames }, (_, f) => perPatch(f >> 1));
  if (family === 'color') {
    const first = pickColour(),
      last = pickColour(first);
    const change = pick(1, patches - 1); // the first temporal patch showing the last colour
    // large and in the middle (as blink): every token of a temporal patch shows its colour
    const x = size / 2,
      y = size / 2;
    return {
      family,
      question: 'What color is the circle at the end?',
      answer: last,
      centres: perFrame(() => [x, y] as [number, number]),
      radius: big,
      colours: perFrame((t) => SYNTH_VIDEO_COLOURS[t < change ? first : last]!),
    };
  }
  const colour = SYNTH_VIDEO_COLOURS[pickColour()]!;
  if (family === 'motion') {
    const dir = SYNTH_DIRECTIONS[Math.floor(rand() * SYNTH_DIRECTIONS.length)]!;
    // a quarter of the side across, from the middle a quarter of the side either way: it starts
    // across both token columns (of 56² frames) and ends filling one
    const r = Math.round(size / 4),
      travel = size / 2 - r;
    const x0 = size / 2,
      y = pick(r + 1, size - 1 - r);
    const dx = dir === 'left' ? -1 : 1;
    return {
      family,
      question: 'Which way does the circle move?',
      answer: dir,
      centres: perFrame((t) => [x0 + (dx * travel * t) / (patches - 1), y] as [number, number]),
      radius: r,
      colours: perFrame(() => colour),
    };
  }
  const most = maxBlinks(frames);
  const blinks = 1 + Math.floor(rand() * most);
  // hidden temporal patches: `blinks` distinct, non-adjacent indices in 1 .. patches - 2
  const slots: number[] = [];
  for (let i = 1; i <= patches - 2; i++) slots.push(i);
  let hidden: number[] = [];
  for (let attempt = 0; attempt < 1000 && hidden.length !== blinks; attempt++) {
    const cand = [...slots]
      .sort(() => rand() - 0.5)
      .slice(0, blinks)
      .sort((a, b) => a - b);
    if (cand.every((v, i) => i === 0 || v - cand[i - 1]! > 1)) hidden = cand;
  }
  if (hidden.length !== blinks) hidden = Array.from({ length: blinks }, (_, i) => 1 + 2 * i);
  // large and in the middle: every visible temporal patch covers all of its tokens, a blink empties them all
  const x = size / 2,
    y = size / 2;
  return {
    family,
    question: 'How many times does the circle blink?',
    answer: String(blinks),
    centres: perFrame((t) => (hidden.includes(t) ? null : ([x, y] as [number, number]))),
    radius: big,
    colours: perFrame(() => colour),
  };
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
        if (dx * dx + dy * dy <= r2) out.set(clip.colours[f]!, 3 * (y * size + x));
      }
    }
  }
  return out;
}

/** Checked options with their defaults. */
export function resolveSynthVideo(options: SynthVideoOptions = {}): Required<SynthVideoOptions> {
  const videos = expectInteger('videos', options.videos ?? 200, 1);
  const seed = expectInteger('seed', options.seed ?? 0, 0);
  const frames = expectInteger('frames', options.frames ?? 14, 6);
  if (frames % 2 !== 0)
    throw invalidParameterError('frames', 'an even number of frames (whole temporal patches of 2)', frames);
  const frameSize = expectInteger('frameSize', options.frameSize ?? 56, 16);
  const fps = expectNumber('fps', options.fps ?? 2, 0.001);
  const families = options.families ?? [...SYNTH_VIDEO_FAMILIES];
  if (!Array.isArray(families) || families.length === 0 || families.some((f) => !SYNTH_VIDEO_FAMILIES.includes(f))) {
    throw invalidParameterError('families', `a non-empty array of ${SYNTH_VIDEO_FAMILIES.join(', ')}`, families);
  }
  return { videos, seed, frames, frameSize, fps, families };
}

/** The clips of the set, in memory (what writeSynthVideo draws): families in turn, one seeded generator. */
export function synthClips(options: SynthVideoOptions = {}): SynthClip[] {
  const o = resolveSynthVideo(options);
  const rand = mulberry32(o.seed);
  return Array.from({ length: o.videos }, (_, i) =>
    makeClip(rand, o.families[i % o.families.length]!, o.frames, o.frameSize),
  );
}

export interface SynthVideoResult {
  dir: string;
  parquet: string;
  samples: VqaSample[];
  clips: SynthClip[];
}

/** Write the set to `dir` (atomically: a temporary folder renamed into place). */
export async function writeSynthVideo(dir: string, options: SynthVideoOptions = {}): Promise<SynthVideoResult> {
  const { frames, frameSize: size, fps } = resolveSynthVideo(options);
  const target = path.resolve(dir);
  const clips = synthClips(options);
  const samples: VqaSample[] = [];
  await withAtomicOutput(target, async (tmp) => {
    mkdirSync(tmp, { recursive: true });
    const table = new VqaTableBuilder({ relativeTo: tmp, extras: { video_path: 'string', family: 'string' } });
    for (const [i, clip] of clips.entries()) {
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
