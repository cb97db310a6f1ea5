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
  latencyMs?: number;
  usage?: { promptTokens: number; completionTokens: number };
}

export interface Policy {
  /** e.g. "local:/path/to/checkpoint" or "openai:gpt-4o-mini@http://127.0.0.1:8000/v1". */
  readonly name: string;
  generate(sample: VqaSample, options: SamplingOptions): Promise<Completion[]>;
}
