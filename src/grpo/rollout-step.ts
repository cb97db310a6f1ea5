/**
 * The rollout of one GRPO step: rounds of prompts drawn from the data cursor, seeds drawn from the
 * trainer's RNG, rolled out by rolloutRound (rollout.ts); with dynamic sampling, groups whose
 * rewards all tie are dropped and more prompts are drawn, up to maxSamplingRounds. Samples that
 * cannot be rolled out are skipped and logged; more than maxBadSampleFraction of those fails the step.
 */
import type { VqaSample } from '../data/types.js';
import type { Rng } from '../util/rng.js';
import type { DataCursor } from './cursor.js';
import { AbortError, BadSamplesError } from './options.js';
import { rolloutRound, type RolloutGroup, type RolloutInputs, type SkippedSample } from './rollout.js';

export interface StepRollout {
  /** The groups trained on. */
  kept: RolloutGroup[];
  /** Every group rolled out (kept or dropped by dynamic sampling). */
  sampled: RolloutGroup[];
  skipped: SkippedSample[];
  rounds: number;
  genTokens: number;
  genSeconds: number;
  rewardSeconds: number;
}

/** Roll out step `step`; moves `cursor` and `rng` (the caller restores them when this throws). */
export async function rolloutStep(
  inputs: RolloutInputs,
  draw: { train: readonly VqaSample[]; cursor: DataCursor; rng: Rng },
  step: number,
  signal: AbortSignal | undefined,
): Promise<StepRollout> {
  const c = inputs.config;
  const out: StepRollout = {
    kept: [],
    sampled: [],
    skipped: [],
    rounds: 0,
    genTokens: 0,
    genSeconds: 0,
    rewardSeconds: 0,
  };
  let drawn = 0;
  const maxRounds = c.dynamicSampling ? c.maxSamplingRounds : 1;
  while (out.kept.length < c.promptsPerStep && out.rounds < maxRounds) {
    out.rounds++;
    const samples = draw.cursor.take(c.promptsPerStep - out.kept.length).map((i) => draw.train[i]!);
    // Seeds drawn in sample order before any request goes out: a batched round samples exactly
    // what one prompt at a time would.
    const seeds = samples.map(() => draw.rng.seed());
    drawn += samples.length;
    const r = await rolloutRound(inputs, samples, seeds, step, signal);
    out.genTokens += r.genTokens;
    out.genSeconds += r.genSeconds;
    out.rewardSeconds += r.rewardSeconds;
    out.skipped.push(...r.skipped);
    for (const g of r.groups) {
      out.sampled.push(g);
      if (!c.dynamicSampling || !g.zeroVariance) out.kept.push(g);
    }
  }
  if (signal?.aborted) throw new AbortError();
  const skipped = out.skipped;
  for (const s of skipped) inputs.log(`step ${step}: skipped ${s.message}`);
  if (skipped.length > c.maxBadSampleFraction * drawn) {
    throw new BadSamplesError(
      `step ${step}: ${skipped.length} of ${drawn} samples failed, more than maxBadSampleFraction (${c.maxBadSampleFraction}) allows; ` +
        `fix or remove them (or raise maxBadSampleFraction):\n${skipped.map((s) => `  ${s.message}`).join('\n')}`,
      skipped,
    );
  }
  return out;
}
