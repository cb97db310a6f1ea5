/** Reading a request body under a size cap (413 with OpenAI's error shape past it). */
import type { IncomingMessage } from 'node:http';
import { ApiError } from './errors.js';

const MiB = 1 << 20;

/**
 * Read the body, refusing more than `max` bytes with 413 (the rest is drained, then the connection
 * closed). The bytes are copied into one buffer as they arrive (sized from Content-Length, else
 * grown by doubling), so a large body costs many small copies spread over the event loop rather
 * than one long concatenation at the end.
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (n: number) =>
      new ApiError(
        413,
        `the request body is ${n > 0 ? `${(n / MiB).toFixed(1)} MiB` : 'too large'}, more than this server's limit of ${(max / MiB).toFixed(1)} MiB`,
        'invalid_request_error',
        null,
        'request_too_large',
        { connection: 'close' },
      );
    if (Number.isFinite(declared) && declared > max) {
      req.resume();
      return reject(tooLarge(declared));
    }
    let buf = Buffer.allocUnsafeSlow(Number.isFinite(declared) && declared > 0 ? declared : 16 * 1024);
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over || size + c.length > max) {
        over = true;
        size += c.length;
        if (size > 4 * max) req.destroy(); // a client that keeps sending after the limit is cut off
        return;
      }
      if (size + c.length > buf.length) {
        const grown = Buffer.allocUnsafeSlow(Math.min(max, Math.max(2 * buf.length, size + c.length)));
        buf.copy(grown, 0, 0, size);
        buf = grown;
      }
      c.copy(buf, size);
      size += c.length;
    });
    req.on('end', () => (over ? reject(tooLarge(size)) : resolve(buf.subarray(0, size))));
    req.on('error', reject);
  });
}
