/** Bearer-key checks for the /v1 routes (apiKey) and /admin/weights (adminKey). */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { ApiError } from './errors.js';

/** Throws 401 unless the request carries `Authorization: Bearer <apiKey>` (compared in constant time). */
export function checkKey(req: IncomingMessage, apiKey: string): void {
  const auth = req.headers.authorization ?? '';
  const m = /^Bearer\s+(.+)$/i.exec(auth);
  const ok =
    m !== null &&
    (() => {
      const a = Buffer.from(m[1]!.trim()),
        b = Buffer.from(apiKey);
      return a.length === b.length && timingSafeEqual(a, b);
    })();
  if (!ok) {
    throw new ApiError(
      401,
      m ? 'Incorrect API key provided' : 'Missing API key: send "Authorization: Bearer <key>"',
      'invalid_request_error',
      null,
      'invalid_api_key',
      { 'www-authenticate': 'Bearer' },
    );
  }
}
