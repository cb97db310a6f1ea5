import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  SafetensorsFile,
  fromFloat32,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  toFloat32,
  writeSafetensors,
  type Tensor,
} from '../../src/util/safetensors.js';

const tmp = () => mkdtempSync(path.join(os.tmpdir(), 'vqalab-st-'));

/** A file written the way the format's reference writer lays it out, built byte by byte here. */
function handMade(header: object, data: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

test('round trip of every dtype through a file, with metadata, read tensor by tensor', async () => {
  const dir = tmp();
  const file = path.join(dir, 'a.safetensors');
  const tensors: Record<string, Tensor> = {
    'h.f16': fromFloat32(new Float32Array([1, -2.5, 0.1]), [3], 'F16'),
    'w.f32': { dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6.5]) },
    'i.i64': { dtype: 'I64', shape: [2], data: new BigInt64Array([-1n, 9007199254740993n]) },
    'b.bf16': fromFloat32(new Float32Array([3.14159265]), [], 'BF16'),
    'n.i32': { dtype: 'I32', shape: [1, 2], data: new Int32Array([-7, 2 ** 31 - 1]) },
    'u.u8': { dtype: 'U8', shape: [3], data: new Uint8Array([0, 128, 255]) },
    'e.empty': { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  };
  await writeSafetensors(file, tensors, { format: 'pt', note: 'x' });
  assert.deepEqual(readdirSync(dir), ['a.safetensors'], 'no temp file left');
  const bytes = readFileSync(file);
  const hlen = Number(bytes.readBigUInt64LE(0));
  assert.equal((8 + hlen) % 8, 0, 'header padded to 8 bytes');
  const header = JSON.parse(bytes.subarray(8, 8 + hlen).toString());
  assert.deepEqual(header.__metadata__, { format: 'pt', note: 'x' });
  // Largest element size first, so every tensor is aligned to its element size.
  assert.deepEqual(
    Object.keys(header).filter((k) => k !== '__metadata__'),
    ['i.i64', 'w.f32', 'n.i32', 'e.empty', 'h.f16', 'b.bf16', 'u.u8'],
  );
  for (const k of Object.keys(tensors)) {
    const [b] = header[k].data_offsets as [number, number];
    assert.equal((8 + hlen + b) % (k.endsWith('i64') ? 8 : 1), 0);
  }

  const f = await SafetensorsFile.open(file);
  try {
    assert.deepEqual(f.metadata, { format: 'pt', note: 'x' });
    assert.equal(f.names().length, 7);
    assert.deepEqual(f.info('w.f32'), { dtype: 'F32', shape: [2, 3], dataOffsets: [16, 40] });
    const w = await f.read('w.f32');
    assert.deepEqual([...(w.data as Float32Array)], [1, 2, 3, 4, 5, 6.5]);
    assert.deepEqual([...((await f.read('i.i64')).data as BigInt64Array)], [-1n, 9007199254740993n]);
    assert.deepEqual([...((await f.read('n.i32')).data as Int32Array)], [-7, 2 ** 31 - 1]);
    assert.deepEqual([...(await f.readFloat32('h.f16'))], [1, -2.5, Math.fround(0.0999755859375)]);
    const b = await f.read('b.bf16');
    assert.deepEqual(b.shape, []);
    assert.deepEqual([...toFloat32(b)], [3.140625]);
    assert.equal((await f.read('e.empty')).data.length, 0);
    await assert.rejects(f.read('missing'), /a\.safetensors: no tensor "missing" \(the file has 7: /);
  } finally {
    await f.close();
  }
  const all = await readSafetensors(file);
  assert.equal(all.tensors.size, 7);
  assert.deepEqual(parseSafetensors(bytes).tensors.get('u.u8')!.data, new Uint8Array([0, 128, 255]));
  assert.deepEqual(
    Buffer.from(serializeSafetensors(tensors, { format: 'pt', note: 'x' })),
    bytes,
    'in-memory and file writers agree',
  );
});

test('F16 and BF16 conversion rounds to nearest even, like numpy', () => {
  const v = new Float32Array([1.0, -2.5, 65504, 1e-8, 6e-8, 3.14159265, 0.1, 70000, -0.0]);
  // Expected bit patterns computed with numpy (astype(float16); bf16 by round-to-nearest-even).
  assert.deepEqual(
    [...(fromFloat32(v, [9], 'F16').data as Uint16Array)],
    [0x3c00, 0xc100, 0x7bff, 0x0, 0x1, 0x4248, 0x2e66, 0x7c00, 0x8000],
  );
  assert.deepEqual(
    [...(fromFloat32(v, [9], 'BF16').data as Uint16Array)],
    [0x3f80, 0xc020, 0x4780, 0x322c, 0x3381, 0x4049, 0x3dcd, 0x4789, 0x8000],
  );
  const back = toFloat32({ dtype: 'F16', shape: [4], data: new Uint16Array([0x7c00, 0xfc00, 0x7e00, 0x0001]) });
  assert.deepEqual(
    [back[0], back[1], Number.isNaN(back[2]), back[3]],
    [Infinity, -Infinity, true, Math.fround(2 ** -24)],
  );
  assert.ok(Number.isNaN(toFloat32(fromFloat32(new Float32Array([NaN]), [1], 'BF16'))[0]));
});

test('reads a hand-made file without padding, with unaligned tensors', async () => {
  const data = new Uint8Array(1 + 4);
  data[0] = 7;
  new DataView(data.buffer).setFloat32(1, 1.5, true);
  const file = path.join(tmp(), 'odd.safetensors');
  writeFileSync(
    file,
    handMade(
      { a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, b: { dtype: 'F32', shape: [1], data_offsets: [1, 5] } },
      data,
    ),
  );
  const { tensors, metadata } = await readSafetensors(file);
  assert.deepEqual(metadata, {});
  assert.deepEqual([...(tensors.get('b')!.data as Float32Array)], [1.5]);
});

test('bad files fail with the file, the tensor and what was expected', async () => {
  const dir = tmp();
  const write = (name: string, buf: Buffer) => {
    const p = path.join(dir, name);
    writeFileSync(p, buf);
    return p;
  };
  const f4 = new Uint8Array(8);
  await assert.rejects(
    SafetensorsFile.open(write('short.safetensors', Buffer.alloc(3))),
    /short\.safetensors: invalid safetensors file: file is 3 bytes, shorter than the 8-byte header length/,
  );
  const big = Buffer.alloc(16);
  big.writeBigUInt64LE(1000n);
  await assert.rejects(
    SafetensorsFile.open(write('len.safetensors', big)),
    /len\.safetensors: .*header length 1000 exceeds the file \(16 bytes\)/,
  );
  const notJson = Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{x')]);
  await assert.rejects(
    SafetensorsFile.open(write('json.safetensors', notJson)),
    /json\.safetensors: invalid safetensors file: header is not JSON/,
  );
  await assert.rejects(
    SafetensorsFile.open(
      write('dtype.safetensors', handMade({ t: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2))),
    ),
    /dtype\.safetensors: invalid safetensors file: tensor "t": dtype "F8" is not one of F64, F32/,
  );
  await assert.rejects(
    SafetensorsFile.open(
      write('span.safetensors', handMade({ t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f4)),
    ),
    /tensor "t": F32 \[3\] needs 12 bytes but data_offsets \[0,8\] span 8/,
  );
  await assert.rejects(
    SafetensorsFile.open(
      write('trunc.safetensors', handMade({ t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f4)),
    ),
    /tensor "t": data_offsets \[0,16\] run past the end of the data \(8 bytes; file truncated\?\)/,
  );
  await assert.rejects(
    SafetensorsFile.open(
      write('hole.safetensors', handMade({ t: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f4)),
    ),
    /tensor "t": data at byte 4 leaves a hole after byte 0/,
  );
  await assert.rejects(
    SafetensorsFile.open(write('meta.safetensors', handMade({ __metadata__: { a: 1 } }, new Uint8Array(0)))),
    /__metadata__ must be an object of strings/,
  );
});

test('writer validates its arguments with exact messages', async () => {
  const file = path.join(tmp(), 'w.safetensors');
  await assert.rejects(writeSafetensors(file, { t: { dtype: 'F32', shape: [2], data: new Float64Array(2) } }), {
    message: 'Expected a Float32Array for dtype F32 for tensors["t"].data but received an object of type Float64Array',
  });
  await assert.rejects(writeSafetensors(file, { t: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), {
    message: 'Expected 3 elements for tensors["t"].data (shape [3]) but received 2',
  });
  await assert.rejects(
    writeSafetensors(file, { t: { dtype: 'X' as 'F32', shape: [1], data: new Float32Array(1) } }),
    /Expected one of F64, F32, .* for tensors\["t"\]\.dtype but received "X" of type string/,
  );
  assert.deepEqual(readdirSync(path.dirname(file)), []);
});

test('reads a file written by the safetensors library itself (torch tensors, metadata)', async () => {
  const dir = path.resolve('test/fixtures/safetensors');
  const expected = JSON.parse(readFileSync(path.join(dir, 'reference.json'), 'utf8')) as Record<
    string,
    { dtype: string; shape: number[]; values: (number | string)[] }
  >;
  const f = await SafetensorsFile.open(path.join(dir, 'reference.safetensors'));
  try {
    assert.deepEqual(f.metadata, { format: 'pt', made_by: 'safetensors.torch' });
    assert.deepEqual(f.names().sort(), Object.keys(expected).sort());
    const dtypes: Record<string, string> = {
      float32: 'F32',
      float16: 'F16',
      bfloat16: 'BF16',
      int32: 'I32',
      int64: 'I64',
      uint8: 'U8',
      float64: 'F64',
    };
    for (const [name, e] of Object.entries(expected)) {
      const t = await f.read(name);
      assert.equal(t.dtype, dtypes[e.dtype], name);
      assert.deepEqual(t.shape, e.shape, name);
      if (t.dtype === 'I64') assert.deepEqual([...(t.data as BigInt64Array)].map(String), e.values, name);
      else assert.deepEqual([...toFloat32(t)], (e.values as number[]).map(Math.fround), name);
    }
  } finally {
    await f.close();
  }
});
