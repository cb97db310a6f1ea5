/**
 * The admin routes, for a runner in another process (another machine) that holds the admin key:
 * POST /rollouts/{r}/attempts/{a} opens an attempt (its URLs and key come back), POST …/finish
 * closes it, GET …/ returns its record as JSON, DELETE …/ forgets it (after training on it). They go through the Gateway's public methods only,
 * so a remote runner gets exactly what an in-process one does.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, badRequest, sendJson } from '../serve/errors.js';
import type { Gateway } from './gateway.js';
import { type AttemptEndpoint, attemptToJson } from './records.js';
import { readJsonObject } from './request.js';

/**
 * Serve one admin request (the caller showed the admin key); `rest` is the path after the attempt.
 */
export async function adminRoute(
  gw: Gateway,
  maxBodyBytes: number,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  url: string,
  rolloutId: string,
  attemptId: string,
  rest: string,
): Promise<void> {
  const rec = () => {
    const r = gw.attempt(rolloutId, attemptId);
    if (!r)
      throw new ApiError(
        404,
        `unknown attempt ${JSON.stringify(attemptId)} of rollout ${JSON.stringify(rolloutId)}`,
        'not_found_error',
        null,
        'attempt_not_found',
      );
    return r;
  };
  if (rest === '' && method === 'POST') {
    const b = await readJsonObject(req, maxBodyBytes);
    if (gw.attempt(rolloutId, attemptId) !== undefined) {
      throw new ApiError(
        409,
        `attempt ${attemptId} of rollout ${rolloutId} already exists`,
        'invalid_request_error',
        null,
        'attempt_exists',
      );
    }
    let ep: AttemptEndpoint;
    try {
      ep = gw.openAttempt({
        rolloutId,
        attemptId,
        task: b.task,
        ...(b.weight_version !== undefined && b.weight_version !== null
          ? { weightVersion: b.weight_version as number }
          : {}),
      });
    } catch (err) {
      throw badRequest((err as Error).message, null, 'invalid_value');
    }
    return sendJson(res, 201, {
      rollout_id: ep.rolloutId,
      attempt_id: ep.attemptId,
      base_url: ep.baseUrl,
      event_url: ep.eventUrl,
      key: ep.key,
      weight_version: ep.record.weightVersion ?? null,
      serving_version: gw.weightVersion,
    });
  }
  if (rest === '' && method === 'GET') return sendJson(res, 200, attemptToJson(rec()));
  if (rest === '' && method === 'DELETE') {
    const r = rec();
    if (r.status === 'running')
      throw new ApiError(
        409,
        `attempt ${attemptId} of rollout ${rolloutId} is still running; finish it before releasing its record`,
        'invalid_request_error',
        null,
        'attempt_running',
      );
    gw.release(rolloutId, attemptId);
    return sendJson(res, 200, { rollout_id: rolloutId, attempt_id: attemptId, released: true });
  }
  if (rest === '/finish' && method === 'POST') {
    const b = await readJsonObject(req, maxBodyBytes);
    const r = rec();
    const str = (k: string) => (typeof b[k] === 'string' ? (b[k] as string) : undefined);
    const done = gw.finishAttempt(r.rolloutId, r.attemptId, {
      exitCode: typeof b.exit_code === 'number' ? b.exit_code : null,
      signal: str('signal') ?? null,
      timedOut: b.timed_out === true,
      error: str('error'),
      stdoutTail: str('stdout_tail'),
      stderrTail: str('stderr_tail'),
    });
    return sendJson(res, 200, attemptToJson(done));
  }
  throw new ApiError(
    404,
    `no admin route ${method} ${url}; use POST, GET or DELETE /rollouts/{r}/attempts/{a}, POST …/finish`,
    'not_found_error',
    null,
    'unknown_url',
  );
}
