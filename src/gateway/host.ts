/**
 * Where an agent's attempts live: "open an attempt, close it and get its record, forget it". The
 * agent runner (src/gateway/agent.ts) and the training step (src/gateway/loop.ts) go through this
 * interface only, so one runner and one step serve both modes:
 *
 *   - local: a Gateway in this process (`localAttempts`), over the trainer's own model;
 *   - remote: a `vqalab serve --gateway-key-env` elsewhere, through its admin routes
 *     (`RemoteAttempts`, src/gateway/remote.ts).
 */
import type { VqaSample } from '../data/types.js';
import type { Gateway } from './gateway.js';
import type { AttemptRecord, FinishInfo } from './records.js';

/** What an agent process needs to reach its attempt (its Agent Lightning variables). */
export interface OpenedAttempt {
  rolloutId: string;
  attemptId: string;
  /** AGL_OPENAI_BASE_URL: ends in /v1. */
  baseUrl: string;
  /** AGL_EVENT_URL. */
  eventUrl: string;
  /** AGL_KEY. */
  key: string;
}

export interface AttemptHost {
  /** Open an attempt for `sample`'s task. */
  open(ids: { rolloutId: string; attemptId: string }, sample: VqaSample): Promise<OpenedAttempt>;
  /** Close it after its agent exited; resolves with the finished record (failed records say why). */
  finish(ids: { rolloutId: string; attemptId: string }, info: FinishInfo): Promise<AttemptRecord>;
  /** Forget finished attempts after training on them (records are held until then). */
  release(ids: { rolloutId: string; attemptId: string }[]): Promise<void>;
}

/** The attempts of a Gateway in this process. */
export function localAttempts(gateway: Gateway): AttemptHost {
  return {
    async open(ids, sample) {
      return gateway.openAttempt({ ...ids, task: sample });
    },
    async finish(ids, info) {
      return gateway.finishAttempt(ids.rolloutId, ids.attemptId, info);
    },
    async release(ids) {
      for (const id of ids) gateway.release(id.rolloutId, id.attemptId);
    },
  };
}

/** A Gateway or a host: the runner takes either. */
export function attemptHost(g: Gateway | AttemptHost): AttemptHost {
  return 'openAttempt' in g ? localAttempts(g) : g;
}
