import assert from 'node:assert/strict';
import { test } from 'node:test';
import { captureStdio } from './stdio.js';

test('process output is routed while captured; unrouted writes and the real writer reach the real stream', async () => {
  const routed: string[] = [];
  let on = true;
  const realWrites: string[] = [];
  const realWrite = process.stderr.write;
  // Observe what reaches the "real" stderr by wrapping it before capture.
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    realWrites.push(String(chunk));
    return (realWrite as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
  }) as typeof process.stderr.write;
  const stdio = captureStdio((name, text) => {
    if (!on) return false;
    routed.push(`${name}:${text}`);
    return true;
  });
  try {
    console.log('from console.log');
    process.stdout.write(Buffer.from('bytes \xe2\x82', 'latin1'));
    process.stdout.write(Buffer.from('\xac!\n', 'latin1')); // a UTF-8 € split across two writes
    await new Promise<void>((resolve) => process.stderr.write('with callback\n', () => resolve()));
    on = false;
    process.stderr.write('not routed\n');
    stdio.writeReal('stderr', 'kernel log\n');
  } finally {
    stdio.restore();
    process.stderr.write = realWrite;
  }
  assert.deepEqual(routed, ['stdout:from console.log\n', 'stdout:bytes ', 'stdout:€!\n', 'stderr:with callback\n']);
  assert.deepEqual(realWrites, ['not routed\n', 'kernel log\n']);
});
