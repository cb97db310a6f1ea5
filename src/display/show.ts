/**
 * The display helpers a notebook calls: `show(sample | group | rewardTable)`, `plot(metrics)`,
 * `browse(dataset)`. Each builds one MIME bundle, sends it through the display sink when a kernel
 * installed one, and returns the bundle (a plain object), so the same code works from a script.
 */
import { samplesFingerprint } from '../data/fingerprint.js';
import type { VqaSample } from '../data/types.js';
import { invalidParameterError } from '../util/validate.js';
import { bundleFor, sampleBundle } from './bundle.js';
import { emit, type DisplayOptions, type DisplaySink } from './output.js';
import type { RolloutGroup } from '../grpo/rollout.js';
import { samplePayload, type SampleExtras } from './sample.js';
import { groupPayload } from './training.js';

// Kept for src/gateway/view.ts, which imports it from here; it lives in ./sample.ts.
import {
  MIME,
  type DatasetPayload,
  type GroupPayload,
  type MetricsPayload,
  type MetricsPoint,
  type MetricsRun,
  type MimeBundle,
  type RewardTablePayload,
  type SamplePayload,
} from './types.js';

export interface ShowOptions extends DisplayOptions {
  /** Send here instead of the installed sink (tests, custom front ends). */
  sink?: DisplaySink;
}

type Showable =
  | VqaSample
  | SamplePayload
  | GroupPayload
  | RolloutGroup
  | RewardTablePayload
  | MetricsPayload
  | DatasetPayload;

/** For a trainer's rollout group (`trainer.step()`'s `groups[i]`): token texts for log-probs on hover. */
export interface GroupExtras {
  decodeToken?: (id: number) => string;
}

/** A group as the trainer returns it (prompt ids, typed token arrays), not yet a group payload. */
function isRolloutGroup(x: object): x is RolloutGroup {
  return has(x, 'completions', 'sample', 'promptIds', 'prompt');
}

function has(x: object, ...keys: string[]): boolean {
  return keys.every((k) => k in x);
}

/**
 * Show a sample (runtime sample or payload), a group, a reward table (or metrics or a dataset
 * payload). Returns the bundle; in a notebook it has also been displayed.
 */
export async function show(
  value: Showable,
  options: ShowOptions & SampleExtras & GroupExtras = {},
): Promise<MimeBundle> {
  if (typeof value !== 'object' || value === null) {
    throw invalidParameterError('value', 'a sample, a group, a reward table, metrics or a dataset', value);
  }
  const { sink, displayId, update } = options;
  const send = (b: MimeBundle) => emit(b, { displayId, update }, sink ?? undefined);
  if (isRolloutGroup(value)) {
    return send(
      bundleFor(
        MIME.group,
        await groupPayload(value, { maxSide: options.maxSide ?? 256, decodeToken: options.decodeToken }),
      ),
    );
  }
  if (has(value, 'completions', 'sample')) return send(bundleFor(MIME.group, value as GroupPayload));
  if (has(value, 'rows', 'rewards', 'stats')) return send(bundleFor(MIME.rewards, value as RewardTablePayload));
  if (has(value, 'runs')) return send(bundleFor(MIME.metrics, value as MetricsPayload));
  if (has(value, 'samples', 'fingerprint')) return send(bundleFor(MIME.dataset, value as DatasetPayload));
  if (has(value, 'imagePath', 'question'))
    return send(await sampleBundle(await samplePayload(value as VqaSample, options)));
  if (has(value, 'images', 'question')) {
    const p = { ...(value as SamplePayload) };
    if (options.prediction !== undefined) p.prediction = options.prediction;
    if (options.rewards !== undefined) p.rewards = options.rewards;
    return send(await sampleBundle(p));
  }
  throw invalidParameterError('value', 'a sample, a group, a reward table, metrics or a dataset', value);
}

export interface PlotOptions extends ShowOptions {
  title?: string;
  keys?: string[];
  smoothing?: number;
  /** Run name when given bare points (default "run"). */
  name?: string;
}

/** Normalise what `plot` accepts into runs. */
export function toRuns(
  metrics: MetricsPayload | MetricsRun | MetricsRun[] | MetricsPoint[],
  name = 'run',
): MetricsRun[] {
  if (Array.isArray(metrics)) {
    if (metrics.length === 0) return [{ name, points: [] }];
    return 'points' in (metrics[0] as object)
      ? (metrics as MetricsRun[])
      : [{ name, points: metrics as MetricsPoint[] }];
  }
  if (typeof metrics === 'object' && metrics !== null) {
    if ('runs' in metrics) return metrics.runs;
    if ('points' in metrics) return [metrics];
  }
  throw invalidParameterError('metrics', 'metrics payload, run, runs or points', metrics);
}

/** Plot metrics: a payload, one run, several runs (overlaid) or bare points. */
export function plot(
  metrics: MetricsPayload | MetricsRun | MetricsRun[] | MetricsPoint[],
  options: PlotOptions = {},
): MimeBundle {
  const base: MetricsPayload =
    !Array.isArray(metrics) && 'runs' in metrics ? { ...metrics } : { runs: toRuns(metrics, options.name) };
  if (options.title !== undefined) base.title = options.title;
  if (options.keys !== undefined) base.keys = options.keys;
  if (options.smoothing !== undefined) base.smoothing = options.smoothing;
  return emit(bundleFor(MIME.metrics, base), { displayId: options.displayId, update: options.update }, options.sink);
}

export interface BrowseOptions extends ShowOptions {
  name?: string;
  fingerprint?: string;
  /** First sample to embed (default 0). */
  offset?: number;
  /** How many samples to embed as thumbnails (default 96). */
  limit?: number;
  pageSize?: number;
  /** Longest image side of the embedded thumbnails (default 256). */
  maxSide?: number;
}

function countBy(samples: readonly VqaSample[], key: 'answerType' | 'questionType'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    const k = s[key];
    if (k !== undefined) out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** Browse a dataset: samples (thumbnails embedded for a window of them) with type counts over all. */
export async function browse(
  data: DatasetPayload | readonly VqaSample[] | { name: string; samples: readonly VqaSample[]; fingerprint?: string },
  options: BrowseOptions = {},
): Promise<MimeBundle> {
  const send = (p: DatasetPayload) =>
    emit(bundleFor(MIME.dataset, p), { displayId: options.displayId, update: options.update }, options.sink);
  if (!Array.isArray(data) && typeof data === 'object' && data !== null && 'total' in data && 'offset' in data) {
    return send(data as DatasetPayload);
  }
  const samples: readonly VqaSample[] | undefined = Array.isArray(data)
    ? data
    : (data as { samples?: VqaSample[] })?.samples;
  if (!Array.isArray(samples))
    throw invalidParameterError('data', 'dataset payload, array of samples or { name, samples }', data);
  const named = Array.isArray(data) ? {} : (data as { name?: string; fingerprint?: string });
  const offset = options.offset ?? 0,
    limit = options.limit ?? 96;
  const window = samples.slice(offset, offset + limit);
  const payloads = await Promise.all(window.map((s) => samplePayload(s, { maxSide: options.maxSide ?? 256 })));
  const p: DatasetPayload = {
    name: options.name ?? named.name ?? 'dataset',
    // The short form (16 hex digits) of the fingerprint a dataset and the report give these samples.
    fingerprint:
      options.fingerprint ?? named.fingerprint ?? samplesFingerprint(samples).slice(0, 'sha256:'.length + 16),
    total: samples.length,
    offset,
    samples: payloads,
    answerTypes: countBy(samples, 'answerType'),
    questionTypes: countBy(samples, 'questionType'),
  };
  if (options.pageSize !== undefined) p.pageSize = options.pageSize;
  return send(p);
}
