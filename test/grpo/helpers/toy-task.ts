/**
 * A toy VQA task for trainer tests: "What color is the circle?" over images whose three channels
 * carry the colour, with the 10-answer lists VQA uses. Real tokenizer (built by src/text), real
 * prompts; only the model is the toy engine.
 */
import type { VqaSample } from '../../../src/data/types.js';
import type { ImageInput } from '../../../src/engine/types.js';
import { buildTokenizerFiles } from '../../../src/text/build.js';
import { VlmTokenizer } from '../../../src/text/tokenizer.js';
import type { RewardFn } from '../../../src/reward/types.js';

export const COLORS: Record<string, [number, number, number]> = {
  red: [1, -1, -1],
  green: [-1, 1, -1],
  blue: [-1, -1, 1],
  yellow: [1, 1, -1],
};

export function toyTokenizer(): VlmTokenizer {
  const f = buildTokenizerFiles({ words: ['What', 'color', 'is', 'the', 'circle', '?', ...Object.keys(COLORS)] });
  return VlmTokenizer.fromObjects({
    tokenizerJson: f['tokenizer.json'],
    tokenizerConfig: f['tokenizer_config.json'],
    generationConfig: f['generation_config.json'],
  });
}

export function toySamples(n: number, offset = 0): VqaSample[] {
  const names = Object.keys(COLORS);
  return Array.from({ length: n }, (_, i) => {
    const color = names[(i + offset) % names.length]!;
    return {
      id: `toy-${i + offset}`,
      imagePath: `/nonexistent/toy-${i + offset}.png`,
      question: 'What color is the circle?',
      answer: color,
      answers: Array.from({ length: 10 }, () => color),
      answerType: 'other',
      questionType: 'what color is the',
      extra: { color },
    };
  });
}

export async function toyImages(sample: VqaSample): Promise<ImageInput[]> {
  const rgb = COLORS[(sample.extra as { color: string }).color]!;
  const pixels = new Float32Array(4 * 1176);
  for (let p = 0; p < 4; p++)
    for (let c = 0; c < 3; c++) pixels.fill(rgb[c]!, p * 1176 + c * 392, p * 1176 + (c + 1) * 392);
  return [{ pixels, gridThw: [1, 2, 2] }];
}

export const exactMatch: RewardFn = (sample, completion) => ({
  score: completion.trim() === sample.answer ? 1 : 0,
  parts: { exact: completion.trim() === sample.answer ? 1 : 0 },
});

/** Exact match plus a small bonus for short answers: rarely ties, so every group teaches something. */
export const shapedReward: RewardFn = (sample, completion) => {
  const exact = completion.trim() === sample.answer ? 1 : 0;
  const brevity = -0.01 * completion.length;
  return { score: exact + brevity, parts: { exact, brevity } };
};
