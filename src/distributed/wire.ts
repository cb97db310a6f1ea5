/**
 * The wire of the rendezvous (src/distributed/rendezvous.ts): JSON messages in length-prefixed frames
 * over TCP. Typed arrays (token ids, log-probs, the collective's id) travel as base64 with their type,
 * and come back as the same typed arrays; NaN and ±Infinity (metrics) survive as tagged values.
 */
import type { Socket } from 'node:net';

function encodeValue(_key: string, v: unknown): unknown {
  if (v instanceof Float32Array)
    return { $ta: 'f32', b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  if (v instanceof Int32Array)
    return { $ta: 'i32', b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  if (v instanceof Uint8Array && !Buffer.isBuffer(v)) return { $ta: 'u8', b64: Buffer.from(v).toString('base64') };
  if (typeof v === 'number' && !Number.isFinite(v)) return { $num: String(v) };
  return v;
}

function decodeValue(_key: string, v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  const t = v as Partial<Record<string, unknown>>;
  if (typeof t.$num === 'string') return Number(t.$num);
  if (typeof t.$ta !== 'string' || typeof t.b64 !== 'string') return v;
  const buf = Buffer.from(t.b64, 'base64');
  // copy into an aligned buffer of its own (a Buffer's offset need not be a multiple of 4)
  const bytes = new Uint8Array(buf.length);
  bytes.set(buf);
  if (t.$ta === 'f32') return new Float32Array(bytes.buffer, 0, bytes.length / 4);
  if (t.$ta === 'i32') return new Int32Array(bytes.buffer, 0, bytes.length / 4);
  return bytes;
}

/** Typed arrays and non-finite numbers kept; everything else as JSON. */
export function encodeMessage(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg, encodeValue), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

export function decodeBody(body: Buffer): unknown {
  return JSON.parse(body.toString('utf8'), decodeValue) as unknown;
}

/** Calls `onMessage` with each whole message read from `socket`, in order. */
export function readMessages(socket: Socket, onMessage: (msg: unknown) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 4) {
      const n = pending.readUInt32BE(0);
      if (pending.length < 4 + n) break;
      const body = pending.subarray(4, 4 + n);
      pending = pending.subarray(4 + n);
      onMessage(decodeBody(body));
    }
  });
}

export function sendMessage(socket: Socket, msg: unknown): void {
  if (!socket.destroyed) socket.write(encodeMessage(msg));
}
