/**
 * A small task for trainer tests on the real native engine and the embedded tiny Qwen2-VL
 * (assets/tiny-qwen2-vl): "What color is the circle?" over 112×112 images filled with the colour
 * (plus seeded noise), processed by the real Qwen2-VL image processor (16 image tokens). The
 * default tokenizer knows every word. A trainer step on it takes a fraction of a second on CPU.
 */
import type { VqaSample } from '../../../src/data/types.js';
import type { EngineModel, ImageInput } from '../../../src/engine/types.js';
import { loadModel } from '../../../src/engine/index.js';
import { Rng } from '../../../src/util/rng.js';
import { DEFAULT_MODEL_DIR } from '../../../src/model/default.js';
import type { RewardFn } from '../../../src/reward/types.js';
import { VlmTokenizer } from '../../../src/text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../../../src/vision/qwen2vl.js';

export const TINY_COLORS: Record<string, [number, number, number]> = {
  red: [214, 39, 40],
  green: [44, 160, 44],
  blue: [31, 95, 214],
  yellow: [242, 210, 27],
};

let tokenizer: VlmTokenizer | undefined;

/** The embedded model's tokenizer (loaded once). */
export function tinyTokenizer(): VlmTokenizer {
  return (tokenizer ??= VlmTokenizer.load(DEFAULT_MODEL_DIR));
}

/** The embedded tiny Qwen2-VL on the CPU engine (2 threads: the tests share the machine). */
export function tinyModel(options: { loadOptimizer?: boolean } = {}): Promise<EngineModel> {
  return loadModel(DEFAULT_MODEL_DIR, { threads: 2, ...options });
}

/** The trainer's `loadModel`: a resumed policy with its optimizer state, a frozen reference without. */
export const loadTiny = (dir: string, info?: { role: 'reference' | 'resume' }): Promise<EngineModel> =>
  loadModel(dir, { threads: 2, loadOptimizer: info?.role !== 'reference' });

export function tinySamples(n: number, offset = 0): VqaSample[] {
  const names = Object.keys(TINY_COLORS);
  return Array.from({ length: n }, (_, i) => {
    const color = names[(i + offset) % names.length]!;
    return {
      id: `tiny-${i + offset}`,
      imagePath: `memory:${color}-${i + offset}`,
      question: 'What color is the circle?',
      answer: color,
      answers: Array.from({ length: 10 }, () => color),
      answerType: 'other',
      questionType: 'what color is the',
      extra: { color },
    };
  });
}

const processor = new Qwen2VLImageProcessor();

/** The sample's image: its colour with ±20 of seeded noise per channel, through the real processor. */
export async function tinyImages(sample: VqaSample): Promise<ImageInput[]> {
  const rgb = TINY_COLORS[(sample.extra as { color: string }).color]!;
  const rng = new Rng(Number(sample.id.split('-')[1]));
  const data = new Uint8Array(112 * 112 * 3);
  for (let p = 0; p < 112 * 112; p++)
    for (let c = 0; c < 3; c++) data[p * 3 + c] = Math.max(0, Math.min(255, rgb[c]! + rng.int(41) - 20));
  const img = await processor.process({ data, width: 112, height: 112 });
  return [{ pixels: img.pixels, gridThw: img.gridThw }];
}

/** Exact match (with an `exact` part). */
export const tinyExact: RewardFn = (sample, completion) => {
  const exact = completion.trim() === sample.answer ? 1 : 0;
  return { score: exact, parts: { exact } };
};

/** Exact match minus a small length term, so sampled completions rarely tie. */
export const tinyShaped: RewardFn = (sample, completion) => {
  const exact = completion.trim() === sample.answer ? 1 : 0;
  const brevity = -0.01 * completion.length;
  return { score: exact + brevity, parts: { exact, brevity } };
};
