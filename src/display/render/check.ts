/**
 * Checks that a payload has the shape of the display contract (types.ts) before anything renders
 * it. A bundle from an older or buggy producer must give a readable error naming the field
 * ("Expected finite number for group.completions[2].advantage but received "x" of type string",
 * the project's usual message shape), never a
 * blank output or a half-drawn widget. Used by the Node bundle builders (they throw) and by the
 * front-end renderers (they draw the error in the cell).
 */
import { describeValue } from '../../util/validate.js';
import type {
  DatasetPayload,
  GroupCompletion,
  GroupPayload,
  ImageRef,
  MetricsPayload,
  MetricsPoint,
  MetricsProgress,
  MetricsRun,
  RewardScore,
  RewardTablePayload,
  RewardTableRow,
  SamplePayload,
} from '../types.js';

export class PayloadError extends TypeError {
  constructor(
    readonly path: string,
    readonly expected: string,
    readonly actual: unknown,
  ) {
    super(`Expected ${expected} for ${path} but received ${describeValue(actual)}`);
    this.name = 'PayloadError';
  }
}

type Obj = Record<string, unknown>;

function obj(v: unknown, path: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PayloadError(path, 'object', v);
  return v as Obj;
}
function str(v: unknown, path: string): string {
  if (typeof v !== 'string') throw new PayloadError(path, 'string', v);
  return v;
}
function optStr(v: unknown, path: string): string | undefined {
  return v === undefined ? undefined : str(v, path);
}
function num(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new PayloadError(path, 'finite number', v);
  return v;
}
function numOrNull(v: unknown, path: string): number | null {
  if (v === null) return null;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new PayloadError(path, 'finite number or null', v);
  return v;
}
function optNum(v: unknown, path: string): number | undefined {
  return v === undefined ? undefined : num(v, path);
}
function nonNegInt(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new PayloadError(path, 'non-negative integer', v);
  return v;
}
function arr<T>(v: unknown, path: string, each: (x: unknown, p: string) => T): T[] {
  if (!Array.isArray(v)) throw new PayloadError(path, 'array', v);
  return v.map((x, i) => each(x, `${path}[${i}]`));
}
function numOrNullRecord(v: unknown, path: string): Record<string, number | null> {
  const o = obj(v, path);
  for (const [k, x] of Object.entries(o)) numOrNull(x, `${path}.${k}`);
  return o as Record<string, number | null>;
}
function strRecord(v: unknown, path: string): Record<string, string> {
  const o = obj(v, path);
  for (const [k, x] of Object.entries(o)) str(x, `${path}.${k}`);
  return o as Record<string, string>;
}
function numRecord(v: unknown, path: string): Record<string, number> {
  const o = obj(v, path);
  for (const [k, x] of Object.entries(o)) num(x, `${path}.${k}`);
  return o as Record<string, number>;
}

/** Images must be inline data URLs of a raster type: a payload can never point the page elsewhere. */
const DATA_URL = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}$/;

export function checkImage(v: unknown, path: string): ImageRef {
  const o = obj(v, path);
  const src = str(o.src, `${path}.src`);
  if (!DATA_URL.test(src))
    throw new PayloadError(`${path}.src`, 'a base64 data: URL of a PNG, JPEG, GIF or WebP image', src);
  nonNegInt(o.width, `${path}.width`);
  nonNegInt(o.height, `${path}.height`);
  str(o.alt, `${path}.alt`);
  return o as unknown as ImageRef;
}

export function checkRewardScore(v: unknown, path: string): RewardScore {
  const o = obj(v, path);
  str(o.name, `${path}.name`);
  numOrNull(o.score, `${path}.score`);
  if (o.parts !== undefined) numRecord(o.parts, `${path}.parts`);
  optNum(o.weight, `${path}.weight`);
  optStr(o.error, `${path}.error`);
  return o as unknown as RewardScore;
}

export function checkSample(v: unknown, path = 'sample'): SamplePayload {
  const o = obj(v, path);
  str(o.id, `${path}.id`);
  optStr(o.title, `${path}.title`);
  str(o.question, `${path}.question`);
  arr(o.images, `${path}.images`, checkImage);
  arr(o.answers, `${path}.answers`, str);
  optStr(o.answerType, `${path}.answerType`);
  optStr(o.questionType, `${path}.questionType`);
  optStr(o.prediction, `${path}.prediction`);
  if (o.rewards !== undefined) arr(o.rewards, `${path}.rewards`, checkRewardScore);
  return o as unknown as SamplePayload;
}

function checkCompletion(v: unknown, path: string): GroupCompletion {
  const o = obj(v, path);
  str(o.text, `${path}.text`);
  numOrNull(o.reward, `${path}.reward`);
  if (o.rewards !== undefined) arr(o.rewards, `${path}.rewards`, checkRewardScore);
  num(o.advantage, `${path}.advantage`);
  nonNegInt(o.length, `${path}.length`);
  if (o.tokens !== undefined || o.tokenLogprobs !== undefined) {
    const tokens = arr(o.tokens, `${path}.tokens`, str);
    const lps = arr(o.tokenLogprobs, `${path}.tokenLogprobs`, num);
    if (tokens.length !== lps.length) {
      throw new PayloadError(`${path}.tokenLogprobs`, `an array of length ${tokens.length} (one per token)`, lps);
    }
  }
  if (o.clippedFraction !== undefined) {
    const c = num(o.clippedFraction, `${path}.clippedFraction`);
    if (c < 0 || c > 1) throw new PayloadError(`${path}.clippedFraction`, 'number between 0 and 1', c);
  }
  optStr(o.finishReason, `${path}.finishReason`);
  if (o.errors !== undefined) arr(o.errors, `${path}.errors`, str);
  return o as unknown as GroupCompletion;
}

export function checkGroup(v: unknown, path = 'group'): GroupPayload {
  const o = obj(v, path);
  if (o.step !== undefined) nonNegInt(o.step, `${path}.step`);
  optStr(o.title, `${path}.title`);
  checkSample(o.sample, `${path}.sample`);
  arr(o.completions, `${path}.completions`, checkCompletion);
  return o as unknown as GroupPayload;
}

function checkRow(v: unknown, path: string, rewards: string[]): RewardTableRow {
  const o = obj(v, path);
  str(o.sampleId, `${path}.sampleId`);
  str(o.question, `${path}.question`);
  str(o.completion, `${path}.completion`);
  optStr(o.groupId, `${path}.groupId`);
  const scores = obj(o.scores, `${path}.scores`);
  for (const r of rewards) {
    if (!(r in scores))
      throw new PayloadError(`${path}.scores.${r}`, 'finite number or null (every reward needs a score)', undefined);
    numOrNull(scores[r], `${path}.scores.${r}`);
  }
  if (o.parts !== undefined) {
    const parts = obj(o.parts, `${path}.parts`);
    for (const [k, p] of Object.entries(parts)) numRecord(p, `${path}.parts.${k}`);
  }
  num(o.disagreement, `${path}.disagreement`);
  if (o.errors !== undefined) strRecord(o.errors, `${path}.errors`);
  return o as unknown as RewardTableRow;
}

export function checkRewardTable(v: unknown, path = 'rewards'): RewardTablePayload {
  const o = obj(v, path);
  optStr(o.title, `${path}.title`);
  const rewards = arr(o.rewards, `${path}.rewards`, str);
  arr(o.rows, `${path}.rows`, (r, p) => checkRow(r, p, rewards));
  const stats = obj(o.stats, `${path}.stats`);
  numOrNullRecord(stats.mean, `${path}.stats.mean`);
  numOrNullRecord(stats.std, `${path}.stats.std`);
  const corr = arr(stats.correlation, `${path}.stats.correlation`, (row, p) => arr(row, p, numOrNull));
  if (corr.length !== rewards.length || corr.some((r) => r.length !== rewards.length)) {
    throw new PayloadError(
      `${path}.stats.correlation`,
      `a ${rewards.length}×${rewards.length} matrix (one row and column per reward)`,
      stats.correlation,
    );
  }
  numOrNullRecord(stats.zeroVarianceGroupFraction, `${path}.stats.zeroVarianceGroupFraction`);
  return o as unknown as RewardTablePayload;
}

function checkPoint(v: unknown, path: string): MetricsPoint {
  const o = obj(v, path);
  num(o.step, `${path}.step`);
  for (const [k, x] of Object.entries(o)) num(x, `${path}.${k}`);
  return o as unknown as MetricsPoint;
}

function checkProgress(v: unknown, path: string): MetricsProgress {
  const o = obj(v, path);
  nonNegInt(o.step, `${path}.step`);
  nonNegInt(o.total, `${path}.total`);
  num(o.elapsedSeconds, `${path}.elapsedSeconds`);
  numOrNull(o.etaSeconds, `${path}.etaSeconds`);
  if (!['running', 'done', 'stopped', 'error'].includes(o.status as string)) {
    throw new PayloadError(`${path}.status`, 'one of "running", "done", "stopped", "error"', o.status);
  }
  optStr(o.message, `${path}.message`);
  return o as unknown as MetricsProgress;
}

export function checkMetrics(v: unknown, path = 'metrics'): MetricsPayload {
  const o = obj(v, path);
  optStr(o.title, `${path}.title`);
  arr(o.runs, `${path}.runs`, (r, p): MetricsRun => {
    const run = obj(r, p);
    str(run.name, `${p}.name`);
    arr(run.points, `${p}.points`, checkPoint);
    return run as unknown as MetricsRun;
  });
  if (o.keys !== undefined) arr(o.keys, `${path}.keys`, str);
  if (o.smoothing !== undefined) {
    const s = num(o.smoothing, `${path}.smoothing`);
    if (s < 0 || s >= 1) throw new PayloadError(`${path}.smoothing`, 'number in [0, 1)', s);
  }
  if (o.progress !== undefined) checkProgress(o.progress, `${path}.progress`);
  if (o.latestGroup !== undefined) checkGroup(o.latestGroup, `${path}.latestGroup`);
  return o as unknown as MetricsPayload;
}

export function checkDataset(v: unknown, path = 'dataset'): DatasetPayload {
  const o = obj(v, path);
  str(o.name, `${path}.name`);
  str(o.fingerprint, `${path}.fingerprint`);
  nonNegInt(o.total, `${path}.total`);
  nonNegInt(o.offset, `${path}.offset`);
  arr(o.samples, `${path}.samples`, checkSample);
  numRecord(o.answerTypes, `${path}.answerTypes`);
  numRecord(o.questionTypes, `${path}.questionTypes`);
  if (o.pageSize !== undefined) {
    const n = nonNegInt(o.pageSize, `${path}.pageSize`);
    if (n === 0) throw new PayloadError(`${path}.pageSize`, 'positive integer', n);
  }
  return o as unknown as DatasetPayload;
}
