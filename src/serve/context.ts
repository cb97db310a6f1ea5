/**
 * What the parts of one server share (built once by serve() in server.ts). Each module takes the
 * fields it uses (a Pick of this), so what a part depends on is visible in its signature.
 */
import type { LocalPolicy } from '../rollout/local.js';
import type { Offload } from './offload.js';
import type { PrepareLimits, PromptBuilder } from './prepare.js';
import type { FairQueue } from './queue.js';
import type { WeightSwitch } from './weights.js';

/** Request and token counts for stats() (byStatus: replies per HTTP status). */
export interface Counters {
  requests: number;
  byStatus: Record<string, number>;
  promptTokens: number;
  completionTokens: number;
}

export interface ServeContext {
  readonly policy: LocalPolicy;
  /** The name clients put in `model`. */
  readonly modelName: string;
  readonly log: ((line: string) => void) | undefined;
  readonly weights: WeightSwitch;
  readonly queue: FairQueue;
  /** Worker threads for large requests; null: everything on the event loop. */
  readonly offload: Offload | null;
  /** Continuous batching (true) or queue-only mode (false). */
  readonly batching: boolean;
  readonly limits: PrepareLimits;
  readonly builder: PromptBuilder;
  readonly maxBodyBytes: number;
  readonly maxWeightBytes: number;
  readonly counters: Counters;
  /** Set by close(): new work is refused with 503. */
  closing: boolean;
}
