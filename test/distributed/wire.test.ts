/** The rendezvous wire (src/distributed/wire.ts): typed arrays and non-finite numbers survive a round trip. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBody, encodeMessage } from '../../src/distributed/wire.js';
import { shardOf } from '../../src/distributed/sharded-model.js';

test('typed arrays, NaN and infinities come back as they went', () => {
  const msg = {
    ids: Int32Array.of(1, -2, 2 ** 30),
    lp: Float32Array.of(-0.5, Number.NaN, 3.25),
    id: Uint8Array.of(0, 255, 7),
    m: { loss: Number.NaN, peak: Number.POSITIVE_INFINITY, low: Number.NEGATIVE_INFINITY, ok: 1.5 },
    nested: [{ a: Float32Array.of(1) }],
  };
  const buf = encodeMessage(msg);
  assert.equal(buf.readUInt32BE(0), buf.length - 4);
  const back = decodeBody(buf.subarray(4)) as typeof msg;
  assert.deepEqual(back, msg);
  assert.ok(back.ids instanceof Int32Array && back.lp instanceof Float32Array && back.id instanceof Uint8Array);
});

test('shardOf: contiguous blocks covering every request once, sizes within one', () => {
  for (const size of [1, 2, 3, 4, 8])
    for (let n = 0; n <= 17; n++) {
      const blocks = Array.from({ length: size }, (_, r) => shardOf(n, r, size));
      assert.equal(blocks[0]![0], 0);
      assert.equal(blocks.at(-1)![1], n);
      for (let r = 1; r < size; r++) assert.equal(blocks[r]![0], blocks[r - 1]![1]);
      const lens = blocks.map(([a, b]) => b - a);
      assert.ok(Math.max(...lens) - Math.min(...lens) <= 1, `n ${n} size ${size}: ${lens}`);
    }
});
