/** A runtime sample (image files on disk) as the sample payload of the display contract. */
import path from 'node:path';
import type { VqaSample } from '../data/types.js';
import type { RewardScore } from '../reward/types.js';
import { invalidParameterError } from '../util/validate.js';
import { imageRef } from './image.js';
import type { SamplePayload } from './types.js';

export interface SampleExtras {
  prediction?: string;
  rewards?: RewardScore[];
  title?: string;
  /** Longest image side in the payload (default 448). */
  maxSide?: number;
}

function altText(sample: VqaSample, file: string, i: number, n: number): string {
  return `${n > 1 ? `image ${i + 1} of ${n}` : 'image'} ${path.basename(file)} for the question "${sample.question}"`;
}

/** A runtime sample (image on disk) → the sample payload, images embedded as data URLs. */
export async function samplePayload(sample: VqaSample, extras: SampleExtras = {}): Promise<SamplePayload> {
  if (typeof sample !== 'object' || sample === null) throw invalidParameterError('sample', 'VqaSample', sample);
  const files = sample.imagePaths?.length ? sample.imagePaths : [sample.imagePath];
  const images = await Promise.all(
    files.map((f, i) => imageRef(f, { alt: altText(sample, f, i, files.length), maxSide: extras.maxSide })),
  );
  const p: SamplePayload = {
    id: sample.id,
    question: sample.question,
    images,
    answers: sample.answers?.length ? sample.answers : [sample.answer],
  };
  if (sample.answerType !== undefined) p.answerType = sample.answerType;
  if (sample.questionType !== undefined) p.questionType = sample.questionType;
  if (extras.prediction !== undefined) p.prediction = extras.prediction;
  if (extras.rewards !== undefined) p.rewards = extras.rewards;
  if (extras.title !== undefined) p.title = extras.title;
  return p;
}
