/**
 * Learning rate per trainer step (constant within a step, across its minibatch updates, as verl
 * steps its scheduler once per training step). Warmup is linear from 0 like transformers'
 * schedulers: step s < warmup gets lr · s / warmup (so step 0 trains at lr 0 when warmup > 0).
 */
import type { LrSchedule } from './config.js';

export interface ScheduleOptions {
  learningRate: number;
  warmupSteps: number;
  totalSteps: number;
  schedule: LrSchedule;
  minLrRatio: number;
}

export function learningRateAt(step: number, o: ScheduleOptions): number {
  if (step < o.warmupSteps) return (o.learningRate * step) / o.warmupSteps;
  if (o.schedule === 'constant') return o.learningRate;
  const span = Math.max(1, o.totalSteps - o.warmupSteps);
  const progress = Math.min(1, (step - o.warmupSteps) / span);
  const cosine = 0.5 * (1 + Math.cos(Math.PI * progress));
  return o.learningRate * (o.minLrRatio + (1 - o.minLrRatio) * cosine);
}
