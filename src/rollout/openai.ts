/**
 * OpenAIPolicy: the {@link Policy} over any OpenAI-compatible chat-completions endpoint (OpenAI,
 * vLLM, SGLang, `vqalab serve`) through the `openai` package.
 *
 * One sample → one user message: the image(s) as `image_url` parts (data URLs by default, or
 * `file://` URLs for a server that reads local media, e.g. `vqalab serve --allowed-media-root`,
 * vLLM's --allowed-local-media-path), then the question. n completions come from the `n`
 * parameter; a server that ignores it (answers one choice) is noticed and the rest are fetched by
 * repeated requests (seed + k, when a seed is set), and so are later calls. Log-probs and token
 * ids are read when the server sends them (choices[i].logprobs, vLLM's choices[i].token_ids or
 * "token_id:N" tokens). For training (`SamplingOptions.forTraining`, the trainer's rollouts) token
 * ids are asked for (`return_token_ids`) and required: a server that does not return them is
 * refused with a {@link TokenIdsRequiredError} naming the fix, unless `retokenize: true` accepts
 * re-encoding the text (evaluation needs no ids and works with any server). Every request goes through a {@link RequestScheduler} (concurrency, rate,
 * timeout, retries with Retry-After); a request that fails for good becomes error completions on
 * its sample, never an exception, unless the call was cancelled.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import OpenAI from 'openai';
import sharp from 'sharp';
import type { VqaSample } from '../data/types.js';
import type {
  ChatChoiceTokens,
  ChatClient,
  ChatCompletionRequest,
  ChatContentPart,
  ChatMessage,
} from '../util/chat-client.js';
import {
  describeValue,
  expectBoolean,
  expectInteger,
  expectOneOf,
  expectString,
  invalidParameterError,
} from '../util/validate.js';
import {
  abortReason,
  MalformedReplyError,
  RequestError,
  RequestScheduler,
  type SchedulerOptions,
  type SchedulerStats,
} from './runner.js';
import type { Completion, Policy, SamplingOptions } from './types.js';

export interface OpenAIPolicyOptions extends SchedulerOptions {
  /** Model name sent to the server. */
  model: string;
  /** Base URL ending in /v1 (default $OPENAI_BASE_URL, else the `openai` package's default). */
  baseURL?: string;
  /** API key (default $OPENAI_API_KEY, else "none" for local servers that need none). */
  apiKey?: string;
  /** A configured client instead of baseURL/apiKey, e.g. `new OpenAI(...)` (its own retries are bypassed: the scheduler retries). */
  client?: ChatClient;
  /** Share one scheduler between policies that talk to the same server (its limits then apply to both). */
  scheduler?: RequestScheduler;
  /** How images travel: 'data-url' (default, any server) or 'file-url' (servers allowed to read local files). */
  images?: 'data-url' | 'file-url';
  /** 'auto' (default): send n, fetch missing choices by repeated requests; 'native': send n, trust it; 'repeat': n requests of one. */
  nMode?: 'auto' | 'native' | 'repeat';
  /** Ask for per-token log-probs (default false). */
  logprobs?: boolean;
  /** Ask for token ids with vLLM's `return_token_ids` (vLLM ≥ 0.10.2 and `vqalab serve`; others may reject it). Default false. */
  tokenIds?: boolean;
  /**
   * Train on completions whose token ids the server did not return by re-encoding their text
   * (default false: such a server is refused for training). Re-encoding can give other ids than were
   * sampled (a character split over tokens, other BPE merges), so the update then trains on tokens
   * the policy never produced; Agent Lightning measured this hurting training.
   */
  retokenize?: boolean;
  /** Forward SamplingOptions.stopTokenIds as `stop_token_ids` (vLLM, SGLang, `vqalab serve`). Default false. */
  sendStopTokenIds?: boolean;
  /** The field for the completion length: 'max_tokens' (default) or 'max_completion_tokens' (newer OpenAI models). */
  maxTokensField?: 'max_tokens' | 'max_completion_tokens';
  /** A system message before the question. */
  systemPrompt?: string;
  /** The user text of a sample (default: the question). */
  userText?: (sample: VqaSample) => string;
  /** Image detail hint for servers that use it. */
  detail?: 'auto' | 'low' | 'high';
  /** Extra fields merged into every request body (server-specific options). */
  extraBody?: Record<string, unknown>;
  /** Policy name (default "openai:<model>@<baseURL>"). */
  name?: string;
}

/** Token counts and requests of one policy, for cost. */
export interface OpenAIPolicyStats extends SchedulerStats {
  requests: number;
  promptTokens: number;
  completionTokens: number;
  /** Whether the server was seen to ignore `n` (then choices come from repeated requests). */
  ignoresN: boolean;
}

const MIME_BY_MAGIC: [number[], string][] = [
  [[0x89, 0x50, 0x4e, 0x47], 'image/png'],
  [[0xff, 0xd8, 0xff], 'image/jpeg'],
  [[0x47, 0x49, 0x46, 0x38], 'image/gif'],
];

/** The MIME type of encoded image bytes that chat servers accept as they are (PNG, JPEG, GIF, WebP). */
export function sniffImageMime(bytes: Uint8Array): string | undefined {
  for (const [magic, mime] of MIME_BY_MAGIC) if (magic.every((b, i) => bytes[i] === b)) return mime;
  if (
    bytes.length >= 12 &&
    Buffer.from(bytes.subarray(0, 4)).toString('latin1') === 'RIFF' &&
    Buffer.from(bytes.subarray(8, 12)).toString('latin1') === 'WEBP'
  )
    return 'image/webp';
  return undefined;
}

/** An image file as a data URL; formats servers may not read (TIFF, BMP, ...) are re-encoded as PNG. */
export async function imageDataUrl(file: string): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new Error(
      `${file}: cannot read the image (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  let mime = sniffImageMime(bytes);
  if (!mime) {
    try {
      bytes = await sharp(bytes).png().toBuffer();
    } catch (err) {
      throw new Error(`${file}: cannot decode the image (${(err as Error).message.split('\n')[0]})`);
    }
    mime = 'image/png';
  }
  return `data:${mime};base64,${Buffer.from(bytes).toString('base64')}`;
}

type Choice = OpenAI.Chat.Completions.ChatCompletion.Choice & { token_ids?: unknown };

/** Token ids from a choice: vLLM's `token_ids`, or logprob tokens spelled "token_id:N" (return_tokens_as_token_ids). */
export function tokenIdsOf<C extends ChatChoiceTokens>(choice: C): number[] | undefined {
  if (Array.isArray(choice.token_ids) && choice.token_ids.every((t) => Number.isInteger(t)))
    return choice.token_ids as number[];
  const content = choice.logprobs?.content;
  if (content?.length && content.every((t) => /^token_id:\d+$/.test(t.token)))
    return content.map((t) => Number(t.token.slice(9)));
  return undefined;
}

let requestCounter = 0;

/** A server whose completions cannot be trained on token-exactly (no token ids), for a training caller. */
export class TokenIdsRequiredError extends Error {
  constructor(
    readonly baseURL: string,
    detail: string,
  ) {
    super(
      `${baseURL}: ${detail}. Training needs the ids the server sampled (re-encoding the text can give other tokens than were sampled). ` +
        'Use a server that returns them (vqalab serve; vLLM >= 0.10.2, which honours return_token_ids), ' +
        'or pass retokenize: true to OpenAIPolicy to train on re-encoded text knowingly. Evaluation does not need them.',
    );
    this.name = 'TokenIdsRequiredError';
  }
}

export class OpenAIPolicy implements Policy {
  readonly name: string;
  readonly model: string;
  readonly baseURL: string;
  readonly client: ChatClient;
  readonly scheduler: RequestScheduler;
  private readonly o: OpenAIPolicyOptions;
  private readonly imageMode: 'data-url' | 'file-url';
  private readonly nMode: 'auto' | 'native' | 'repeat';
  private readonly urls = new Map<string, Promise<string>>();
  private ignoresN = false;
  private readonly counts = { requests: 0, promptTokens: 0, completionTokens: 0 };

  constructor(options: OpenAIPolicyOptions) {
    if (options === null || typeof options !== 'object')
      throw invalidParameterError('options', 'an object {model, baseURL}', options);
    this.o = options;
    this.model = expectString('model', options.model, { nonEmpty: true });
    this.imageMode =
      options.images === undefined
        ? 'data-url'
        : expectOneOf('images', options.images, ['data-url', 'file-url'] as const);
    this.nMode =
      options.nMode === undefined ? 'auto' : expectOneOf('nMode', options.nMode, ['auto', 'native', 'repeat'] as const);
    if (options.logprobs !== undefined) expectBoolean('logprobs', options.logprobs);
    if (options.tokenIds !== undefined) expectBoolean('tokenIds', options.tokenIds);
    if (options.retokenize !== undefined) expectBoolean('retokenize', options.retokenize);
    if (options.maxTokensField !== undefined)
      expectOneOf('maxTokensField', options.maxTokensField, ['max_tokens', 'max_completion_tokens'] as const);
    if (options.client) {
      this.client = options.client;
    } else {
      const baseURL = options.baseURL ?? process.env.OPENAI_BASE_URL;
      if (baseURL !== undefined) expectString('baseURL', baseURL, { nonEmpty: true });
      this.client = new OpenAI({
        baseURL,
        apiKey: options.apiKey ?? process.env.OPENAI_API_KEY ?? 'none',
        maxRetries: 0,
        timeout: 24 * 3600_000,
      });
    }
    this.baseURL = this.client.baseURL;
    this.scheduler = options.scheduler ?? new RequestScheduler(options);
    this.name = options.name ?? `openai:${this.model}@${this.baseURL}`;
  }

  stats(): OpenAIPolicyStats {
    return { ...this.scheduler.stats(), ...this.counts, ignoresN: this.ignoresN };
  }

  private imageUrl(file: string): Promise<string> {
    if (this.imageMode === 'file-url') return Promise.resolve(pathToFileURL(path.resolve(file)).href);
    const key = path.resolve(file);
    let p = this.urls.get(key);
    if (!p) {
      p = imageDataUrl(key);
      p.catch(() => this.urls.delete(key));
      if (this.urls.size >= 64) this.urls.delete(this.urls.keys().next().value!);
      this.urls.set(key, p);
    }
    return p;
  }

  /** The chat messages of a sample. */
  async messages(sample: VqaSample): Promise<ChatMessage[]> {
    const files = sample.imagePaths?.length ? sample.imagePaths : [sample.imagePath];
    const parts: ChatContentPart[] = [];
    for (const f of files) {
      const url = await this.imageUrl(f);
      parts.push({ type: 'image_url', image_url: this.o.detail ? { url, detail: this.o.detail } : { url } });
    }
    parts.push({ type: 'text', text: this.o.userText ? this.o.userText(sample) : sample.question });
    const msgs: ChatMessage[] = [];
    if (this.o.systemPrompt !== undefined) msgs.push({ role: 'system', content: this.o.systemPrompt });
    msgs.push({ role: 'user', content: parts });
    return msgs;
  }

  private body(
    messages: ChatMessage[],
    o: SamplingOptions,
    n: number,
    seed: number | undefined,
  ): ChatCompletionRequest {
    const b: ChatCompletionRequest = {
      model: this.model,
      messages,
      temperature: o.temperature,
      [this.o.maxTokensField ?? 'max_tokens']: o.maxTokens,
    };
    if (n > 1) b.n = n;
    if (o.topP !== undefined && o.topP !== 1) b.top_p = o.topP;
    if (o.topK) b.top_k = o.topK;
    if (o.stop?.length) b.stop = o.stop;
    if (seed !== undefined) b.seed = seed;
    if (this.o.sendStopTokenIds && o.stopTokenIds?.length) b.stop_token_ids = o.stopTokenIds;
    if (this.o.logprobs || o.topLogprobs) {
      b.logprobs = true;
      if (o.topLogprobs) b.top_logprobs = o.topLogprobs;
    }
    if (this.o.tokenIds || (o.forTraining && !this.o.retokenize)) b.return_token_ids = true;
    return { ...b, ...this.o.extraBody };
  }

  /** One request for `n` choices; throws RequestError when it fails for good. */
  private async request(
    body: ChatCompletionRequest,
    signal: AbortSignal | undefined,
    needIds = false,
  ): Promise<Completion[]> {
    const r = await this.scheduler.run(
      async (s) => {
        this.counts.requests++;
        const res = (await this.client.chat.completions.create(body, {
          signal: s,
          maxRetries: 0,
          timeout: 24 * 3600_000,
        })) as OpenAI.Chat.ChatCompletion;
        if (!res || !Array.isArray(res.choices))
          throw new MalformedReplyError(`the reply has no choices (${JSON.stringify(res).slice(0, 200)})`);
        if (res.choices.length === 0) throw new MalformedReplyError('the reply has an empty choices list');
        for (const c of res.choices) {
          if (
            !c ||
            typeof c !== 'object' ||
            !c.message ||
            (c.message.content !== null && typeof c.message.content !== 'string')
          ) {
            throw new MalformedReplyError(`a choice has no message content (${JSON.stringify(c).slice(0, 200)})`);
          }
        }
        return res;
      },
      { signal },
    );
    const res = r.value;
    if (needIds) {
      const missing = res.choices.findIndex((c) => tokenIdsOf(c as Choice) === undefined);
      if (missing >= 0) {
        throw new TokenIdsRequiredError(
          this.baseURL,
          `the reply to a training request has no token ids (choices[${missing}] has neither token_ids nor "token_id:N" log-prob tokens, ` +
            'though return_token_ids was sent)',
        );
      }
    }
    const requestId = `${res.id || 'chatcmpl'}#${++requestCounter}`;
    const choices = [...res.choices].sort((a, b) => (a.index ?? 0) - (b.index ?? 0)) as Choice[];
    const promptTokens = res.usage?.prompt_tokens ?? 0;
    const totalCompletion = res.usage?.completion_tokens ?? 0;
    this.counts.promptTokens += promptTokens;
    this.counts.completionTokens += totalCompletion;
    let unassigned = totalCompletion;
    const known = choices.map((c) => tokenIdsOf(c)?.length ?? c.logprobs?.content?.length);
    const unknownCount = known.filter((k) => k === undefined).length;
    for (const k of known) if (k !== undefined) unassigned -= k;
    let unknownSeen = 0;
    return choices.map((c, i) => {
      let completionTokens = known[i];
      if (completionTokens === undefined) {
        // Split what the usage reports among the choices whose length is unknown (the last gets the remainder).
        unknownSeen++;
        const share = Math.max(0, Math.floor(unassigned / unknownCount));
        completionTokens = unknownSeen === unknownCount ? Math.max(0, unassigned - share * (unknownCount - 1)) : share;
      }
      const out: Completion = {
        text: (c.message.content ?? '').trim(),
        finishReason: c.finish_reason === 'length' ? 'length' : 'stop',
        latencyMs: r.latencyMs,
        attempts: r.attempts,
        requestId,
        usage: { promptTokens, completionTokens },
      };
      const ids = tokenIdsOf(c);
      if (ids) out.tokenIds = ids;
      const lp = c.logprobs?.content;
      if (lp?.length) {
        out.logprobs = lp.map((t) => t.logprob);
        if (lp.some((t) => t.top_logprobs?.length))
          out.topLogprobs = lp.map((t) => (t.top_logprobs ?? []).map((x) => ({ token: x.token, logprob: x.logprob })));
      }
      return out;
    });
  }

  async generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]> {
    if (sample === null || typeof sample !== 'object') throw invalidParameterError('sample', 'a VqaSample', sample);
    if (options === null || typeof options !== 'object')
      throw invalidParameterError('options', 'SamplingOptions', options);
    const n = expectInteger('options.n', options.n, 1, 4096);
    expectInteger('options.maxTokens', options.maxTokens, 1);
    if (typeof options.temperature !== 'number' || !(options.temperature >= 0))
      throw invalidParameterError('options.temperature', 'number >= 0', options.temperature);
    const signal = options.signal;
    if (signal?.aborted) throw abortReason(signal);
    const t0 = performance.now();
    const fail = (count: number, err: unknown, attempts?: number): Completion[] =>
      Array.from({ length: count }, () => ({
        text: '',
        finishReason: 'error' as const,
        error: `sample ${sample.id}: ${err instanceof Error ? err.message : String(err)}`,
        latencyMs: performance.now() - t0,
        attempts: attempts ?? (err instanceof RequestError ? err.attempts : undefined),
      }));
    let messages: ChatMessage[];
    try {
      messages = await this.messages(sample);
    } catch (err) {
      return fail(n, err, 0);
    }
    const needIds = options.forTraining === true && !this.o.retokenize;
    const seedFor = (k: number) => (options.seed === undefined ? undefined : options.seed + k);
    const one = async (count: number, k: number): Promise<Completion[]> => {
      try {
        return (await this.request(this.body(messages, options, count, seedFor(k)), signal, needIds)).slice(0, count);
      } catch (err) {
        if (signal?.aborted) throw abortReason(signal);
        // A server that refuses the field itself (a 400 naming return_token_ids) cannot give ids either.
        if (needIds && err instanceof RequestError && err.status === 400 && /return_token_ids/.test(err.message)) {
          throw new TokenIdsRequiredError(
            this.baseURL,
            `the server refused return_token_ids (${err.message.slice(0, 200)})`,
          );
        }
        if (!(err instanceof RequestError)) throw err;
        return fail(count, err);
      }
    };
    const repeat = async (count: number, from: number): Promise<Completion[]> =>
      (await Promise.all(Array.from({ length: count }, (_x, j) => one(1, from + j)))).flat();
    if (n === 1 || this.nMode === 'repeat' || (this.nMode === 'auto' && this.ignoresN)) return repeat(n, 0);
    const first = await one(n, 0);
    if (first.length >= n || this.nMode === 'native' || first.every((c) => c.finishReason === 'error')) return first;
    // The server answered fewer choices than asked: it ignores n. Remember, and fetch the rest one by one.
    if (first.length === 1) this.ignoresN = true;
    return [...first, ...(await repeat(n - first.length, first.length))];
  }
}

/** Parse "openai:<model>@<base-url>" (base URL optional) into options. */
export function parseOpenAISpec(spec: string): { model: string; baseURL?: string } {
  if (typeof spec !== 'string' || !spec.startsWith('openai:'))
    throw invalidParameterError('spec', '"openai:<model>@<base-url>"', spec);
  const rest = spec.slice('openai:'.length);
  const at = rest.search(/@(https?:\/\/)/);
  if (at < 0 && rest.includes('@'))
    throw new TypeError(
      `Expected an http(s) base URL after @ in ${JSON.stringify(spec)} (openai:<model>@http://host:port/v1)`,
    );
  const model = at >= 0 ? rest.slice(0, at) : rest;
  const baseURL = at >= 0 ? rest.slice(at + 1) : undefined;
  if (!model) throw new TypeError(`Expected a model name in ${JSON.stringify(spec)} (openai:<model>@<base-url>)`);
  if (baseURL !== undefined) {
    try {
      new URL(baseURL);
    } catch {
      throw new TypeError(
        `Expected a base URL after @ in ${JSON.stringify(spec)} but received ${describeValue(baseURL)}`,
      );
    }
  }
  return baseURL === undefined ? { model } : { model, baseURL };
}
