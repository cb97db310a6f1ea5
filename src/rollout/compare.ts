/**
 * Baseline comparison: several policies (local checkpoints, OpenAI-compatible servers) on the
 * same questions, side by side — the official VQA accuracy overall and per answer type (the
 * official evaluator, src/eval), latency p50/p99, tokens, and cost from a price table.
 *
 * Used by `vqalab eval-policy` and from a notebook:
 *
 *     const cmp = await evaluatePolicies([await LocalPolicy.load(dir), new OpenAIPolicy({...})], samples, { nRunners: 4 });
 *     display.showComparison(cmp);   // src/display/comparison.ts: summary table, running-accuracy plot, per-question table
 */
import type { VqaSample } from '../data/types.js';
import { evaluateVqa, type VqaAnnotationsFile } from '../eval/vqa-eval.js';
import { normalizeAnswer, OFFICIAL_ANSWER_COUNT, scoreAnswer } from '../eval/vqa-metric.js';
import type { PythonDialect } from '../eval/python.js';
import { extractAnswer } from '../reward/extract.js';
import { describeValue, expectInteger, expectNumber } from '../util/validate.js';
import { rollout } from './runner.js';
import type { Policy } from './types.js';

/** USD per million tokens. */
export interface Price {
  input: number;
  output: number;
}

/** Prices by policy name or model name (the part of "openai:<model>@..." before @). */
export type PriceTable = Record<string, Price>;

export interface EvaluatePoliciesOptions {
  /** First N samples only. */
  limit?: number;
  /** Samples in flight at once per policy (default 4). */
  nRunners?: number;
  /** Default 32. */
  maxTokens?: number;
  /** Default 0 (greedy), as VQA evaluations usually are. */
  temperature?: number;
  /** Default 0. */
  seed?: number;
  prices?: PriceTable;
  /** The official evaluator's dialect (default python2, the published file). */
  dialect?: PythonDialect;
  /** How to find the answer in a completion (default: the last <answer> tag, else the whole text). */
  extract?: (completion: string) => string;
  /** Dataset name for titles. */
  dataset?: string;
  signal?: AbortSignal;
  /** After each question of each policy. */
  onProgress?: (policy: string, done: number, total: number) => void;
}

export interface QuestionResult {
  id: string;
  question: string;
  answerType: string;
  prediction: string;
  /** Official per-question accuracy in [0, 1] (0 for a failed request). */
  accuracy: number;
  /** 1 when the normalised prediction equals the normalised reference answer. */
  match: number;
  latencyMs: number | null;
  completionTokens: number | null;
  error?: string;
}

export interface PolicyReport {
  name: string;
  questions: number;
  /** Questions whose request failed (scored 0). */
  errors: number;
  /** Official VQA accuracy in percent (2 decimals), failed requests counted as wrong. */
  overall: number;
  perAnswerType: Record<string, number>;
  /** Percent of questions whose normalised prediction equals the reference answer (useful when samples have one answer). */
  exactMatch: number;
  latencyMs: { p50: number | null; p99: number | null; mean: number | null; max: number | null };
  tokens: { prompt: number; completion: number; total: number; known: boolean };
  /** USD, when a price is known for this policy. */
  cost: number | null;
  seconds: number;
  rows: QuestionResult[];
  /** The first failure messages (at most 10). */
  errorMessages: string[];
}

export interface PolicyComparison {
  dataset: string;
  questions: number;
  answerTypes: string[];
  policies: PolicyReport[];
  /** Notes (single-answer samples, warnings of the official evaluator). */
  notes: string[];
  createdAt: string;
}

/** Nearest-rank percentile of unsorted values (null when empty). */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

/** The price of a policy: by its full name, else by its model name. */
export function priceFor(name: string, prices: PriceTable | undefined): Price | undefined {
  if (!prices) return undefined;
  if (prices[name]) return prices[name];
  const m = /^openai:(.+?)(@|$)/.exec(name);
  return m ? prices[m[1]!] : undefined;
}

/** Evaluate each policy on the same samples (one after the other, each with `nRunners` in flight). */
export async function evaluatePolicies(
  policies: readonly Policy[],
  samples: readonly VqaSample[],
  options: EvaluatePoliciesOptions = {},
): Promise<PolicyComparison> {
  if (!Array.isArray(policies) || policies.length === 0)
    throw new TypeError(`Expected a non-empty array of policies for policies but received ${describeValue(policies)}`);
  for (const [i, p] of policies.entries())
    if (!p || typeof p.generate !== 'function')
      throw new TypeError(`Expected a Policy for policies[${i}] but received ${describeValue(p)}`);
  if (!Array.isArray(samples) || samples.length === 0)
    throw new TypeError(`Expected a non-empty array of samples for samples but received ${describeValue(samples)}`);
  const names = policies.map((p) => p.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new Error(`two policies are named ${JSON.stringify(dup)}; give them distinct names`);
  const limit = options.limit === undefined ? samples.length : expectInteger('limit', options.limit, 1);
  const nRunners = options.nRunners === undefined ? 4 : expectInteger('nRunners', options.nRunners, 1);
  const maxTokens = options.maxTokens === undefined ? 32 : expectInteger('maxTokens', options.maxTokens, 1);
  const temperature = options.temperature === undefined ? 0 : expectNumber('temperature', options.temperature, 0);
  const seed = options.seed === undefined ? 0 : expectInteger('seed', options.seed, 0);
  const extract = options.extract ?? extractAnswer;
  const dialect = options.dialect ?? 'python2';
  const chosen = samples.slice(0, limit);
  const notes: string[] = [];
  // Fewer than 10 reference answers: normalised exact match against any (docs/vqa-metric.md).
  const referencesOf = (s: VqaSample): string[] => (s.answers?.length ? s.answers : [s.answer ?? '']);
  const few = chosen.map((s) => referencesOf(s).length < OFFICIAL_ANSWER_COUNT);
  const fewCount = few.filter(Boolean).length;
  if (fewCount > 0) {
    notes.push(
      `${fewCount} of ${chosen.length} samples have fewer than ${OFFICIAL_ANSWER_COUNT} reference answers: scored by normalised exact match against any reference (docs/vqa-metric.md)`,
    );
  }
  const annotations: VqaAnnotationsFile = {
    annotations: chosen.map((s) => ({
      question_id: s.id,
      question_type: s.questionType ?? 'unknown',
      answer_type: s.answerType ?? 'other',
      image_id: s.imageId ?? 0,
      answers: ((s.answers?.length ? s.answers : [s.answer]) as string[]).map((answer: string, i: number) => ({
        answer,
        answer_id: i + 1,
      })),
    })) as VqaAnnotationsFile['annotations'],
  };
  const answerTypes = [...new Set(chosen.map((s) => s.answerType ?? 'other'))].sort();
  const reports: PolicyReport[] = [];
  for (const policy of policies) {
    if (options.signal?.aborted)
      throw options.signal.reason instanceof Error ? options.signal.reason : new Error('cancelled');
    const t0 = performance.now();
    let done = 0;
    const results = await rollout(
      policy,
      chosen,
      { n: 1, temperature, maxTokens, seed },
      {
        nRunners,
        signal: options.signal,
        onResult: () => options.onProgress?.(policy.name, ++done, chosen.length),
      },
    );
    if (options.signal?.aborted)
      throw options.signal.reason instanceof Error ? options.signal.reason : new Error('cancelled');
    const seconds = (performance.now() - t0) / 1000;
    const rows: QuestionResult[] = [];
    const seenRequests = new Set<string>();
    let prompt = 0,
      completion = 0,
      known = true;
    for (const r of results) {
      const c = r.completions[0]!;
      const failed = c.finishReason === 'error';
      const prediction = failed ? '' : extract(c.text);
      if (c.usage) {
        if (!c.requestId || !seenRequests.has(c.requestId)) prompt += c.usage.promptTokens;
        if (c.requestId) seenRequests.add(c.requestId);
        completion += c.usage.completionTokens;
      } else if (!failed) known = false;
      const reference = r.sample.answer ?? r.sample.answers?.[0] ?? '';
      const row: QuestionResult = {
        id: r.sample.id,
        question: r.sample.question,
        answerType: r.sample.answerType ?? 'other',
        prediction,
        accuracy: 0,
        match:
          !failed && normalizeAnswer(prediction.trim(), dialect) === normalizeAnswer(reference.trim(), dialect) ? 1 : 0,
        latencyMs: c.latencyMs ?? null,
        completionTokens: c.usage?.completionTokens ?? null,
      };
      if (failed) row.error = c.error ?? r.error ?? 'failed';
      rows.push(row);
    }
    const official = evaluateVqa(
      annotations,
      rows.map((r) => ({ question_id: r.id, answer: r.prediction })),
      { dialect },
    );
    official.accuracies.forEach((a, i) => {
      rows[i]!.accuracy = few[i] ? scoreAnswer(rows[i]!.prediction, referencesOf(chosen[i]!), { dialect }).accuracy : a;
    });
    for (const w of official.warnings) if (!notes.includes(w)) notes.push(w);
    let overall = official.overall.value;
    let perAnswerType = Object.fromEntries([...official.perAnswerType].map(([t, a]) => [t, a.value]));
    if (fewCount > 0) {
      // Some rows were rescored: summarise as the official evaluator does (100 × mean, 2 decimals).
      const pct = (xs: number[]) => Math.round((10000 * xs.reduce((a, b) => a + b, 0)) / xs.length) / 100;
      overall = pct(rows.map((r) => r.accuracy));
      perAnswerType = Object.fromEntries(
        answerTypes.map((t) => [t, pct(rows.filter((r) => r.answerType === t).map((r) => r.accuracy))]),
      );
    }
    const lat = rows.filter((r) => r.error === undefined && r.latencyMs !== null).map((r) => r.latencyMs!);
    const price = priceFor(policy.name, options.prices);
    const errors = rows.filter((r) => r.error !== undefined);
    reports.push({
      name: policy.name,
      questions: rows.length,
      errors: errors.length,
      overall,
      perAnswerType,
      exactMatch: Math.round((10000 * rows.reduce((a, r) => a + r.match, 0)) / rows.length) / 100,
      latencyMs: {
        p50: percentile(lat, 50),
        p99: percentile(lat, 99),
        mean: lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : null,
        max: lat.length ? Math.max(...lat) : null,
      },
      tokens: { prompt, completion, total: prompt + completion, known },
      cost: price && known ? (prompt * price.input + completion * price.output) / 1e6 : null,
      seconds,
      rows,
      errorMessages: [...new Set(errors.map((r) => r.error!))].slice(0, 10),
    });
  }
  return {
    dataset: options.dataset ?? 'samples',
    questions: chosen.length,
    answerTypes,
    policies: reports,
    notes,
    createdAt: new Date().toISOString(),
  };
}

/** The comparison as JSON (rows included), for --json and files. */
export function comparisonToJson(c: PolicyComparison, { rows = true } = {}): Record<string, unknown> {
  return { ...c, policies: c.policies.map((p) => (rows ? p : { ...p, rows: undefined })) };
}
