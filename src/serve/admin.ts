/**
 * /admin/weights (enabled by `adminKey`): PUT takes pushed weights and switches to them between
 * requests; GET reports the version served (src/serve/weights.ts holds the format and the switch).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { checkKey } from './auth.js';
import { readBody } from './body.js';
import type { ServeContext } from './context.js';
import { ApiError, sendJson } from './errors.js';
import { applyWeights, decodeWeights, WEIGHT_VERSION_HEADER } from './weights.js';

const MiB = 1 << 20;

export async function adminWeights(
  ctx: Pick<ServeContext, 'policy' | 'weights' | 'maxWeightBytes' | 'log' | 'closing'>,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  adminKey: string,
): Promise<void> {
  const { policy, weights, log } = ctx;
  if (method !== 'PUT' && method !== 'GET')
    throw new ApiError(
      405,
      `${method} is not allowed on /admin/weights; use PUT or GET`,
      'invalid_request_error',
      null,
      'method_not_allowed',
      { allow: 'PUT, GET' },
    );
  try {
    checkKey(req, adminKey);
  } catch (err) {
    req.resume();
    throw err;
  }
  if (method === 'GET')
    return sendJson(
      res,
      200,
      { weight_version: weights.version, requests_sampling: weights.readers },
      { [WEIGHT_VERSION_HEADER]: String(weights.version) },
    );
  if (ctx.closing) {
    req.resume();
    throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down');
  }
  const body = await readBody(req, ctx.maxWeightBytes);
  const t0 = performance.now();
  const push = decodeWeights(policy.model, body);
  const waiting = weights.readers;
  await weights.swap(push.version, () => applyWeights(policy.model, push.tensors));
  log?.(
    `weights: version ${push.version} (${push.kind}, ${push.tensors.size} tensors, ${(body.byteLength / MiB).toFixed(1)} MiB) after ${waiting} running request(s), ${(performance.now() - t0).toFixed(0)} ms`,
  );
  sendJson(
    res,
    200,
    {
      weight_version: push.version,
      kind: push.kind,
      tensors: push.tensors.size,
      bytes: body.byteLength,
      waited_for: waiting,
    },
    { [WEIGHT_VERSION_HEADER]: String(push.version) },
  );
}
