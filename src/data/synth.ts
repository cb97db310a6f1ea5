/**
 * The synthetic "shapes" VQA set: the embedded default dataset, no download. Each image holds a
 * few shapes (kinds, colours, sizes, positions from a seeded generator), drawn as SVG and encoded
 * to PNG by sharp with fixed options; each question comes from one of six families (colour of,
 * shape of, how many, is there, left/right of, more/fewer) with 10 simulated annotator answers
 * that vary the way real VQAv2 answers do ("2" / "two", "blue" / "dark blue"), so the official
 * VQA metric applies. The same options and seed give byte-identical files.
 *
 * Output folder: `synth.parquet` (VQA schema + columns `family`, `difficulty`, `shapes`) and
 * `images/synth_000000.png`, ...; image paths in the Parquet are relative to its folder.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { withAtomicOutput } from '../util/fs.js';
import { Progress } from '../util/progress.js';
import { expectInteger, expectNumber, expectOneOf, invalidParameterError } from '../util/validate.js';
import { writeParquetAtomic } from './parquet.js';
import { mulberry32 } from '../util/rng.js';
import { VqaTableBuilder } from './schema.js';
import {
  SYNTH_ANSWER_TYPE,
  SYNTH_COLOR_NAMES,
  SYNTH_COLOR_VARIANTS,
  SYNTH_COLORS,
  SYNTH_FAMILIES,
  SYNTH_MAX_COUNT,
  SYNTH_NUMBER_WORDS,
  SYNTH_SHAPE_PLURALS,
  SYNTH_SHAPE_VARIANTS,
  SYNTH_SHAPES,
  SYNTH_SIDE_VARIANTS,
  SYNTH_TEMPLATES,
  type SynthColor,
  type SynthFamily,
  type SynthShape,
} from './synth-vocab.js';
import type { VqaSample } from './types.js';
import { mostCommonAnswer } from './vqav2.js';

export type SynthDifficulty = 'easy' | 'medium' | 'hard';
export const SYNTH_DIFFICULTIES: readonly SynthDifficulty[] = ['easy', 'medium', 'hard'];

export interface SynthOptions {
  /** Number of images. Default 1000. */
  images?: number;
  /** Questions asked about each image. Default 1. */
  questionsPerImage?: number;
  /** Default 0. */
  seed?: number;
  /**
   * easy: 2–4 large shapes, 4 colours, 3 kinds, annotators agree; medium: 3–6 shapes, all
   * colours and kinds; hard: 5–10 small shapes, noisier annotators. Default "easy".
   */
  difficulty?: SynthDifficulty;
  /** Side of the square images in pixels (default 112, a multiple of 28: no resize in Qwen2-VL). */
  imageSize?: number;
  /** Question families to draw from (default all six). */
  families?: SynthFamily[];
  /**
   * Fewest and most shapes per image, overriding the difficulty's range (easy 2–4, medium 3–6,
   * hard 5–10); e.g. [1, 2] for scenes a tiny model can learn to read in minutes. Default: the
   * difficulty's.
   */
  shapeCount?: [number, number];
  /**
   * Smallest and largest shape radius as fractions of the image side, overriding the difficulty's
   * (easy 0.09–0.13, medium 0.07–0.11, hard 0.05–0.08). Default: the difficulty's.
   */
  shapeSize?: [number, number];
}

interface Level {
  minShapes: number;
  maxShapes: number;
  colors: SynthColor[];
  shapes: SynthShape[];
  /** Shape radius as a fraction of the image side. */
  minR: number;
  maxR: number;
  /** Chance that an annotator gives a variant instead of the canonical answer. */
  noise: number;
}

const LEVELS: Record<SynthDifficulty, Level> = {
  easy: {
    minShapes: 2,
    maxShapes: 4,
    colors: ['red', 'green', 'blue', 'yellow'],
    shapes: ['circle', 'square', 'triangle'],
    minR: 0.09,
    maxR: 0.13,
    noise: 0.03,
  },
  medium: {
    minShapes: 3,
    maxShapes: 6,
    colors: [...SYNTH_COLOR_NAMES],
    shapes: [...SYNTH_SHAPES],
    minR: 0.07,
    maxR: 0.11,
    noise: 0.08,
  },
  hard: {
    minShapes: 5,
    maxShapes: SYNTH_MAX_COUNT,
    colors: [...SYNTH_COLOR_NAMES],
    shapes: [...SYNTH_SHAPES],
    minR: 0.05,
    maxR: 0.08,
    noise: 0.15,
  },
};

/** One shape of a scene, in pixels. */
export interface SynthShapeSpec {
  kind: SynthShape;
  color: SynthColor;
  x: number;
  y: number;
  r: number;
  /** Rotation in degrees (squares, triangles, stars, diamonds). */
  rot: number;
}

export interface SynthScene {
  size: number;
  background: string;
  shapes: SynthShapeSpec[];
}

export interface SynthQuestion {
  family: SynthFamily;
  question: string;
  questionType: string;
  answer: string;
  answers: string[];
  answerType: 'yes/no' | 'number' | 'other';
}

type Rand = () => number;
const pick = <T>(rand: Rand, a: readonly T[]): T => a[Math.floor(rand() * a.length)]!;
const intIn = (rand: Rand, lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));

/** A scene: shapes that do not overlap, with distinct centres left to right. */
export function makeScene(rand: Rand, level: Level, size: number): SynthScene {
  const n = intIn(rand, level.minShapes, level.maxShapes);
  const shapes: SynthShapeSpec[] = [];
  const grey = 236 + Math.floor(rand() * 16);
  const background = `rgb(${grey},${grey},${grey})`;
  for (let attempt = 0; shapes.length < n && attempt < 2000; attempt++) {
    const r = Math.round(size * (level.minR + rand() * (level.maxR - level.minR)));
    const x = Math.round(r + 1 + rand() * (size - 2 * r - 2));
    const y = Math.round(r + 1 + rand() * (size - 2 * r - 2));
    const clear = shapes.every((s) => Math.hypot(s.x - x, s.y - y) > s.r + r + 2 && Math.abs(s.x - x) >= 2);
    if (!clear) continue;
    shapes.push({
      kind: pick(rand, level.shapes),
      color: pick(rand, level.colors),
      x,
      y,
      r,
      rot: Math.floor(rand() * 4) * 15,
    });
  }
  return { size, background, shapes };
}

function polygon(points: [number, number][]): string {
  return points.map(([a, b]) => `${a.toFixed(2)},${b.toFixed(2)}`).join(' ');
}

/** The scene as SVG (what sharp rasterises). */
export function sceneSvg(scene: SynthScene): string {
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${scene.size}" height="${scene.size}" viewBox="0 0 ${scene.size} ${scene.size}">`,
    `<rect width="100%" height="100%" fill="${scene.background}"/>`,
  ];
  for (const s of scene.shapes) {
    const fill = SYNTH_COLORS[s.color];
    const t = `transform="rotate(${s.rot} ${s.x} ${s.y})"`;
    if (s.kind === 'circle') parts.push(`<circle cx="${s.x}" cy="${s.y}" r="${s.r}" fill="${fill}"/>`);
    else if (s.kind === 'square') {
      const h = s.r * 0.82;
      parts.push(`<rect x="${s.x - h}" y="${s.y - h}" width="${2 * h}" height="${2 * h}" fill="${fill}" ${t}/>`);
    } else if (s.kind === 'triangle') {
      const pts: [number, number][] = [0, 1, 2].map((k) => [
        s.x + s.r * Math.sin((2 * Math.PI * k) / 3),
        s.y - s.r * Math.cos((2 * Math.PI * k) / 3),
      ]);
      parts.push(`<polygon points="${polygon(pts)}" fill="${fill}" ${t}/>`);
    } else if (s.kind === 'star') {
      const pts: [number, number][] = [];
      for (let k = 0; k < 10; k++) {
        const rr = k % 2 === 0 ? s.r : s.r * 0.45;
        pts.push([s.x + rr * Math.sin((Math.PI * k) / 5), s.y - rr * Math.cos((Math.PI * k) / 5)]);
      }
      parts.push(`<polygon points="${polygon(pts)}" fill="${fill}" ${t}/>`);
    } else {
      const pts: [number, number][] = [
        [s.x, s.y - s.r],
        [s.x + s.r * 0.7, s.y],
        [s.x, s.y + s.r],
        [s.x - s.r * 0.7, s.y],
      ];
      parts.push(`<polygon points="${polygon(pts)}" fill="${fill}"/>`);
    }
  }
  parts.push('</svg>');
  return parts.join('');
}

/** PNG bytes of a scene; encoder options are fixed so the bytes depend on the scene only. */
export async function renderScene(scene: SynthScene): Promise<Buffer> {
  return sharp(Buffer.from(sceneSvg(scene)), { density: 72 })
    .removeAlpha()
    .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false, effort: 7 })
    .toBuffer();
}

function fill(template: string, slots: Record<string, string>): string {
  return template.replace(/\{([a-z0-9]+)\}/g, (_, k: string) => {
    const v = slots[k];
    if (v === undefined) throw new Error(`synth: template "${template}" needs {${k}}`);
    return v;
  });
}

function questionType(template: string): string {
  return template
    .slice(0, template.indexOf('{') >= 0 ? template.indexOf('{') : template.length)
    .replace(/\?$/, '')
    .trim()
    .toLowerCase();
}

/** Ten annotator answers around a canonical one, with the family's kind of variation. */
function annotate(rand: Rand, family: SynthFamily, canonical: string, level: Level): string[] {
  const out: string[] = [];
  for (let k = 0; k < 10; k++) {
    let a = canonical;
    if (family === 'count') {
      const n = Number(canonical);
      if (rand() < level.noise) a = String(Math.max(0, Math.min(SYNTH_MAX_COUNT, n + (rand() < 0.5 ? -1 : 1))));
      if (rand() < 0.2) a = SYNTH_NUMBER_WORDS[Number(a)]!; // "2" and "two" both appear in real lists
    } else if (rand() < level.noise) {
      if (family === 'color') a = pick(rand, SYNTH_COLOR_VARIANTS[canonical as SynthColor]);
      else if (family === 'shape') a = pick(rand, SYNTH_SHAPE_VARIANTS[canonical as SynthShape]);
      else if (family === 'position') a = pick(rand, SYNTH_SIDE_VARIANTS[canonical as 'left' | 'right']);
      else a = canonical === 'yes' ? 'no' : 'yes';
    }
    out.push(a);
  }
  return out;
}

/** Ask one question of a family about a scene; undefined when the scene cannot support it. */
function ask(
  rand: Rand,
  family: SynthFamily,
  scene: SynthScene,
  level: Level,
): { template: string; slots: Record<string, string>; answer: string } | undefined {
  const S = scene.shapes;
  const countKind = (k: SynthShape) => S.filter((s) => s.kind === k).length;
  const countColor = (c: SynthColor) => S.filter((s) => s.color === c).length;
  const t = SYNTH_TEMPLATES[family];
  switch (family) {
    case 'color': {
      const unique = level.shapes.filter((k) => countKind(k) === 1);
      if (unique.length === 0) return undefined;
      const kind = pick(rand, unique);
      return { template: pick(rand, t), slots: { shape: kind }, answer: S.find((s) => s.kind === kind)!.color };
    }
    case 'shape': {
      const unique = level.colors.filter((c) => countColor(c) === 1);
      if (unique.length === 0) return undefined;
      const color = pick(rand, unique);
      return { template: pick(rand, t), slots: { color }, answer: S.find((s) => s.color === color)!.kind };
    }
    case 'count': {
      const template = pick(rand, t);
      const kind = pick(rand, level.shapes),
        color = pick(rand, level.colors);
      const n = template.includes('{shapes}')
        ? countKind(kind)
        : template.includes('{color}')
          ? countColor(color)
          : S.length;
      return { template, slots: { shapes: SYNTH_SHAPE_PLURALS[kind], color }, answer: String(n) };
    }
    case 'exist': {
      const template = pick(rand, t);
      if (template.includes('{color}')) {
        // Half the time ask about a shape that is there.
        const s = rand() < 0.5 ? pick(rand, S) : { kind: pick(rand, level.shapes), color: pick(rand, level.colors) };
        const yes = S.some((x) => x.kind === s.kind && x.color === s.color);
        return { template, slots: { color: s.color, shape: s.kind }, answer: yes ? 'yes' : 'no' };
      }
      const kind = rand() < 0.5 ? pick(rand, S).kind : pick(rand, level.shapes);
      return { template, slots: { shapes: SYNTH_SHAPE_PLURALS[kind] }, answer: countKind(kind) > 0 ? 'yes' : 'no' };
    }
    case 'position': {
      const unique = S.filter((s) => S.filter((x) => x.kind === s.kind && x.color === s.color).length === 1);
      if (unique.length < 2) return undefined;
      const a = pick(rand, unique);
      const others = unique.filter((b) => b !== a && Math.abs(b.x - a.x) >= scene.size * 0.08);
      if (others.length === 0) return undefined;
      const b = pick(rand, others);
      return {
        template: pick(rand, t),
        slots: { color: a.color, shape: a.kind, color2: b.color, shape2: b.kind },
        answer: a.x < b.x ? 'left' : 'right',
      };
    }
    case 'compare': {
      const template = pick(rand, t);
      const more = template.includes('more');
      let na: number, nb: number, slots: Record<string, string>;
      if (template.includes('{shapes}')) {
        const [ka, kb] = pickTwo(rand, level.shapes);
        na = countKind(ka);
        nb = countKind(kb);
        slots = { shapes: SYNTH_SHAPE_PLURALS[ka], shapes2: SYNTH_SHAPE_PLURALS[kb] };
      } else {
        const [ca, cb] = pickTwo(rand, level.colors);
        na = countColor(ca);
        nb = countColor(cb);
        slots = { color: ca, color2: cb };
      }
      if (na === nb) return undefined; // equal counts make "more"/"fewer" ambiguous to people
      return { template, slots, answer: (more ? na > nb : na < nb) ? 'yes' : 'no' };
    }
  }
}

function pickTwo<T>(rand: Rand, a: readonly T[]): [T, T] {
  const i = Math.floor(rand() * a.length);
  let j = Math.floor(rand() * (a.length - 1));
  if (j >= i) j++;
  return [a[i]!, a[j]!];
}

/** Questions about a scene (drawn from `families`, retrying families the scene cannot support). */
export function makeQuestions(
  rand: Rand,
  scene: SynthScene,
  level: Level,
  families: readonly SynthFamily[],
  count: number,
): SynthQuestion[] {
  const out: SynthQuestion[] = [];
  const seen = new Set<string>();
  for (let attempt = 0; out.length < count && attempt < 50; attempt++) {
    const family = pick(rand, families);
    const q = ask(rand, family, scene, level);
    if (!q) continue;
    const question = fill(q.template, q.slots);
    if (seen.has(question)) continue;
    seen.add(question);
    const answers = annotate(rand, family, q.answer, level);
    out.push({
      family,
      question,
      questionType: questionType(q.template),
      answer: mostCommonAnswer(answers),
      answers,
      answerType: SYNTH_ANSWER_TYPE[family],
    });
  }
  return out;
}

export interface SynthResult {
  dir: string;
  parquet: string;
  images: number;
  samples: number;
  seconds: number;
}

function resolveOptions(o: SynthOptions) {
  const families = o.families ?? [...SYNTH_FAMILIES];
  if (!Array.isArray(families) || families.length === 0)
    throw invalidParameterError('families', 'a non-empty list of families', families);
  families.forEach((f, i) => expectOneOf(`families[${i}]`, f, SYNTH_FAMILIES));
  const imageSize = expectInteger('imageSize', o.imageSize ?? 112, 28, 4096);
  let shapeCount: [number, number] | undefined;
  if (o.shapeCount !== undefined) {
    if (!Array.isArray(o.shapeCount) || o.shapeCount.length !== 2)
      throw invalidParameterError('shapeCount', 'a [min, max] pair of integers', o.shapeCount);
    const lo = expectInteger('shapeCount[0]', o.shapeCount[0], 1, SYNTH_MAX_COUNT);
    const hi = expectInteger('shapeCount[1]', o.shapeCount[1], lo, SYNTH_MAX_COUNT);
    shapeCount = [lo, hi];
  }
  let shapeSize: [number, number] | undefined;
  if (o.shapeSize !== undefined) {
    if (!Array.isArray(o.shapeSize) || o.shapeSize.length !== 2)
      throw invalidParameterError('shapeSize', 'a [min, max] pair of radius fractions', o.shapeSize);
    const lo = expectNumber('shapeSize[0]', o.shapeSize[0], 0.02, 0.45);
    const hi = expectNumber('shapeSize[1]', o.shapeSize[1], lo, 0.45);
    shapeSize = [lo, hi];
  }
  return {
    images: expectInteger('images', o.images ?? 1000, 1),
    questionsPerImage: expectInteger('questionsPerImage', o.questionsPerImage ?? 1, 1, 20),
    seed: expectInteger('seed', o.seed ?? 0, 0, 2 ** 32 - 1),
    difficulty: expectOneOf('difficulty', o.difficulty ?? 'easy', SYNTH_DIFFICULTIES),
    imageSize,
    families,
    shapeCount,
    shapeSize,
  };
}

/**
 * Generate samples and their images in memory (no files): `samples[i].imagePath` is the
 * relative file name the images would be written under. For tests and notebooks.
 */
export async function* synthSamples(
  options: SynthOptions = {},
): AsyncGenerator<{ sample: VqaSample; png: Buffer | undefined; scene: SynthScene }> {
  const o = resolveOptions(options);
  const rand = mulberry32(o.seed);
  const base = LEVELS[o.difficulty];
  const level = {
    ...base,
    ...(o.shapeCount ? { minShapes: o.shapeCount[0], maxShapes: o.shapeCount[1] } : {}),
    ...(o.shapeSize ? { minR: o.shapeSize[0], maxR: o.shapeSize[1] } : {}),
  };
  let k = 0;
  for (let i = 0; i < o.images; i++) {
    const scene = makeScene(rand, level, o.imageSize);
    const qs = makeQuestions(rand, scene, level, o.families, o.questionsPerImage);
    const file = `images/synth_${String(i).padStart(6, '0')}.png`;
    let png: Buffer | undefined = await renderScene(scene);
    for (const q of qs) {
      const sample: VqaSample = {
        id: `synth-${o.seed}-${k++}`,
        imagePath: file,
        question: q.question,
        answer: q.answer,
        answers: q.answers,
        answerType: q.answerType,
        questionType: q.questionType,
        multipleChoiceAnswer: q.answer,
        imageId: i,
        extra: { family: q.family, difficulty: o.difficulty, shapes: JSON.stringify(scene.shapes) },
      };
      yield { sample, png, scene };
      png = undefined; // one image, several questions: write it once
    }
  }
}

/**
 * Write a synthetic dataset to `dir` (created; must not exist unless it holds a previous synth
 * output, which is replaced). The folder appears complete or not at all.
 */
export async function writeSynth(
  dir: string,
  options: SynthOptions & { quiet?: boolean; progressStream?: NodeJS.WriteStream; signal?: AbortSignal } = {},
): Promise<SynthResult> {
  const t0 = performance.now();
  const o = resolveOptions(options);
  const target = path.resolve(dir);
  if (existsSync(target)) {
    const entries = readdirSync(target);
    if (entries.length > 0 && !entries.includes('synth.parquet')) {
      throw new Error(`${dir}: exists and is not a synth output folder (no synth.parquet); choose another --out`);
    }
  }
  mkdirSync(path.dirname(target), { recursive: true });
  const progress = new Progress({
    label: 'synth',
    unit: 'images',
    total: o.images,
    quiet: options.quiet,
    stream: options.progressStream,
  });
  let images = 0,
    samples = 0;
  await withAtomicOutput(target, async (tmp) => {
    mkdirSync(path.join(tmp, 'images'), { recursive: true });
    const builder = new VqaTableBuilder({
      vqaColumns: true,
      extras: { family: 'string', difficulty: 'string', shapes: 'string' },
    });
    await writeParquetAtomic(
      path.join(tmp, 'synth.parquet'),
      async (write) => {
        for await (const { sample, png } of synthSamples(o)) {
          if (options.signal?.aborted)
            throw options.signal.reason instanceof Error ? options.signal.reason : new Error('aborted');
          if (png) {
            writeFileSync(path.join(tmp, sample.imagePath), png);
            images++;
            progress.tick();
          }
          builder.add(sample); // relative paths: the folder can move
          samples++;
          if (builder.length >= 65_536) await write(builder.build());
        }
        await write(builder.build());
      },
      {
        metadata: {
          'vqalab.source': 'synth',
          'vqalab.synth.options': JSON.stringify({
            images: o.images,
            questionsPerImage: o.questionsPerImage,
            seed: o.seed,
            difficulty: o.difficulty,
            imageSize: o.imageSize,
            families: o.families,
            ...(o.shapeCount ? { shapeCount: o.shapeCount } : {}),
            ...(o.shapeSize ? { shapeSize: o.shapeSize } : {}),
          }),
        },
      },
    );
  });
  progress.done();
  return {
    dir: target,
    parquet: path.join(target, 'synth.parquet'),
    images,
    samples,
    seconds: (performance.now() - t0) / 1000,
  };
}
