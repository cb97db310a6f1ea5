/** Shared by the export tests: synthetic samples on disk and comparisons. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { synthSamples } from '../../src/data/synth.js';
import type { VqaSample } from '../../src/data/types.js';

/** `count` synthetic questions (one per image) with their PNGs written under dir. */
export async function synthOnDisk(dir: string, count: number, seed = 3): Promise<VqaSample[]> {
  mkdirSync(path.join(dir, 'images'), { recursive: true });
  const out: VqaSample[] = [];
  for await (const { sample, png } of synthSamples({ images: count, questionsPerImage: 1, seed })) {
    const file = path.join(dir, sample.imagePath);
    if (png) writeFileSync(file, png);
    out.push({ ...sample, imagePath: file });
  }
  return out;
}

/** Largest |a - b| and largest |a|. */
export function maxDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let diff = 0,
    scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return { diff, scale };
}

/** log p(target_t) from [rows, V] logits at rows `from`..: the log-probs the engine reports. */
export function logprobsAt(logits: Float32Array, V: number, from: number, targets: Int32Array): Float32Array {
  const out = new Float32Array(targets.length);
  for (let t = 0; t < targets.length; t++) {
    const row = logits.subarray((from + t) * V, (from + t + 1) * V);
    let mx = -Infinity;
    for (const x of row) mx = Math.max(mx, x);
    let s = 0;
    for (const x of row) s += Math.exp(x - mx);
    out[t] = row[targets[t]!]! - mx - Math.log(s);
  }
  return out;
}
