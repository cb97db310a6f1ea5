/**
 * The server's routing: mounted routes first (src/gateway), then /health (no auth, for load
 * balancers and scripts that wait for start-up), /admin/weights, and the /v1 routes behind the
 * API key. Errors are thrown as ApiError; server.ts turns them into OpenAI's JSON shape.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SampleStats } from '../engine/types.js';
import { adminWeights } from './admin.js';
import { checkKey } from './auth.js';
import type { ChatCompletions } from './chat.js';
import type { ServeContext } from './context.js';
import { ApiError, sendJson } from './errors.js';
import type { ServeOptions } from './options.js';

export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

export function router(
  ctx: ServeContext,
  options: Pick<ServeOptions, 'routes' | 'apiKey' | 'adminKey'>,
  chatCompletions: ChatCompletions,
  engineStats: () => SampleStats | null,
): Handler {
  const { policy, modelName, batching, weights, queue } = ctx;
  const created = Math.floor(Date.now() / 1000);
  const modelObject = () => ({
    id: modelName,
    object: 'model',
    created,
    owned_by: 'vqalab',
    max_model_len: policy.maxSequenceLength,
  });

  return async function handle(req, res) {
    const url = (req.url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const allow = (methods: string) => {
      if (!methods.split(', ').includes(method))
        throw new ApiError(
          405,
          `${method} is not allowed on ${url}; use ${methods}`,
          'invalid_request_error',
          null,
          'method_not_allowed',
          { allow: methods },
        );
    };
    if (options.routes && (await options.routes(req, res, url, { chatCompletions }))) return;
    if (url === '/health') {
      allow('GET');
      return sendJson(res, 200, {
        status: ctx.closing ? 'closing' : 'ok',
        model: modelName,
        batching,
        weight_version: weights.version,
        queue: queue.stats(),
        engine: engineStats(),
      });
    }
    if (url === '/admin/weights' && options.adminKey !== undefined)
      return adminWeights(ctx, req, res, method, options.adminKey);
    if (!url.startsWith('/v1/') && url !== '/v1')
      throw new ApiError(
        404,
        `no route ${method} ${url} (this server answers /v1/models and /v1/chat/completions)`,
        'not_found_error',
        null,
        'unknown_url',
      );
    if (options.apiKey !== undefined) checkKey(req, options.apiKey);
    if (ctx.closing)
      throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down');
    if (url === '/v1/models') {
      allow('GET');
      return sendJson(res, 200, { object: 'list', data: [modelObject()] });
    }
    if (url.startsWith('/v1/models/')) {
      allow('GET');
      const id = decodeURIComponent(url.slice('/v1/models/'.length));
      if (id !== modelName)
        throw new ApiError(404, `The model \`${id}\` does not exist`, 'not_found_error', 'model', 'model_not_found');
      return sendJson(res, 200, modelObject());
    }
    if (url === '/v1/chat/completions') {
      allow('POST');
      return chatCompletions(req, res);
    }
    throw new ApiError(
      404,
      `no route ${method} ${url} (this server answers /v1/models and /v1/chat/completions)`,
      'not_found_error',
      null,
      'unknown_url',
    );
  };
}
