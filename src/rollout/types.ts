/**
 * The policy interface shared by the local native engine and OpenAI-compatible servers, so the
 * trainer, the reward lab and the widgets work with either.
 */
import type { VqaSample } from '../data/types.js';

export interface SamplingOptions {
  /** Completions per prompt (the GRPO group size G). */
  n: number;
  /** 0 means greedy (argmax). */
  temperature: number;
  topP?: number;
  topK?: number;
  maxTokens: number;
  /** Stop strings (servers) or stop token ids (local engine). */
  stop?: string[];
  stopTokenIds?: number[];
  seed?: number;
  /** Ask for this many top alternatives per token (servers that support it; 0 or absent: none). */
  topLogprobs?: number;
  /**
   * The completions will be trained on: a policy must return the token ids it sampled and refuse
   * (throw) when it cannot, rather than let the caller re-tokenise the text, which can give other
   * ids than were sampled (OpenAIPolicy: unless its `retokenize` option asks for that). Plain
   * evaluation leaves it unset.
   */
  forTraining?: boolean;
  signal?: AbortSignal;
}

export interface Completion {
  text: string;
  /** Generated token ids, when the backend reports them. */
  tokenIds?: number[];
  /** Log-probability of each generated token under the sampling policy, when known. */
  logprobs?: number[];
  finishReason: 'stop' | 'length' | 'error';
  /** Set when the request for this completion failed; text is then empty. */
  error?: string;
  /** Milliseconds of the request that produced it (the successful attempt; queueing and retries excluded). */
  latencyMs?: number;
  /**
   * promptTokens: the prompt's length (shared by every completion of one request: count it once
   * per `requestId` when adding up cost); completionTokens: this completion's own tokens.
   */
  usage?: { promptTokens: number; completionTokens: number };
  /** Completions produced by one request share this id (a server reply id, or a local counter). */
  requestId?: string;
  /** Attempts the request took (1 = no retry), when the backend retries. */
  attempts?: number;
  /** Log-probs of the top alternatives at each generated token, when asked for and reported. */
  topLogprobs?: { token: string; logprob: number }[][];
}

export interface Policy {
  /** e.g. "local:/path/to/checkpoint" or "openai:gpt-4o-mini@http://127.0.0.1:8000/v1". */
  readonly name: string;
  generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]>;
}
