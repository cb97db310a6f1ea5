/**
 * An LLM judge over any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, a local
 * `vqalab serve`), through the `openai` package.
 *
 * Each call renders a prompt template, asks the model, and parses a score out of the reply. Around
 * that: a cache keyed by (question, references, prediction); a limit on concurrent requests; a
 * timeout per attempt; retries with exponential backoff that honour Retry-After (and
 * retry-after-ms); and, when every attempt fails, either an error (the runner records it) or a
 * configured fallback score with the failure recorded in the result's `error` — never a silent 0.
 */
import OpenAI from 'openai';
import type { ChatClient, ChatMessage } from '../util/chat-client.js';
import type { VqaSample } from '../data/types.js';
import { backoffDelayMs, isRetryableStatus, retryAfterMs, Semaphore, sleep } from '../util/retry.js';
import { describeValue, expectInteger, expectNumber, expectString } from '../util/validate.js';
import { defineReward, rewardName, checkRewardValue } from './core.js';
import { extractAnswer, type AnswerExtractor } from './extract.js';
import type { AsyncBreakdownReward, RewardBreakdown, RewardContext, RewardFn } from './types.js';

/** The values a template can use: `{{question}}`, `{{references}}`, `{{prediction}}`, `{{answer}}`. */
export interface JudgeTemplateValues {
  question: string;
  /** The distinct reference answers, joined with "; ". */
  references: string;
  prediction: string;
  /** The single reference answer (`sample.answer`). */
  answer: string;
}

export const DEFAULT_JUDGE_TEMPLATE = `You grade answers to questions about an image. You cannot see the image: judge only whether the candidate answer means the same as the reference answers given by human annotators.

Question: {{question}}
Reference answers: {{references}}
Candidate answer: {{prediction}}

Reply with one line: "Score: N", where N is an integer from 0 (wrong) to 10 (fully correct).`;

export interface LlmJudgeOptions {
  /** Model name sent to the endpoint. */
  model: string;
  /** Base URL of the OpenAI-compatible API, e.g. "http://127.0.0.1:8000/v1" (ignored when `client` is given). */
  baseURL?: string;
  /** API key; default $OPENAI_API_KEY, or "none" for local servers that need none. */
  apiKey?: string;
  /** A configured client to use instead (its own retries are bypassed: the judge retries itself). */
  client?: ChatClient;
  /** The user message: a string with {{placeholders}}, or a function (default {@link DEFAULT_JUDGE_TEMPLATE}). */
  template?: string | ((values: JudgeTemplateValues, sample: VqaSample) => string);
  /** An optional system message. */
  system?: string;
  /** The score scale the template asks for: a bare number N in the reply means N / scale (default 10). */
  scale?: number;
  /** Turn a reply into a score in [0, 1]; throw to reject it as malformed (default {@link parseJudgeScore}). */
  parse?: (reply: string) => number;
  /** How to find the answer in a completion (default {@link extractAnswer}). */
  extract?: AnswerExtractor;
  /** Requests in flight at once, per judge (default 4). */
  maxConcurrency?: number;
  /** Milliseconds per attempt before it is abandoned (default 30000). */
  timeoutMs?: number;
  /** Retries after the first attempt, for timeouts, connection errors, 408/409/429/5xx and malformed replies (default 3). */
  maxRetries?: number;
  /** First backoff delay in ms, doubled per retry, with jitter (default 500). */
  backoffMs?: number;
  /** Longest wait between attempts, Retry-After included (default 30000). */
  maxBackoffMs?: number;
  /**
   * When every attempt fails: absent → the judge throws (the runner records the failure); a number
   * or a reward → that score, with the failure recorded in the result's `error` and part `fallback: 1`.
   */
  fallback?: number | RewardFn;
  /** Cache results by (question, references, prediction): true (default), false, or a Map to share. */
  cache?: boolean | Map<string, RewardBreakdown>;
  /** Most entries kept in the built-in cache (oldest dropped first; default 100000). */
  cacheSize?: number;
  temperature?: number;
  maxTokens?: number;
  /** Reward name (default "llmJudge"). */
  name?: string;
}

/** Counters of one judge, for a notebook or a log line. */
export interface JudgeStats {
  calls: number;
  cacheHits: number;
  requests: number;
  retries: number;
  /** Delays waited before retries, in ms (Retry-After when the server sent one). */
  retryDelaysMs: number[];
  malformed: number;
  failures: number;
  fallbacks: number;
  promptTokens: number;
  completionTokens: number;
}

/** A judge reward plus its counters and cache. */
export type LlmJudge = AsyncBreakdownReward & {
  stats(): JudgeStats;
  clearCache(): void;
};

/** The judge could not produce a score (every attempt failed, or the reply was never parseable). */
export class JudgeError extends Error {
  constructor(
    message: string,
    readonly attempts: number,
  ) {
    super(message);
    this.name = 'JudgeError';
  }
}

class MalformedReply extends Error {}

function fill(template: string, values: JudgeTemplateValues): string {
  return template.replace(
    /\{\{\s*(question|references|prediction|answer)\s*\}\}/g,
    (_, k: keyof JudgeTemplateValues) => values[k],
  );
}

const NUM = String.raw`[-+]?(?:\d+(?:\.\d*)?|\.\d+)`;
const SCORE_LINE = new RegExp(
  String.raw`score\s*(?:is|of)?\s*[:=]?\s*[*_\x60"']*\s*(${NUM})\s*(?:(%)|(?:/|out\s+of)\s*(${NUM}))?`,
  'gi',
);
const BARE = new RegExp(String.raw`^[*_\x60"'\s]*(${NUM})\s*(?:(%)|(?:/|out\s+of)\s*(${NUM}))?[*_\x60"'.\s]*$`, 'i');

/**
 * Read a score in [0, 1] out of a judge's reply. Understands, in this order: a JSON object with a
 * "score" field; the last "Score: N" (also "score = N", "**Score:** N", "N/10", "N out of 10",
 * "N%"); a reply that is only a number. A bare number means N / `scale`; "a/b" means a / b;
 * "N%" means N / 100. Reasoning in `<think>` tags is ignored. Throws when no score is found or it
 * falls outside [0, 1] — out-of-range scores are not clamped.
 *
 * @example
 * parseJudgeScore('Score: 7') // 0.7
 * parseJudgeScore('{"score": 0.9, "reason": "same colour"}', 1) // 0.9
 */
export function parseJudgeScore(reply: string, scale = 10): number {
  const text = reply.replace(/<think>[\s\S]*?<\/think>/gi, '').trim();
  const scaled = (n: string, pct?: string, den?: string) => {
    const v = Number(n);
    if (pct) return v / 100;
    if (den !== undefined) {
      const d = Number(den);
      if (!(d > 0)) throw new MalformedReply(`score denominator ${den} is not positive`);
      return v / d;
    }
    return v / scale;
  };
  let value: number | undefined;
  const json = /\{[\s\S]*\}/.exec(text);
  if (json) {
    try {
      const obj = JSON.parse(json[0]) as Record<string, unknown>;
      if (typeof obj.score === 'number') value = obj.score / scale;
      else if (typeof obj.score === 'string' && new RegExp(`^${NUM}$`).test(obj.score.trim()))
        value = Number(obj.score) / scale;
    } catch {
      // not JSON; try the other forms
    }
  }
  if (value === undefined) {
    let last: RegExpMatchArray | undefined;
    for (const m of text.matchAll(SCORE_LINE)) last = m;
    if (last) value = scaled(last[1]!, last[2], last[3]);
  }
  if (value === undefined) {
    const m = BARE.exec(text);
    if (m) value = scaled(m[1]!, m[2], m[3]);
  }
  if (value === undefined || !Number.isFinite(value)) {
    throw new MalformedReply(
      `no score found in the reply ${JSON.stringify(text.length > 200 ? text.slice(0, 197) + '...' : text)}`,
    );
  }
  if (value < 0 || value > 1)
    throw new MalformedReply(
      `score ${value} (from ${JSON.stringify(text.slice(0, 80))}) is outside [0, 1] for scale ${scale}`,
    );
  return value;
}

function retryable(err: unknown): boolean {
  if (err instanceof MalformedReply) return true;
  if (err instanceof OpenAI.APIUserAbortError) return false;
  if (err instanceof OpenAI.APIConnectionError) return true; // includes timeouts
  if (err instanceof OpenAI.APIError) {
    return err.status === undefined || isRetryableStatus(err.status);
  }
  return false;
}

function describeError(err: unknown): string {
  if (err instanceof OpenAI.APIConnectionTimeoutError) return 'timed out';
  if (err instanceof OpenAI.APIError && err.status !== undefined)
    return `HTTP ${err.status}${err.message ? ` (${err.message.slice(0, 200)})` : ''}`;
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * An LLM-as-judge reward. Score in [0, 1]; parts: `judge` (the parsed score), `attempts`, `cached`
 * (1 on a cache hit), `fallback` (1 when the fallback was used). The reply is kept in `note`.
 *
 * @example
 * const judge = llmJudge({ baseURL: 'http://127.0.0.1:8000/v1', model: 'Qwen2.5-7B-Instruct', fallback: 0 });
 * await judge(sample, 'two dogs', {}); // { score: 0.9, parts: { judge: 0.9, attempts: 1, cached: 0, fallback: 0 }, note: 'Score: 9' }
 */
export function llmJudge(options: LlmJudgeOptions): LlmJudge {
  if (typeof options !== 'object' || options === null)
    throw new TypeError(`Expected an options object for llmJudge but received ${describeValue(options)}`);
  const model = expectString('model', options.model, { nonEmpty: true });
  const scale = options.scale === undefined ? 10 : expectNumber('scale', options.scale, Number.MIN_VALUE);
  const maxConcurrency =
    options.maxConcurrency === undefined ? 4 : expectInteger('maxConcurrency', options.maxConcurrency, 1);
  const timeoutMs = options.timeoutMs === undefined ? 30_000 : expectNumber('timeoutMs', options.timeoutMs, 1);
  const maxRetries = options.maxRetries === undefined ? 3 : expectInteger('maxRetries', options.maxRetries, 0);
  const backoffMs = options.backoffMs === undefined ? 500 : expectNumber('backoffMs', options.backoffMs, 0);
  const maxBackoffMs =
    options.maxBackoffMs === undefined ? 30_000 : expectNumber('maxBackoffMs', options.maxBackoffMs, 0);
  const cacheSize = options.cacheSize === undefined ? 100_000 : expectInteger('cacheSize', options.cacheSize, 0);
  const template = options.template ?? DEFAULT_JUDGE_TEMPLATE;
  if (typeof template !== 'string' && typeof template !== 'function')
    throw new TypeError(`Expected a string or function for template but received ${describeValue(template)}`);
  const parse = options.parse ?? ((reply: string) => parseJudgeScore(reply, scale));
  const extract = options.extract ?? extractAnswer;
  const fallback = options.fallback;
  if (fallback !== undefined && typeof fallback !== 'function') expectNumber('fallback', fallback);
  const name = options.name ?? 'llmJudge';
  let client = options.client;
  if (!client) {
    const baseURL = expectString('baseURL', options.baseURL, { nonEmpty: true });
    client = new OpenAI({
      baseURL,
      apiKey: options.apiKey ?? process.env.OPENAI_API_KEY ?? 'none',
      maxRetries: 0,
      timeout: timeoutMs,
    });
  }
  const api = client;
  const cache: Map<string, RewardBreakdown> | undefined =
    options.cache === false ? undefined : options.cache instanceof Map ? options.cache : new Map();
  const inflight = new Map<string, Promise<RewardBreakdown>>();
  const limiter = new Semaphore(maxConcurrency);
  const stats: JudgeStats = {
    calls: 0,
    cacheHits: 0,
    requests: 0,
    retries: 0,
    retryDelaysMs: [],
    malformed: 0,
    failures: 0,
    fallbacks: 0,
    promptTokens: 0,
    completionTokens: 0,
  };

  async function ask(
    prompt: string,
    signal: AbortSignal | undefined,
  ): Promise<{ score: number; reply: string; attempts: number }> {
    let lastError: unknown;
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      if (attempt > 0) {
        const asked = lastError instanceof OpenAI.APIError ? retryAfterMs(lastError.headers) : undefined;
        const delay = Math.min(maxBackoffMs, asked ?? backoffDelayMs(attempt, backoffMs, maxBackoffMs));
        stats.retries++;
        stats.retryDelaysMs.push(Math.round(delay));
        await sleep(delay, signal);
      }
      try {
        stats.requests++;
        const messages: ChatMessage[] = [];
        if (options.system) messages.push({ role: 'system', content: options.system });
        messages.push({ role: 'user', content: prompt });
        const res = await limiter.run(
          async () =>
            (await api.chat.completions.create(
              {
                model,
                messages,
                temperature: options.temperature ?? 0,
                ...(options.maxTokens ? { max_tokens: options.maxTokens } : {}),
              },
              { timeout: timeoutMs, maxRetries: 0, signal: signal ?? null },
            )) as OpenAI.Chat.ChatCompletion,
        );
        stats.promptTokens += res.usage?.prompt_tokens ?? 0;
        stats.completionTokens += res.usage?.completion_tokens ?? 0;
        const reply = res.choices?.[0]?.message?.content;
        if (typeof reply !== 'string' || reply.trim() === '')
          throw new MalformedReply(`the reply has no message content (${JSON.stringify(res).slice(0, 200)})`);
        let score: number;
        try {
          score = parse(reply);
        } catch (err) {
          throw err instanceof MalformedReply
            ? err
            : new MalformedReply(err instanceof Error ? err.message : String(err));
        }
        if (typeof score !== 'number' || !Number.isFinite(score))
          throw new MalformedReply(`parse returned ${describeValue(score)}`);
        return { score, reply, attempts: attempt + 1 };
      } catch (caught) {
        // A 200 whose body is not JSON surfaces from the client as a SyntaxError: a malformed reply.
        const err =
          caught instanceof SyntaxError
            ? new MalformedReply(`the response body is not JSON (${caught.message})`)
            : caught;
        if (err instanceof MalformedReply) stats.malformed++;
        lastError = err;
        if (signal?.aborted) throw err;
        if (!retryable(err)) throw new JudgeError(`${name}: ${describeError(err)}`, attempt + 1);
      }
    }
    throw new JudgeError(
      `${name}: gave up after ${maxRetries + 1} attempt(s): ${describeError(lastError)}`,
      maxRetries + 1,
    );
  }

  const judge = async (
    sample: VqaSample,
    completion: string,
    context: RewardContext = {},
  ): Promise<RewardBreakdown> => {
    stats.calls++;
    const prediction = extract(completion);
    const refs = [...new Set(sample.answers?.length ? sample.answers : [sample.answer])];
    const key = JSON.stringify([sample.question, refs, prediction]);
    const hit = cache?.get(key);
    if (hit) {
      stats.cacheHits++;
      return { ...hit, parts: { ...hit.parts, cached: 1 } };
    }
    let pending = inflight.get(key);
    const shared = pending !== undefined;
    if (pending) stats.cacheHits++;
    else {
      const values: JudgeTemplateValues = {
        question: sample.question,
        references: refs.join('; '),
        prediction,
        answer: sample.answer,
      };
      const prompt = typeof template === 'function' ? template(values, sample) : fill(template, values);
      pending = ask(prompt, context.signal).then(({ score, reply, attempts }) => {
        const b: RewardBreakdown = {
          score,
          parts: { judge: score, attempts, cached: 0, fallback: 0 },
          note: reply.trim().slice(0, 500),
        };
        if (cache && cacheSize > 0) {
          if (cache.size >= cacheSize) cache.delete(cache.keys().next().value!);
          cache.set(key, b);
        }
        return b;
      });
      inflight.set(key, pending);
    }
    try {
      const b = await pending;
      return shared ? { ...b, parts: { ...b.parts, cached: 1 } } : b;
    } catch (err) {
      stats.failures++;
      if (fallback === undefined || context.signal?.aborted) throw err;
      stats.fallbacks++;
      const message = err instanceof Error ? err.message : String(err);
      const attempts = err instanceof JudgeError ? err.attempts : 1;
      const score =
        typeof fallback === 'number'
          ? fallback
          : checkRewardValue(await fallback(sample, completion, context), rewardName(fallback)).score;
      return { score, parts: { attempts, cached: 0, fallback: 1 }, error: `${message}; used fallback score ${score}` };
    } finally {
      if (!shared) inflight.delete(key);
    }
  };
  const reward = defineReward(name, judge) as LlmJudge;
  reward.stats = () => ({ ...stats, retryDelaysMs: [...stats.retryDelaysMs] });
  reward.clearCache = () => cache?.clear();
  return reward;
}
