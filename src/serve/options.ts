/**
 * The public shapes of `vqalab serve`: its options, the handle it returns, and what a mounted route
 * (src/gateway) may call. They live apart from the server so the modules that implement it can
 * share them without importing server.ts (which imports them); server.ts re-exports them.
 */
import type http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Prompt, SampleStats } from '../engine/types.js';
import type { LocalGeneration, LocalPolicy } from '../rollout/local.js';
import type { ChatRequest } from './protocol.js';
import type { QueueStats } from './queue.js';
import type { WeightSwitch } from './weights.js';

export interface ServeOptions {
  /** The model to serve. */
  policy: LocalPolicy;
  /** The name clients put in `model` (default "vqalab"). */
  modelName?: string;
  /** Interface to bind (default 127.0.0.1: loopback only). */
  host?: string;
  /** Port (default 8000; 0 = any free port). */
  port?: number;
  /** Require `Authorization: Bearer <apiKey>` on /v1 routes. */
  apiKey?: string;
  /** Local image paths (file:// or absolute) are read only under this folder; absent: refused. */
  allowedMediaRoot?: string;
  /** Largest request body (default 32 MiB). */
  maxBodyBytes?: number;
  /** Largest encoded image (default 16 MiB). */
  maxImageBytes?: number;
  /** Most pixels per image (default 4096·4096). */
  maxImagePixels?: number;
  /** Most images per request (default 8). */
  maxImages?: number;
  /** Most choices (n) per request (default 64). */
  maxN?: number;
  /**
   * Most characters of message text per request, counted before tokenising (default: the context
   * length × the longest token's characters, so only prompts that cannot fit are refused).
   */
  maxPromptChars?: number;
  /** Most stop strings per request (default 16). */
  maxStops?: number;
  /** Most characters per stop string (default 1024). */
  maxStopChars?: number;
  /**
   * Worker threads for large requests (parse, tokenise, image decode) so the event loop stays
   * responsive (default 1; 0: everything on the event loop).
   */
  workers?: number;
  /** Requests waiting for the engine before new ones get 503 (default 256). */
  maxQueue?: number;
  /**
   * Continuous batching (default true): requests share the engine's decode loop, joining it at the
   * next step. false: the earlier queue-only mode, one request on the engine at a time.
   */
  batching?: boolean;
  /** With batching: most rows (the sum of n) decoding together; more requests wait in the fair queue (default 64). */
  maxBatchRows?: number;
  /** max_tokens when a request gives none: the rest of the context, at most this (default 512). */
  defaultMaxTokens?: number;
  /** Access log and notices (default: none). */
  log?: (line: string) => void;
  /** Dispose the policy's model when the server closes (default false). */
  disposeOnClose?: boolean;
  /**
   * More routes on this server (src/gateway mounts its per-attempt URLs here): called for each
   * request before the server's own routes, with no API key check; resolves true when it answered.
   */
  routes?: (req: IncomingMessage, res: ServerResponse, url: string, api: ServeRouteApi) => boolean | Promise<boolean>;
  /**
   * Enables `PUT /admin/weights` with `Authorization: Bearer <adminKey>`: a trainer pushes its
   * weights (LoRA adapters or all) and the server switches to them between requests
   * (src/serve/weights.ts). Default: none (the route answers 404).
   */
  adminKey?: string;
  /** Largest weight push body (default 16 GiB). */
  maxWeightBytes?: number;
}

/** What a mounted route may use: the server's chat completions, with hooks. */
export interface ServeRouteApi {
  chatCompletions(req: IncomingMessage, res: ServerResponse, hooks?: ChatHooks): Promise<void>;
}

export interface ChatHooks {
  /**
   * The weight version the request is about to be sampled with (the weights cannot change until it
   * is done); throw an ApiError to refuse the request instead (src/gateway: an attempt bound to
   * another version).
   */
  checkWeightVersion?: (version: number) => void;
  /** Rewrite the request body before it is parsed and checked (may throw ApiError). */
  transformBody?: (raw: Buffer) => Buffer;
  /** The prompt the engine samples from, given the one the chat template made (ids with image pads, processed images). */
  rewritePrompt?: (prompt: Prompt) => Prompt;
  /** What the engine produced, before the reply is sent (the prompt as the engine saw it: ids with image pads, processed images). */
  onGeneration?: (r: {
    id: string;
    chat: ChatRequest;
    prompt: Prompt;
    generation: LocalGeneration;
    weightVersion: number;
  }) => void;
}

export interface ServeStats {
  requests: number;
  byStatus: Record<string, number>;
  queue: QueueStats;
  /** The engine's sampling loop (runs, joined, cancelled requests, ...). */
  engine: SampleStats | null;
  completionTokens: number;
  promptTokens: number;
}

export interface ServeHandle {
  /** Base URL for OpenAI clients, ending in /v1. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly modelName: string;
  readonly server: http.Server;
  /**
   * The weights served and their version (every reply names the version it was sampled with).
   * A trainer in this process that updates the policy's model between rollouts sets
   * `weights.version`; a trainer elsewhere pushes (PUT /admin/weights).
   */
  readonly weights: WeightSwitch;
  stats(): ServeStats;
  /** Stop accepting, refuse queued requests (503), let running ones finish, then close. */
  close(): Promise<void>;
}
