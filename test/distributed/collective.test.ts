/**
 * The native cpu collective (native/src/collective_cpu.cc) over real loopback sockets: three ranks in
 * this process (each blocking call runs on its own libuv thread), their sums, broadcasts and barrier;
 * ranks that go out of step, and a rank that is gone, fail with errors naming the call and the rank.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, type NativeCollective } from '../../src/engine/native.js';

async function ranks(size: number, timeoutMs = 60_000): Promise<NativeCollective[]> {
  const id = native().collectiveId('cpu', '127.0.0.1');
  return Promise.all(
    Array.from({ length: size }, (_, rank) => native().createCollective({ backend: 'cpu', id, rank, size, timeoutMs })),
  );
}

test('three ranks: all-reduce sums in rank order, broadcast from any root, barrier', async () => {
  const cs = await ranks(3);
  try {
    assert.deepEqual(
      cs.map((c) => c.info()),
      [0, 1, 2].map((rank) => ({ rank, size: 3, backend: 'cpu' })),
    );
    // more than one chunk (2^20 floats) so the chunked path runs
    const n = (1 << 20) + 3;
    const inputs = cs.map((_, r) => Float32Array.from({ length: n }, (_, i) => (i % 7) * 0.1 + r));
    const sums = await Promise.all(cs.map((c, r) => c.allReduce(inputs[r]!)));
    const want = Float32Array.from({ length: n }, (_, i) =>
      Math.fround(Math.fround(inputs[0]![i]! + inputs[1]![i]!) + inputs[2]![i]!),
    );
    for (const s of sums) assert.deepEqual(s, want);
    const b = await Promise.all(cs.map((c, r) => c.broadcast(Float32Array.of(r, r * 10), 2)));
    for (const x of b) assert.deepEqual(x, Float32Array.of(2, 20));
    await Promise.all(cs.map((c) => c.barrier()));
  } finally {
    for (const c of cs) c.destroy();
  }
});

test('ranks out of step: the error names both calls', async () => {
  const [a, b] = await ranks(2);
  const pa = a!.allReduce(new Float32Array(4));
  const pb = b!.broadcast(new Float32Array(4), 0);
  await assert.rejects(pa, /out of step: rank 0 is in all_reduce #0 of 4 floats, rank 1 in broadcast #0 of 4/);
  b!.abort(); // rank 1 waits for a broadcast that will not come: aborting fails it now
  await assert.rejects(pb, /aborted|lost rank 0/);
  await assert.rejects(b!.allReduce(new Float32Array(1)), /aborted/);
  a!.destroy();
  b!.destroy();
});

test('a rank that is gone: the waiting rank fails naming it', async () => {
  const [a, b] = await ranks(2);
  b!.abort(); // shuts its socket down: rank 0 sees the connection close
  await assert.rejects(a!.allReduce(new Float32Array(8)), /rank 0 lost rank 1/);
  a!.destroy();
  b!.destroy();
});
