/**
 * What the gateway keeps of an attempt: its recorded calls and events, how it ended, and the
 * record as JSON. Plain data and pure functions, so the trajectory builder, the viewer and the
 * agent runner read records without the HTTP side (src/gateway/gateway.ts) coming along.
 */
import { createHash } from 'node:crypto';
import type { ImageInput, Prompt } from '../engine/types.js';
import type { ChatMessage } from '../text/tokenizer.js';

/** One choice of a recorded call, as sampled. */
export interface RecordedChoice {
  text: string;
  /** Completion ids as the engine produced them; a stop token that ended it is the last one. */
  tokenIds: Int32Array;
  /** Log-prob of each id under the sampling (temperature-1, unfiltered) policy. */
  logprobs: Float32Array;
  finishReason: 'stop' | 'length';
}

/** One chat completion made under an attempt. */
export interface RecordedCall {
  /** Position among the attempt's calls (completion order). */
  index: number;
  /** The reply's id (chatcmpl-...). */
  id: string;
  /** The conversation as the chat template saw it (images as placeholders). */
  messages: ChatMessage[];
  /** The prompt as the engine saw it: ids with each image's pad tokens, and the processed images. */
  prompt: Prompt;
  /**
   * The chat template's ids for the conversation as sent (text re-encoded). They differ from
   * `prompt.ids` where an earlier answer of the attempt came back and its sampled ids were put back.
   */
  templateIds: Int32Array;
  choices: RecordedChoice[];
  sampling: {
    n: number;
    temperature: number;
    topP: number;
    topK: number;
    maxTokens: number | undefined;
    seed: number | undefined;
    stream: boolean;
  };
  /** The weight version that sampled the call (the server's, see Gateway.weightVersion); the weights cannot change during a call. */
  weightVersion: number;
  /** ms since the epoch, when the reply was ready. */
  at: number;
}

export interface GatewayEvent {
  eventId: string;
  eventType: string;
  data: Record<string, unknown>;
  /** ms since the epoch. */
  timestamp: number;
}

export type AttemptStatus = 'running' | 'succeeded' | 'failed';

export interface AttemptRecord {
  rolloutId: string;
  attemptId: string;
  status: AttemptStatus;
  /** The task the attempt ran (the dataset row), as given to openAttempt. */
  task?: unknown;
  /**
   * The weight version the attempt is bound to (openAttempt's `weightVersion`): its calls are
   * sampled by that version or refused (409 `stale_weights`). Undefined: any version, recorded per call.
   */
  weightVersion?: number;
  calls: RecordedCall[];
  events: GatewayEvent[];
  /** The last reward event's value; undefined until one arrives. */
  reward?: number;
  /** Why the attempt failed. */
  error?: string;
  exitCode?: number | null;
  signal?: string | null;
  timedOut?: boolean;
  stdoutTail?: string;
  stderrTail?: string;
  startedAt: number;
  endedAt?: number;
}

/** What an agent process needs to reach its attempt (Agent Lightning's variable names). */
export interface AttemptEndpoint {
  rolloutId: string;
  attemptId: string;
  /** AGL_OPENAI_BASE_URL: ends in /v1. */
  baseUrl: string;
  /** AGL_EVENT_URL. */
  eventUrl: string;
  /** AGL_KEY: this attempt's bearer key. */
  key: string;
  record: AttemptRecord;
}

export interface FinishInfo {
  exitCode?: number | null;
  signal?: string | null;
  timedOut?: boolean;
  /** A failure found by the runner (spawn error, timeout), reported as the attempt's error. */
  error?: string;
  stdoutTail?: string;
  stderrTail?: string;
}

export interface GatewayStats {
  attemptsOpen: number;
  attemptsSucceeded: number;
  attemptsFailed: number;
  calls: number;
  events: number;
  /** Requests refused (any 4xx) on per-attempt routes. */
  refused: number;
}

/**
 * A processed image's identity: sha256 over its grid and pixels. The admin record names each
 * image of a call by it, so a trainer elsewhere, which processes the task's image files again
 * (the pixels are not sent), can check that it trains on the pixels the server sampled with.
 */
export function imageDigest(img: ImageInput): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(img.gridThw));
  h.update(Buffer.from(img.pixels.buffer, img.pixels.byteOffset, img.pixels.byteLength));
  return h.digest('hex');
}

/** An attempt's record as JSON (the admin route's reply): ids and log-probs as arrays, images as their grids. */
export function attemptToJson(rec: AttemptRecord): Record<string, unknown> {
  return {
    rollout_id: rec.rolloutId,
    attempt_id: rec.attemptId,
    status: rec.status,
    reward: rec.reward ?? null,
    error: rec.error ?? null,
    weight_version: rec.weightVersion ?? null,
    exit_code: rec.exitCode ?? null,
    timed_out: rec.timedOut ?? false,
    stdout_tail: rec.stdoutTail ?? null,
    stderr_tail: rec.stderrTail ?? null,
    started_at: rec.startedAt / 1000,
    ended_at: rec.endedAt === undefined ? null : rec.endedAt / 1000,
    events: rec.events.map((e) => ({
      event_id: e.eventId,
      event_type: e.eventType,
      data: e.data,
      timestamp: e.timestamp / 1000,
    })),
    calls: rec.calls.map((c) => ({
      index: c.index,
      id: c.id,
      weight_version: c.weightVersion,
      messages: c.messages,
      sampling: c.sampling,
      prompt_ids: Array.from(c.prompt.ids),
      template_ids: Array.from(c.templateIds),
      images: c.prompt.images.map((im) => ({ grid_thw: im.gridThw, sha256: imageDigest(im) })),
      choices: c.choices.map((ch) => ({
        text: ch.text,
        token_ids: Array.from(ch.tokenIds),
        logprobs: Array.from(ch.logprobs),
        finish_reason: ch.finishReason,
      })),
    })),
  };
}

function tail(text: string, max = 2000): string {
  return text.length > max ? `…${text.slice(-max)}` : text;
}

/**
 * Close a running attempt after its agent exited: succeeded when it posted a reward and exited
 * with 0; otherwise failed, with the reason (no reward, exit code, timeout) and the stderr tail.
 * A finished attempt is left as it is (a second finish changes nothing).
 */
export function finishRecord(rec: AttemptRecord, info: FinishInfo): AttemptRecord {
  if (rec.status !== 'running') return rec;
  rec.exitCode = info.exitCode ?? null;
  rec.signal = info.signal ?? null;
  rec.timedOut = info.timedOut ?? false;
  if (info.stdoutTail !== undefined) rec.stdoutTail = tail(info.stdoutTail);
  if (info.stderrTail !== undefined) rec.stderrTail = tail(info.stderrTail);
  rec.endedAt = Date.now();
  const how = info.timedOut
    ? 'was stopped after its timeout'
    : info.signal
      ? `was killed by ${info.signal}`
      : `exited with code ${info.exitCode ?? '?'}`;
  const stderr = rec.stderrTail?.trim() ? `; stderr tail:\n${rec.stderrTail.trim()}` : '; its stderr was empty';
  if (info.error) {
    rec.status = 'failed';
    rec.error = `${info.error}${stderr}`;
  } else if (rec.reward === undefined) {
    rec.status = 'failed';
    rec.error = `the agent ${how} without posting a reward (${rec.calls.length} call${rec.calls.length === 1 ? '' : 's'} recorded)${stderr}`;
  } else if (info.timedOut || info.signal || info.exitCode !== 0) {
    rec.status = 'failed';
    rec.error = `the agent posted a reward but ${how}${stderr}`;
  } else {
    rec.status = 'succeeded';
  }
  return rec;
}
