/**
 * Evaluation summaries in the official VQA evaluator's shape: overall and per answer type, each
 * 100 × the mean per-question accuracy, rounded to 2 decimals.
 */
import type { VqaSample } from '../data/types.js';
import type { EngineModel } from '../engine/types.js';
import type { Policy } from '../rollout/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { answerAfterThinking } from '../eval/thinking.js';
import { isOutOfMemory } from './micro.js';
import { checkPromptLength, completionIds, type PromptBuilder } from './rollout.js';

export interface EvalRow {
  id: string;
  question: string;
  prediction: string;
  answers: string[];
  answerType: string;
  /** Per-question accuracy in [0, 1] (the official metric's min(#matches / 3, 1) averaged over leave-one-out subsets). */
  accuracy: number;
}

export interface EvalSummary {
  split: string;
  /** Overall accuracy in percent, rounded to 2 decimals like the official evaluator. */
  overall: number;
  perAnswerType: Record<string, number>;
  n: number;
  rows: EvalRow[];
  seconds: number;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

export function summarize(split: string, rows: EvalRow[], seconds: number): EvalSummary {
  const byType = new Map<string, number[]>();
  for (const r of rows) {
    const list = byType.get(r.answerType) ?? [];
    list.push(r.accuracy);
    byType.set(r.answerType, list);
  }
  const pct = (xs: number[]) => (xs.length === 0 ? NaN : round2((100 * xs.reduce((a, b) => a + b, 0)) / xs.length));
  const perAnswerType: Record<string, number> = {};
  for (const [t, xs] of [...byType].sort((a, b) => a[0].localeCompare(b[0]))) perAnswerType[t] = pct(xs);
  return { split, overall: pct(rows.map((r) => r.accuracy)), perAnswerType, n: rows.length, rows, seconds };
}

/** Everything a batched evaluation reads. */
export interface EvaluateInputs {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  prompts: PromptBuilder;
  /** Most tokens of a greedy answer. */
  maxTokens: number;
  accuracyOf: (prediction: string, answers: readonly string[]) => number;
  /** Answer with this policy instead of the engine. */
  policy?: Policy;
  /**
   * Questions in flight at once: on the engine one batched run each (default 256 on a GPU: 11.4x the
   * one-at-a-time path at 2B dims on an H100, against 8.5x at 64, bench/results/trainer/h100-2026-12-07c;
   * 64 on the CPU); through a policy, concurrent requests (default 64; its scheduler may limit them further).
   */
  batchSize?: number;
  signal?: AbortSignal;
  /** Told when a chunk ran out of GPU memory and evaluation goes on in smaller chunks. */
  log?: (line: string) => void;
}

/**
 * Greedy answers of `samples`, many at a time, in the samples' order. On the engine a chunk of
 * `batchSize` questions has its prompts built first and then goes out in one turn of the event
 * loop (one batched run, as a rollout round); the next chunk is already queued behind it, so the
 * device goes from one chunk to the next without waiting for this side (prompts, decoding, scoring).
 * A chunk that runs out of GPU memory is answered again in halves (its questions that failed so),
 * and later chunks take the smaller size: `batchSize` is a ceiling, not a promise the card must keep.
 * A policy gets `batchSize` requests at a time, concurrently. A sample that cannot be answered
 * (unreadable image, too long) scores 0 with an empty prediction and its reason in `error`.
 */
export async function evaluateSamples(
  inp: EvaluateInputs,
  samples: readonly VqaSample[],
): Promise<(EvalRow & { error?: string })[]> {
  // A GPU gains from large chunks (its vision tower and prefill run a chunk's images together); the CPU
  // engine is compute-bound at any size and would only hold more activations in host memory.
  const onGpu = !inp.policy && inp.model.device.startsWith('cuda');
  const size = Math.max(1, inp.batchSize ?? (onGpu ? 256 : 64));
  // One greedy answer a question, the same through the engine and a policy.
  const greedy = {
    n: 1,
    temperature: 0,
    maxTokens: inp.maxTokens,
    stopTokenIds: inp.tokenizer.stopTokenIds,
    seed: 0,
    signal: inp.signal,
  };
  const failed = (sample: VqaSample, err: unknown): Answer => {
    if (inp.signal?.aborted) throw err;
    const msg = err instanceof Error ? err.message : String(err);
    const answer: Answer = { text: '', error: msg.includes(sample.id) ? msg : `sample ${sample.id}: ${msg}` };
    if (isOutOfMemory(err)) answer.outOfMemory = true;
    return answer;
  };
  const viaPolicy = async (policy: Policy, sample: VqaSample): Promise<Answer> => {
    try {
      const [c] = await policy.generate(sample, greedy);
      if (!c || c.finishReason === 'error') return { text: '', error: c?.error ?? 'generation failed' };
      return { text: c.text };
    } catch (err) {
      return failed(sample, err);
    }
  };
  // A chunk on the engine: every prompt built (images load concurrently), then every request in the
  // same tick, so they enter one run together.
  const viaEngine = async (chunk: readonly VqaSample[]): Promise<Answer[]> => {
    const prompts = await Promise.all(
      chunk.map(async (sample) => {
        try {
          const { prompt } = await inp.prompts.promptFor(sample);
          checkPromptLength(sample, prompt, inp.maxTokens, inp.model.maxSequenceLength, 'evalMaxTokens');
          return prompt;
        } catch (err) {
          return failed(sample, err);
        }
      }),
    );
    if (inp.signal?.aborted) throw abortReason(inp.signal);
    return Promise.all(
      chunk.map(async (sample, k): Promise<Answer> => {
        const prompt = prompts[k]!;
        if ('text' in prompt) return prompt;
        try {
          const res = await inp.model.sample({ prompt, ...greedy });
          const ids = completionIds(inp.tokenizer, res.tokenIds[0]!, res.finishReason[0]!, inp.maxTokens);
          return { text: inp.tokenizer.decodeCompletion(ids).text };
        } catch (err) {
          return failed(sample, err);
        }
      }),
    );
  };
  // The engine's chunk size after an out-of-memory (it only shrinks). A chunk larger than it goes out
  // in pieces, one after another; the questions of a chunk that ran out of memory are asked again in
  // halves, down to one at a time (whose failure stays its answer).
  let ceiling = size;
  const viaEngineFitting = async (chunk: readonly VqaSample[]): Promise<Answer[]> => {
    if (chunk.length > ceiling) {
      const piece = ceiling; // (a piece that runs out of memory lowers the ceiling for the next chunks, not this split)
      const out: Answer[] = [];
      for (let i = 0; i < chunk.length; i += piece) out.push(...(await viaEngineFitting(chunk.slice(i, i + piece))));
      return out;
    }
    const answers = await viaEngine(chunk);
    const oom = answers.flatMap((a, k) => (a.outOfMemory ? [k] : []));
    if (oom.length === 0 || chunk.length === 1) return answers;
    if (ceiling >= chunk.length) {
      ceiling = Math.max(1, Math.floor(chunk.length / 2));
      inp.log?.(
        `evaluate: out of GPU memory answering ${chunk.length} questions at once; going on in chunks of ${ceiling} (evalBatchSize ${size})`,
      );
    }
    const again = await viaEngineFitting(oom.map((k) => chunk[k]!));
    oom.forEach((k, j) => (answers[k] = again[j]!));
    return answers;
  };
  const answerChunk = (chunk: readonly VqaSample[]): Promise<Answer[]> => {
    const policy = inp.policy;
    return policy ? Promise.all(chunk.map((s) => viaPolicy(policy, s))) : viaEngineFitting(chunk);
  };

  const chunks: VqaSample[][] = [];
  for (let i = 0; i < samples.length; i += size) chunks.push(samples.slice(i, i + size));
  const rows: (EvalRow & { error?: string })[] = [];
  // Engine: two chunks in flight (the running one and the next, queued); a policy: one at a time.
  const depth = inp.policy ? 1 : 2;
  const pending: Promise<Answer[]>[] = [];
  // A rejection (an abort) is taken where the chunk is awaited; until then it must not count as unhandled.
  const launch = (c: VqaSample[]) => {
    const p = answerChunk(c);
    p.catch(() => {});
    pending.push(p);
  };
  let next = 0;
  while (next < chunks.length && pending.length < depth) launch(chunks[next++]!);
  for (let c = 0; c < chunks.length; c++) {
    const answers = await pending.shift()!;
    if (inp.signal?.aborted) throw abortReason(inp.signal);
    if (next < chunks.length) launch(chunks[next++]!);
    chunks[c]!.forEach((sample, k) => {
      const a = answers[k]!;
      rows.push({
        id: sample.id,
        question: sample.question,
        prediction: a.text,
        answers: sample.answers,
        answerType: sample.answerType ?? 'other',
        accuracy: inp.accuracyOf(answerAfterThinking(a.text), sample.answers), // not the reasoning
        ...(a.error ? { error: a.error } : {}),
      });
    });
  }
  return rows;
}

interface Answer {
  text: string;
  error?: string;
  /** The engine ran out of GPU memory for it (asked again in a smaller chunk). */
  outOfMemory?: boolean;
}

const abortReason = (signal: AbortSignal): Error =>
  signal.reason instanceof Error ? signal.reason : new Error('interrupted');
