/**
 * Attempts on a remote `vqalab serve --gateway-key-env VAR` (another process, another machine),
 * through its admin routes (src/gateway/admin.ts): the `AttemptHost` of on-policy remote rollouts.
 *
 *   POST   /rollouts/{r}/attempts/{a}          open, bound to the step's weight version
 *   POST   /rollouts/{r}/attempts/{a}/finish   close (exit code, stderr tail); the record comes back
 *   DELETE /rollouts/{r}/attempts/{a}          forget it after training
 *   GET    /admin/weights                      the version served
 *
 * A record comes back as JSON (`attemptToJson`): ids, log-probs, image grids and digests, weight
 * versions. The processed pixels are not sent; this side processes the task's image files again
 * (the processor is deterministic) and takes each recorded image by its digest, so the trainer
 * forwards exactly the pixels the server sampled with, or says which image it cannot match.
 *
 * Completions recorded under another weight version than the step's are refused: the attempt is
 * failed with a `StaleWeightsError` message and not trained on (no importance-sampling correction).
 */
import type { VqaSample } from '../data/types.js';
import type { ImageInput } from '../engine/types.js';
import type { ChatMessage } from '../text/tokenizer.js';
import type { AttemptHost, OpenedAttempt } from './host.js';
import { type AttemptRecord, type FinishInfo, type GatewayEvent, imageDigest, type RecordedCall } from './records.js';

/** A remote gateway: the server's URL (with or without /v1) and its admin key. */
export interface RemoteGatewayTarget {
  url: string;
  adminKey: string;
}

/** A completion sampled by other weights than the ones the step trains. */
export class StaleWeightsError extends Error {
  readonly code = 'stale_weights';
  constructor(
    message: string,
    readonly recorded: number,
    readonly expected: number,
  ) {
    super(message);
    this.name = 'StaleWeightsError';
  }
}

export function originOf(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/** One admin request; a clear error naming the URL and the server's answer otherwise. */
async function admin(
  t: RemoteGatewayTarget,
  method: string,
  route: string,
  body?: unknown,
  signal?: AbortSignal,
): Promise<Record<string, unknown>> {
  const url = `${originOf(t.url)}${route}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      signal,
      headers: {
        authorization: `Bearer ${t.adminKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`cannot reach the remote gateway: ${method} ${url}: ${(err as Error).message}`);
  }
  const text = await res.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    /* not JSON: named below */
  }
  if (!res.ok) {
    const msg = (json?.error as { message?: string } | undefined)?.message ?? text.slice(0, 300);
    const hint =
      res.status === 401 || (res.status === 404 && route.startsWith('/rollouts/') && method === 'POST')
        ? ' (is the admin key right, and does the server run with --gateway-key-env?)'
        : '';
    throw new Error(`remote gateway: ${method} ${url}: HTTP ${res.status}: ${msg}${hint}`);
  }
  if (!json) throw new Error(`remote gateway: ${method} ${url}: the answer is not JSON: ${text.slice(0, 200)}`);
  return json;
}

/** The weight version the remote server serves now (GET /admin/weights). */
export async function remoteWeightVersion(t: RemoteGatewayTarget, signal?: AbortSignal): Promise<number> {
  const v = (await admin(t, 'GET', '/admin/weights', undefined, signal)).weight_version;
  if (!Number.isInteger(v)) throw new Error(`remote gateway: GET /admin/weights gave no integer weight_version`);
  return v as number;
}

function ints(where: string, v: unknown): Int32Array {
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x)))
    throw new Error(`remote record: ${where} should be an array of integers`);
  return Int32Array.from(v as number[]);
}

function floats(where: string, v: unknown): Float32Array {
  // JSON has no NaN: a non-finite log-prob arrives as null and stays NaN.
  if (!Array.isArray(v) || !v.every((x) => x === null || typeof x === 'number'))
    throw new Error(`remote record: ${where} should be an array of numbers`);
  return Float32Array.from(v as (number | null)[], (x) => (x === null ? NaN : x));
}

/**
 * An admin record (`attemptToJson`) back as an AttemptRecord. `images`: the task's images as this
 * side processes them; each recorded image is taken by its digest. With `expectedVersion`, a call
 * sampled by another weight version throws a StaleWeightsError.
 */
export function recordFromJson(
  json: Record<string, any>,
  o: { images: readonly ImageInput[]; expectedVersion?: number },
): AttemptRecord {
  const who = `attempt ${json.attempt_id} of rollout ${json.rollout_id}`;
  if (!Array.isArray(json.calls)) throw new Error(`remote record of ${who}: no calls array`);
  const byDigest = new Map(o.images.map((img) => [imageDigest(img), img]));
  const calls: RecordedCall[] = json.calls.map((c: any, k: number): RecordedCall => {
    const at = `${who}, call ${k}`;
    if (!Number.isInteger(c.weight_version)) throw new Error(`remote record: ${at} has no weight_version`);
    if (o.expectedVersion !== undefined && c.weight_version !== o.expectedVersion) {
      throw new StaleWeightsError(
        `${at} was sampled by weight version ${c.weight_version}, but this step trains on version ${o.expectedVersion}: ` +
          'completions of other weights are refused (no importance-sampling correction; docs/agents.md)',
        c.weight_version,
        o.expectedVersion,
      );
    }
    const images = ((c.images ?? []) as { grid_thw: number[]; sha256?: string }[]).map((im, i) => {
      const img = im.sha256 === undefined ? undefined : byDigest.get(im.sha256);
      if (!img)
        throw new Error(
          `remote record: ${at}, image ${i} (grid ${JSON.stringify(im.grid_thw)}, sha256 ${im.sha256 ?? 'none'}) is none of the task's images ` +
            `as this trainer processes them (${o.images.map((x) => JSON.stringify(x.gridThw)).join(', ') || 'none'}); ` +
            "the trainer trains only on images it can process again from the task files, with the server's processor settings",
        );
      return img;
    });
    return {
      index: c.index,
      id: c.id,
      messages: c.messages as ChatMessage[],
      prompt: { ids: ints(`${at} prompt_ids`, c.prompt_ids), images },
      templateIds: ints(`${at} template_ids`, c.template_ids),
      choices: (c.choices as any[]).map((ch, j) => {
        const tokenIds = ints(`${at} choice ${j} token_ids`, ch.token_ids);
        const logprobs = floats(`${at} choice ${j} logprobs`, ch.logprobs);
        if (logprobs.length !== tokenIds.length)
          throw new Error(
            `remote record: ${at} choice ${j}: ${tokenIds.length} token ids but ${logprobs.length} log-probs`,
          );
        return { text: ch.text, tokenIds, logprobs, finishReason: ch.finish_reason };
      }),
      sampling: c.sampling,
      weightVersion: c.weight_version,
      at: Date.now(),
    };
  });
  const events: GatewayEvent[] = (json.events ?? []).map((e: any) => ({
    eventId: e.event_id,
    eventType: e.event_type,
    data: e.data,
    timestamp: e.timestamp * 1000,
  }));
  return {
    rolloutId: json.rollout_id,
    attemptId: json.attempt_id,
    status: json.status,
    ...(json.weight_version === null ? {} : { weightVersion: json.weight_version }),
    calls,
    events,
    ...(json.reward === null ? {} : { reward: json.reward }),
    ...(json.error === null ? {} : { error: json.error }),
    exitCode: json.exit_code,
    timedOut: json.timed_out,
    ...(json.stdout_tail === null ? {} : { stdoutTail: json.stdout_tail }),
    ...(json.stderr_tail === null ? {} : { stderrTail: json.stderr_tail }),
    startedAt: json.started_at * 1000,
    ...(json.ended_at === null ? {} : { endedAt: json.ended_at * 1000 }),
  };
}

export interface RemoteAttemptsOptions {
  target: RemoteGatewayTarget;
  /** The weight version this step's rollouts sample with: attempts are bound to it, records checked against it. */
  weightVersion: number;
  /** The task's images as this side processes them (see the file comment). */
  images: (sample: VqaSample) => Promise<ImageInput[]>;
}

const path = (ids: { rolloutId: string; attemptId: string }) =>
  `/rollouts/${encodeURIComponent(ids.rolloutId)}/attempts/${encodeURIComponent(ids.attemptId)}`;

/** The attempts of a remote gateway (see the file comment). */
export class RemoteAttempts implements AttemptHost {
  private readonly samples = new Map<string, VqaSample>();
  constructor(private readonly o: RemoteAttemptsOptions) {}

  async open(ids: { rolloutId: string; attemptId: string }, sample: VqaSample): Promise<OpenedAttempt> {
    const r = await admin(this.o.target, 'POST', path(ids), { task: sample, weight_version: this.o.weightVersion });
    this.samples.set(path(ids), sample);
    return {
      rolloutId: ids.rolloutId,
      attemptId: ids.attemptId,
      baseUrl: r.base_url as string,
      eventUrl: r.event_url as string,
      key: r.key as string,
    };
  }

  async finish(ids: { rolloutId: string; attemptId: string }, info: FinishInfo): Promise<AttemptRecord> {
    const json = await admin(this.o.target, 'POST', `${path(ids)}/finish`, {
      exit_code: info.exitCode ?? null,
      signal: info.signal ?? undefined,
      timed_out: info.timedOut ?? false,
      error: info.error,
      stdout_tail: info.stdoutTail,
      stderr_tail: info.stderrTail,
    });
    const sample = this.samples.get(path(ids));
    const images = sample ? await this.o.images(sample) : [];
    try {
      return recordFromJson(json, { images, expectedVersion: this.o.weightVersion });
    } catch (err) {
      if (!(err instanceof StaleWeightsError)) throw err;
      // Refused, not trained on: the attempt fails with the reason (the runner logs it).
      const rec = recordFromJson(json, { images });
      rec.status = 'failed';
      rec.error = err.message;
      return rec;
    }
  }

  async release(ids: { rolloutId: string; attemptId: string }[]): Promise<void> {
    for (const id of ids) {
      await admin(this.o.target, 'DELETE', path(id));
      this.samples.delete(path(id));
    }
  }
}
