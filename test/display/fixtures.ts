/**
 * Fixed payloads for the renderer tests, the browser tests and the end-to-end notebook. Images are
 * drawn with sharp (a small synthetic scene), so every payload is self-contained and deterministic.
 */
import sharp from 'sharp';
import type {
  DatasetPayload,
  GroupPayload,
  ImageRef,
  MetricsPayload,
  MetricsPoint,
  RewardTablePayload,
  SamplePayload,
} from '../../src/display/types.js';

/** A 48×32 PNG: a red square and a blue circle on grey (small on purpose: zoom must stay crisp). */
export async function sceneImage(alt = 'a red square left of a blue circle'): Promise<ImageRef> {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="48" height="32"><rect width="48" height="32" fill="#ddd"/>` +
    `<rect x="4" y="8" width="14" height="14" fill="#d22"/><circle cx="34" cy="16" r="8" fill="#23c"/></svg>`;
  const png = await sharp(Buffer.from(svg)).png().toBuffer();
  return { src: `data:image/png;base64,${png.toString('base64')}`, width: 48, height: 32, alt };
}

/** The hostile strings every renderer must escape. */
export const EVIL = `<script>alert("x")</script><img src=x onerror=alert(1)> & 'quotes'`;

export function sample(image: ImageRef, over: Partial<SamplePayload> = {}): SamplePayload {
  return {
    id: '42001',
    question: 'What color is the square?',
    images: [image],
    answers: ['red', 'red', 'Red', 'red', 'dark red', 'red', 'red', 'maroon', 'red', 'crimson'],
    answerType: 'other',
    questionType: 'what color is the',
    prediction: 'red',
    rewards: [
      { name: 'vqaAccuracy', score: 1, parts: { matches: 7 } },
      { name: 'format', score: 0.5, parts: { tagged: 1, brevity: -0.5 }, weight: 0.2 },
      { name: 'judge', score: null, error: 'timeout after 30 s' },
    ],
    ...over,
  };
}

export function group(image: ImageRef, step = 12): GroupPayload {
  const texts = ['red', 'It is red.', 'blue', 'maroon', 'I think the square is red because', 'green'];
  const rewards = [1, 0.9, 0, 0.3, null, 0];
  const mean = (1 + 0.9 + 0 + 0.3 + 0) / 5;
  return {
    step,
    sample: sample(image, { prediction: undefined, rewards: undefined }),
    completions: texts.map((text, i) => {
      const tokens = text.split(/(?=\s)/);
      return {
        text,
        reward: rewards[i]!,
        rewards: [
          { name: 'vqaAccuracy', score: rewards[i]! },
          { name: 'format', score: i % 2 ? 1 : 0, parts: { tagged: i % 2 } },
        ],
        advantage: rewards[i] === null ? 0 : Number((rewards[i]! - mean).toFixed(3)),
        length: tokens.length,
        tokens,
        tokenLogprobs: tokens.map((_, j) => -0.1 * (j + 1) - 0.05 * i),
        clippedFraction: i === 3 ? 0.25 : 0,
        finishReason: i === 4 ? 'length' : 'stop',
      };
    }),
  };
}

export function rewardTable(): RewardTablePayload {
  const rows = [
    {
      sampleId: 's1',
      question: 'What color is the square?',
      completion: 'red',
      groupId: 'g1',
      scores: { accuracy: 1, format: 1, judge: 1 },
      disagreement: 0,
    },
    {
      sampleId: 's1',
      question: 'What color is the square?',
      completion: 'The square is red, obviously.',
      groupId: 'g1',
      scores: { accuracy: 0, format: 0, judge: 1 },
      disagreement: 1,
    },
    {
      sampleId: 's2',
      question: 'How many circles?',
      completion: '2',
      groupId: 'g2',
      scores: { accuracy: 1, format: 1, judge: 0.5 },
      disagreement: 0.5,
    },
    {
      sampleId: 's2',
      question: 'How many circles?',
      completion: EVIL,
      groupId: 'g2',
      scores: { accuracy: 0, format: 0, judge: null },
      disagreement: 0,
    },
    {
      sampleId: 's3',
      question: 'Is it round?',
      completion: 'yes',
      groupId: 'g3',
      scores: { accuracy: 0.6, format: 1, judge: 0.8 },
      disagreement: 0.4,
    },
  ];
  return {
    title: 'Three rewards',
    rewards: ['accuracy', 'format', 'judge'],
    rows: rows.map((r) => ({ ...r, parts: { format: { tagged: r.scores.format ?? 0 } } })),
    stats: {
      mean: { accuracy: 0.52, format: 0.6, judge: 0.825 },
      std: { accuracy: 0.43, format: 0.49, judge: 0.19 },
      correlation: [
        [1, 0.84, -0.12],
        [0.84, 1, null],
        [-0.12, null, 1],
      ],
      zeroVarianceGroupFraction: { accuracy: 0, format: 0, judge: 1 / 3 },
    },
  };
}

/** `n` steps of plausible GRPO metrics for a run; `seed` shifts the curves so runs differ. */
export function points(n: number, seed = 0): MetricsPoint[] {
  return Array.from({ length: n }, (_, step) => ({
    step,
    reward: 0.2 + 0.6 * (1 - Math.exp(-step / 15)) + 0.05 * Math.sin(step + seed),
    kl: 0.001 * step * (1 + seed * 0.2),
    entropy: 1.5 - 0.01 * step,
    'clip_ratio/high_mean': 0.02 * Math.abs(Math.sin(step / 3 + seed)),
    completion_length: 12 + Math.round(4 * Math.cos(step / 5)),
    grad_norm: 1 + 0.5 * Math.sin(step / 2 + seed),
  }));
}

export function metrics(image: ImageRef): MetricsPayload {
  return {
    title: 'GRPO on shapes',
    runs: [
      { name: 'baseline', points: points(40, 1) },
      { name: 'lr=1e-5', points: points(30, 0) },
    ],
    smoothing: 0.3,
    progress: { step: 30, total: 50, elapsedSeconds: 95, etaSeconds: 63, status: 'running' },
    latestGroup: group(image, 30),
  };
}

export function dataset(image: ImageRef, n = 30): DatasetPayload {
  const types = ['yes/no', 'number', 'other'];
  const qtypes = ['is the', 'how many', 'what color is the'];
  const samples = Array.from({ length: n }, (_, i) =>
    sample(image, {
      id: String(1000 + i),
      question: `${qtypes[i % 3]} question ${i}?`,
      answers: Array.from({ length: 10 }, (_, j) => (j < 7 ? `answer${i % 5}` : `other${j}`)),
      answerType: types[i % 3],
      questionType: qtypes[i % 3],
      prediction: undefined,
      rewards: undefined,
    }),
  );
  return {
    name: 'shapes-val',
    fingerprint: 'sha256:0123456789abcdef',
    total: 1000,
    offset: 0,
    samples,
    answerTypes: { 'yes/no': 340, number: 330, other: 330 },
    questionTypes: { 'is the': 340, 'how many': 330, 'what color is the': 330 },
    pageSize: 8,
  };
}
