/**
 * The display contract: the JSON payload of each vendor MIME type. One Jupyter display_data
 * carries the vendor type (rendered by the JupyterLab extension and the HTML report) plus
 * `text/html` and `text/plain` fallbacks (and `image/png` where the image is the point), so viewers
 * without the extension still show something useful.
 *
 * Versioned: a breaking change to a payload gets a new MIME type (`.v2+json`), never a silent edit.
 */

import type { RewardScore } from '../reward/types.js';

export const MIME = {
  sample: 'application/vnd.vqalab.sample.v1+json',
  group: 'application/vnd.vqalab.group.v1+json',
  rewards: 'application/vnd.vqalab.rewards.v1+json',
  metrics: 'application/vnd.vqalab.metrics.v1+json',
  dataset: 'application/vnd.vqalab.dataset.v1+json',
} as const;

export type VendorMime = (typeof MIME)[keyof typeof MIME];

/**
 * Report facts (src/report/facts.ts): the one vendor type that is data, not a view. Its output
 * carries no fallback and shows nothing anywhere: the JupyterLab extension's renderer for it draws
 * nothing and hides its output item, the HTML report leaves it out of the body (the facts go into
 * the header stamp), and viewers without the extension (nbconvert, GitHub) find no type they can
 * show. The output is still saved with the notebook, which is how `vqalab report export` finds it.
 */
export const STAMP_MIME = 'application/vnd.vqalab.stamp.v1+json';

/** A Jupyter MIME bundle: MIME type → data (string for text types, JSON for vendor types). */
export type MimeBundle = Record<string, unknown>;

/** An image embedded in a payload. `src` is a data: URL (PNG or JPEG), so payloads are self-contained. */
export interface ImageRef {
  src: string;
  width: number;
  height: number;
  alt: string;
}

export type { RewardScore };

export interface SamplePayload {
  id: string;
  title?: string;
  question: string;
  images: ImageRef[];
  /** The annotators' answers (10 for VQAv2), as given; the renderer counts duplicates. */
  answers: string[];
  answerType?: string;
  questionType?: string;
  prediction?: string;
  rewards?: RewardScore[];
}

export interface GroupCompletion {
  text: string;
  /** Total reward (sum of the rewards' weighted scores), used for sorting. */
  reward: number | null;
  rewards?: RewardScore[];
  advantage: number;
  /** Completion length in tokens. */
  length: number;
  /** Decoded tokens and their log-probs under the policy, for hover; same length when present. */
  tokens?: string[];
  tokenLogprobs?: number[];
  /** Fraction of this completion's tokens whose ratio was clipped in the update (0 if none). */
  clippedFraction?: number;
  finishReason?: string;
  /** Why this completion was excluded or penalised (reward or generation failures). */
  errors?: string[];
}

export interface GroupPayload {
  step?: number;
  /** Optional heading, e.g. "step 12, group 3". */
  title?: string;
  sample: SamplePayload;
  completions: GroupCompletion[];
}

export interface RewardTableRow {
  sampleId: string;
  question: string;
  completion: string;
  /** Completions of one prompt share a group id (zero-variance groups are found per group). */
  groupId?: string;
  /** Reward name → score (null when it failed). */
  scores: Record<string, number | null>;
  parts?: Record<string, Record<string, number>>;
  /** Spread of the rewards' scores on this row (max − min of the normalised scores); high = disagreement. */
  disagreement: number;
  /** Reward name → why it failed on this row (its score is then null, or a configured fallback). */
  errors?: Record<string, string>;
}

export interface RewardTablePayload {
  title?: string;
  rewards: string[];
  rows: RewardTableRow[];
  /** Statistics per reward; null where undefined (no scores, no group with two scores): JSON has no NaN. */
  stats: {
    mean: Record<string, number | null>;
    std: Record<string, number | null>;
    /** Pearson correlation, `correlation[i][j]` between rewards[i] and rewards[j]; null when undefined. */
    correlation: (number | null)[][];
    /** Per reward: fraction of groups whose scores all tie (they teach GRPO nothing). */
    zeroVarianceGroupFraction: Record<string, number | null>;
  };
}

/** One point of a run's metrics; `step` is always present, other keys as logged (see the trainer's metric names). */
export interface MetricsPoint {
  step: number;
  [metric: string]: number;
}

export interface MetricsRun {
  name: string;
  points: MetricsPoint[];
}

export interface MetricsProgress {
  step: number;
  total: number;
  elapsedSeconds: number;
  /** null while unknown (before the second step). */
  etaSeconds: number | null;
  status: 'running' | 'done' | 'stopped' | 'error';
  /** Shown beside the bar, e.g. the error of a failed run. */
  message?: string;
}

export interface MetricsPayload {
  title?: string;
  runs: MetricsRun[];
  /** Metrics to plot, in panel order; default: all numeric keys except `step`, in a fixed order of known names. */
  keys?: string[];
  /** Initial smoothing weight of the exponential moving average in [0, 1); 0 = raw (default 0). */
  smoothing?: number;
  /** Present while training: drives the progress bar. */
  progress?: MetricsProgress;
  /** The newest group, shown under the plot on a live dashboard. */
  latestGroup?: GroupPayload;
}

export interface DatasetPayload {
  name: string;
  fingerprint: string;
  total: number;
  /** A window of samples (thumbnails) the browser pages through; `offset` is the first one's index. */
  offset: number;
  samples: SamplePayload[];
  /** Counts over the whole dataset (not only the embedded window). */
  answerTypes: Record<string, number>;
  questionTypes: Record<string, number>;
  /** Samples per page in the browser (default 12). */
  pageSize?: number;
}

/** The payload type carried by each vendor MIME type. */
export interface PayloadByMime {
  'application/vnd.vqalab.sample.v1+json': SamplePayload;
  'application/vnd.vqalab.group.v1+json': GroupPayload;
  'application/vnd.vqalab.rewards.v1+json': RewardTablePayload;
  'application/vnd.vqalab.metrics.v1+json': MetricsPayload;
  'application/vnd.vqalab.dataset.v1+json': DatasetPayload;
}
