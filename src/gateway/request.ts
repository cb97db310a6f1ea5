/**
 * Request plumbing shared by the gateway's routes: bearer-key checks, bodies read under a size
 * limit (413 rather than unbounded memory from a hostile client), JSON object bodies with clear
 * 400s. Kept apart so the attempt routes, the admin routes and the event endpoint read bodies alike.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { ApiError, badRequest } from '../serve/errors.js';

export const MiB = 1 << 20;

/** Whether the request's bearer key is `key` (compared in constant time: keys are secrets). */
export function keyOk(req: IncomingMessage, key: string): 'missing' | 'wrong' | 'ok' {
  const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return 'missing';
  const a = Buffer.from(m[1]!.trim()),
    b = Buffer.from(key);
  return a.length === b.length && timingSafeEqual(a, b) ? 'ok' : 'wrong';
}

/**
 * Read at most `max` bytes; more is 413. A body up to 16× the limit is read to its end first (and
 * dropped), so the client, still sending, gets the 413 rather than a reset connection; a larger
 * one is cut off.
 */
export function readLimited(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (n: number) =>
      new ApiError(
        413,
        `the event body is ${n > 0 ? `${(n / MiB).toFixed(1)} MiB` : 'too large'}, more than the gateway's limit of ${(max / MiB).toFixed(2)} MiB`,
        'invalid_request_error',
        null,
        'request_too_large',
        { connection: 'close' },
      );
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > 16 * max) {
      req.resume();
      return reject(tooLarge(declared));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        if (!over) {
          over = true;
          chunks.length = 0;
        }
        if (size > 16 * max) req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => (over ? reject(tooLarge(size)) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

/** The JSON type of a value, for error messages ("null", "array", "string", ...). */
export function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** A JSON object body (an empty body is `{}`), else a clear 400. */
export async function readJsonObject(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  const raw = (await readLimited(req, max)).toString('utf8');
  if (raw.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (err) {
    throw badRequest(`the body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw badRequest(`the body must be a JSON object; got ${typeName(v)}`, null, 'invalid_body');
  return v as Record<string, unknown>;
}
