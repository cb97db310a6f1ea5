/**
 * Per-step metrics: kept in memory (for cells and widgets) and appended as JSON lines to a file
 * (one object per step) so a crashed run still leaves its history. On resume the file is
 * rewritten atomically from the checkpoint's history, so it never holds steps the checkpoint
 * does not know.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomicSync } from '../util/fs.js';

export interface StepMetrics {
  /** Step index (0-based; the step that produced these numbers). */
  step: number;
  kind: 'grpo' | 'sft' | 'eval';
  /** Wall-clock time at the end of the step (ISO 8601). */
  time: string;
  /**
   * Mean and std of the (total) reward over all scored completions sampled in the step, every
   * rollout round included (with dynamic sampling, also the groups it dropped).
   */
  rewardMean: number;
  rewardStd: number;
  /** Mean of each named reward part. */
  rewardParts: Record<string, number>;
  /** Mean per-question VQA accuracy (the trainer's `vqaAccuracy`, default `scoreAnswer`) of all sampled completions. */
  accuracy: number;
  /** Mean over tokens of the policy loss, as aggregated, averaged over the step's updates. */
  loss: number;
  /** Token-mean KL to the reference (NaN without one). */
  kl: number;
  clipFractionLow: number;
  clipFractionHigh: number;
  clipFractionDual: number;
  /** Token-mean entropy of the policy on its completions. */
  entropy: number;
  /** Global gradient norm before clipping (mean over the step's updates). */
  gradNorm: number;
  learningRate: number;
  /** Mean and max completion length in tokens; fraction cut at maxCompletionLength. */
  completionLength: number;
  completionLengthMax: number;
  truncatedFraction: number;
  /** Fraction of sampled groups whose rewards all tied (no learning signal). */
  zeroVarianceFraction: number;
  /** Groups trained on, and rollout rounds it took (dynamic sampling). */
  groups: number;
  samplingRounds: number;
  /** Completions whose reward failed (excluded or given the fallback), and updates skipped for a non-finite loss or gradient. */
  rewardFailures: number;
  skippedUpdates: number;
  /** Completion tokens generated per second of rollout, and all tokens (prompt + completion) processed per second of the step. */
  tokensPerSecond: number;
  stepSeconds: number;
  rolloutSeconds: number;
  rewardSeconds: number;
  /** Seconds of the update (forward, backward, optimizer) after the rollout. */
  trainSeconds: number;
  /** Resident memory of this process, MiB. */
  memoryMiB: number;
  /** Samples drawn this step that were skipped (unreadable image, prompt too long, generation or rewards failed for the whole group); their ids are in `extra.skipped`. */
  badSamples?: number;
  /** Prompt + completion tokens forwarded by the updates per second of update (trainSeconds). */
  trainTokensPerSecond?: number;
  /** Peak GPU memory of the engine's pool during the step, MiB (NaN on CPU or when the engine does not report it). */
  gpuPeakMiB?: number;
  /** Anything else a step wants to report (evaluation per answer type, warnings). */
  extra?: Record<string, unknown>;
}

export class MetricsLog {
  private readonly rows: StepMetrics[] = [];

  /** `file`: JSONL path to append to (created with its directory); absent: memory only. */
  constructor(
    readonly file?: string,
    history: readonly StepMetrics[] = [],
  ) {
    this.rows.push(...history);
    if (file) {
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileAtomicSync(file, this.rows.map(toLine).join(''));
    }
  }

  get history(): readonly StepMetrics[] {
    return this.rows;
  }

  get last(): StepMetrics | undefined {
    return this.rows[this.rows.length - 1];
  }

  push(m: StepMetrics): void {
    this.rows.push(m);
    if (this.file) appendFileSync(this.file, toLine(m));
  }
}

/** JSON has no NaN/Infinity: they are written as null. */
function toLine(m: StepMetrics): string {
  return JSON.stringify(m, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n';
}

/** Inverse of the JSON mapping for checkpoints: null numbers come back as NaN. */
export function metricsFromJson(rows: unknown[]): StepMetrics[] {
  return rows.map((r) => JSON.parse(JSON.stringify(r), (_k, v: unknown) => (v === null ? NaN : v)) as StepMetrics);
}

export function residentMiB(): number {
  return Math.round((process.memoryUsage().rss / (1024 * 1024)) * 10) / 10;
}

export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  if (xs.length === 0) return { mean: NaN, std: NaN };
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.reduce((a, x) => a + (x - mean) * (x - mean), 0) / xs.length;
  return { mean, std: Math.sqrt(v) };
}
