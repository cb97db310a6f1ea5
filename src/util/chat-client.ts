/**
 * The part of an OpenAI-compatible client that vqalab calls, as structural types. The `openai`
 * package's `OpenAI` client satisfies {@link ChatClient} (pass one wherever a `client` option is
 * taken); a test double or another SDK's client can too.
 *
 * Why not `OpenAI` itself in the public types: its declarations are 2.2 MB over 140 files, and a
 * notebook kernel type-checks the runtime's declarations at start (kernel/preload.ts), so naming it
 * in one exported signature made every kernel start 1.5 s slower. The implementation still uses the
 * package (its types stay inside the .ts files, out of the emitted .d.ts).
 */

/** Per-request options (the `openai` package's RequestOptions subset we pass). */
export interface ChatRequestOptions {
  signal?: AbortSignal | null;
  maxRetries?: number;
  /** Milliseconds. */
  timeout?: number;
}

/** An OpenAI-compatible chat-completions client, e.g. `new OpenAI({ baseURL, apiKey })`. */
export interface ChatClient {
  /** The base URL requests go to (ends in /v1). */
  readonly baseURL: string;
  chat: {
    completions: {
      /** POST /chat/completions with a JSON body; resolves with the parsed (non-streaming) reply. */
      create(body: ChatCompletionRequest, options?: ChatRequestOptions): PromiseLike<unknown>;
    };
  };
}

/** A chat-completions request body: the model, the messages, and any sampling fields. */
export interface ChatCompletionRequest {
  model: string;
  messages: ChatMessage[];
  [field: string]: unknown;
}

/** One part of a user message. */
export type ChatContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: { url: string; detail?: 'auto' | 'low' | 'high' } };

/** A chat message as sent. */
export type ChatMessage =
  | { role: 'system'; content: string }
  | { role: 'user'; content: string | ChatContentPart[] }
  | { role: 'assistant'; content: string };

/** The fields of a reply's choice that carry token ids and log-probs (vLLM's `token_ids`, OpenAI's `logprobs`). */
export interface ChatChoiceTokens {
  token_ids?: unknown;
  logprobs?: { content?: { token: string; logprob?: number }[] | null } | null;
}
