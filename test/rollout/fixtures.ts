/**
 * A small on-disk VQA set for rollout and serve tests: real PNG files (coloured shapes drawn by
 * sharp), a JSON Lines file in the seed's schema with VQAv2-style answers and answer types.
 * No side effects on import.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import type { VqaSample } from '../../src/data/types.js';

export const COLORS: Record<string, [number, number, number]> = {
  red: [220, 30, 30],
  green: [30, 160, 40],
  blue: [30, 60, 220],
  yellow: [240, 210, 20],
};

export interface Fixture {
  dir: string;
  /** The JSON Lines file. */
  file: string;
  samples: VqaSample[];
  /** PNG bytes of the first image. */
  png: Buffer;
  dataUrl: string;
  cleanup(): void;
}

/** A PNG of a circle of `color` on white, `side` pixels square. */
export async function circlePng(color: [number, number, number], side = 112): Promise<Buffer> {
  const [r, g, b] = color;
  const svg =
    `<svg width="${side}" height="${side}" xmlns="http://www.w3.org/2000/svg"><rect width="${side}" height="${side}" fill="white"/>` +
    `<circle cx="${side / 2}" cy="${side / 2}" r="${side / 4}" fill="rgb(${r},${g},${b})"/></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** Two questions per colour ("what color ...", answer type other; "is there a circle?", yes/no). */
export async function makeFixture(): Promise<Fixture> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-rollout-'));
  const rows: Record<string, unknown>[] = [];
  const samples: VqaSample[] = [];
  let first: Buffer | undefined;
  let i = 0;
  for (const [name, rgb] of Object.entries(COLORS)) {
    const png = await circlePng(rgb);
    first ??= png;
    const file = `circle-${name}.png`;
    writeFileSync(path.join(dir, file), png);
    for (const [suffix, question, answer, type] of [
      ['c', 'what color is the circle?', name, 'other'],
      ['e', 'is there a circle?', 'yes', 'yes/no'],
    ] as const) {
      const id = `${i}${suffix}`;
      const answers = Array.from({ length: 10 }, (_x, k) => (k < 9 ? answer : `${answer}ish`));
      rows.push({
        id,
        image_path: file,
        question,
        answer,
        answers,
        answer_type: type,
        question_type: question.split(' ').slice(0, 3).join(' '),
      });
      samples.push({
        id,
        imagePath: path.join(dir, file),
        question,
        answer,
        answers,
        answerType: type,
        questionType: question.split(' ').slice(0, 3).join(' '),
      });
    }
    i++;
  }
  const file = path.join(dir, 'samples.jsonl');
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return {
    dir,
    file,
    samples,
    png: first!,
    dataUrl: `data:image/png;base64,${first!.toString('base64')}`,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
