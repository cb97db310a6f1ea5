/**
 * Hostile model folders (issue 20, defect 3): corrupt configs and safetensors files are refused
 * with an error naming the file and the field, before the engine allocates anything; a FIFO as
 * the weights does not hang the loader.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import { DEFAULT_MODEL_DIR } from '../../src/model/default.js';

let root: string;
let n = 0;

before(() => {
  root = mkdtempSync(path.join(tmpdir(), 'vqalab-hostile-loader-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A copy of the tiny model with its config edited. */
function folder(edit: (cfg: any) => void = () => undefined): string {
  const dir = path.join(root, `m${++n}`);
  execFileSync('mkdir', ['-p', dir]);
  for (const f of readdirSync(DEFAULT_MODEL_DIR)) copyFileSync(path.join(DEFAULT_MODEL_DIR, f), path.join(dir, f));
  const cfg = JSON.parse(readFileSync(path.join(dir, 'config.json'), 'utf8'));
  edit(cfg);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

async function refused(dir: string, re: RegExp): Promise<string> {
  const rss0 = process.memoryUsage().rss;
  let msg = '';
  await assert.rejects(loadModel(dir, { threads: 1 }), (err: Error) => {
    msg = err.message;
    return true;
  });
  assert.match(msg, re);
  // Refused before allocating: far less than the gigabytes such a config would need.
  assert.ok(
    process.memoryUsage().rss - rss0 < 256 << 20,
    `RSS grew by ${(process.memoryUsage().rss - rss0) >> 20} MiB`,
  );
  return msg;
}

/** A safetensors file from a header object and a data section. */
function safetensors(file: string, header: unknown, data: Buffer, rawHeader?: string): string {
  const h = Buffer.from(rawHeader ?? JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  writeFileSync(file, Buffer.concat([len, h, data]));
  return file;
}

describe('configs that would exhaust memory are refused before any allocation, naming file and field', () => {
  const cases: [string, (c: any) => void, RegExp][] = [
    [
      'hidden_size 1e12',
      (c) => {
        c.hidden_size = 1e12;
        c.num_attention_heads = 4;
        c.vision_config.hidden_size = 1e12;
        c.rope_scaling.mrope_section = [1.25e11, 0, 0];
      },
      /config\.json: hidden_size is 1000000000000; expected an integer from 1 to 65,536/,
    ],
    [
      'vocab_size 2^31',
      (c) => {
        c.vocab_size = 2 ** 31;
      },
      /config\.json: vocab_size is 2147483648; expected an integer from 1 to/,
    ],
    [
      'num_hidden_layers 1e9',
      (c) => {
        c.num_hidden_layers = 1e9;
      },
      /config\.json: num_hidden_layers is 1000000000; expected an integer from 1 to 1,024/,
    ],
    [
      'vision_config.depth 1e8',
      (c) => {
        c.vision_config.depth = 1e8;
      },
      /config\.json: vision_config\.depth is 100000000; expected an integer from 0 to 1,024/,
    ],
    [
      'rms_norm_eps -1',
      (c) => {
        c.rms_norm_eps = -1;
      },
      /config\.json: rms_norm_eps is -1; expected a finite number > 0/,
    ],
    [
      'rope_theta 0',
      (c) => {
        c.rope_theta = 0;
      },
      /config\.json: rope_theta is 0; expected a finite number > 0/,
    ],
    [
      '810 M parameters over the 4.5 MB tiny weights',
      (c) => {
        c.num_hidden_layers = 24;
        c.intermediate_size = 200_000;
      },
      /config\.json: the config describes [\d,]+ parameters .* but the weight files hold 4,534,736 bytes/,
    ],
  ];
  for (const [name, edit, re] of cases)
    test(name, async () => {
      await refused(folder(edit), re);
    });

  test('the tiny model itself still loads', async () => {
    const m = await loadModel(folder(), { threads: 1 });
    m.dispose();
  });
});

describe('corrupt weight files', () => {
  test('a FIFO as model.safetensors is refused, not read forever', async () => {
    const dir = folder();
    rmSync(path.join(dir, 'model.safetensors'));
    execFileSync('mkfifo', [path.join(dir, 'model.safetensors')]);
    await refused(dir, /model\.safetensors: not a regular file \(a FIFO\)/);
    // The native reader refuses it too (it would block in open() without O_NONBLOCK).
    assert.throws(
      () => native()._readSafetensors(path.join(dir, 'model.safetensors')),
      /not a regular file \(a FIFO\)/,
    );
  });

  test('overlapping data_offsets are refused', () => {
    const f = safetensors(
      path.join(root, 'overlap.safetensors'),
      {
        a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
      },
      Buffer.alloc(24),
    );
    assert.throws(
      () => native()._readSafetensors(f),
      /overlap\.safetensors: tensors a \(bytes 0 to 16\) and b \(bytes 8 to 24\) overlap in data_offsets/,
    );
  });

  test('a header with invalid JSON ("shape":[0x40]) is refused', () => {
    const f = safetensors(
      path.join(root, 'hex.safetensors'),
      null,
      Buffer.alloc(256),
      '{"a":{"dtype":"F32","shape":[0x40],"data_offsets":[0,256]}}',
    );
    assert.throws(
      () => native()._readSafetensors(f),
      /hex\.safetensors \(safetensors header\): invalid JSON at byte \d+: malformed number/,
    );
  });

  test('shapes that are not whole numbers, and truncated or absurd headers, are refused', () => {
    let f = safetensors(
      path.join(root, 'frac.safetensors'),
      { a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } },
      Buffer.alloc(4),
    );
    assert.throws(
      () => native()._readSafetensors(f),
      /frac\.safetensors: tensor a: shape must hold non-negative integers/,
    );
    f = safetensors(
      path.join(root, 'neg.safetensors'),
      { a: { dtype: 'F32', shape: [-4], data_offsets: [0, 16] } },
      Buffer.alloc(16),
    );
    assert.throws(
      () => native()._readSafetensors(f),
      /neg\.safetensors: tensor a: shape must hold non-negative integers/,
    );
    f = safetensors(
      path.join(root, 'huge.safetensors'),
      { a: { dtype: 'F32', shape: [1e9, 1e9], data_offsets: [0, 16] } },
      Buffer.alloc(16),
    );
    assert.throws(
      () => native()._readSafetensors(f),
      /huge\.safetensors: tensor a has shape .* more elements than the file/,
    );
    f = path.join(root, 'short.safetensors');
    writeFileSync(f, Buffer.from([255, 255, 255, 255, 0, 0, 0, 0, 1, 2]));
    assert.throws(() => native()._readSafetensors(f), /short\.safetensors: not a safetensors file \(header length/);
  });

  test('a truncated model.safetensors is refused naming the tensor', async () => {
    const dir = folder();
    const file = path.join(dir, 'model.safetensors');
    const bytes = readFileSync(file);
    writeFileSync(file, bytes.subarray(0, bytes.length - 1000));
    await assert.rejects(loadModel(dir, { threads: 1 }), /model\.safetensors|parameters/);
  });
});
