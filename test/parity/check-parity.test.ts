import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readSafetensors, writeSafetensors } from '../../src/util/safetensors.js';
import { findCases, runParity } from '../../src/parity/run.js';

const BIN = path.resolve('bin/vqalab.js');
const FIX = path.resolve('test/fixtures/vision');
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, 'check-parity', ...args], { encoding: 'utf8' });

test('check-parity passes on the committed vision fixtures and prints the worst errors', () => {
  const r = cli(FIX, '--top', '30');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^ok   vision   qwen2vl-pil: 21 measurements$/m);
  assert.match(r.stdout, /worst 21 of 21 measurements/);
  assert.match(
    r.stdout,
    /odd_61x47 mean_abs: 0 \/ 0\.01000  \(resized HxW 61x47 -> 56x56 \(pil-bicubic\); max_abs 0\.000e\+0/,
  );
  assert.match(r.stdout, /toowide_30x6100 refused: 0 \/ 0 +\(both refuse/);
  assert.match(r.stdout, /check-parity: all 1 checks passed/);
});

test('check-parity fails, naming the image, when a fixture value is off by more than 1e-6', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-par-'));
  cpSync(path.join(FIX, 'qwen2vl-pil'), path.join(dir, 'case'), { recursive: true });
  const file = path.join(dir, 'case', 'inputs.safetensors');
  const { tensors } = await readSafetensors(file);
  const pv = tensors.get('plain_56x84.pixel_values')!;
  (pv.data as Float32Array)[1234] += 1e-4;
  await writeSafetensors(file, tensors);
  const r = cli(dir, '--top', '3');
  assert.equal(r.status, 1);
  assert.match(r.stdout, /^FAIL vision   case: 21 measurements, 1 beyond tolerance$/m);
  assert.match(
    r.stdout,
    /FAIL case plain_56x84 max_abs: 1\.00e-4 \/ 1\.00e-6 +\(no resize \(HxW 56x84\); .*worst at patch 1, value 58\)/,
  );
  assert.match(r.stdout, /check-parity: 1 of 1 checks FAILED/);
});

test('the libvips resampler is measured too, and fails the mean tolerance on upscaled images', () => {
  const r = cli(FIX, '--set', 'vision.resample=sharp-cubic', '--json');
  assert.equal(r.status, 1);
  const results = JSON.parse(r.stdout);
  const m = results[0].measurements.find((x: { name: string }) => x.name === 'odd_61x47 mean_abs');
  assert.ok(m.value > 0.01, `sharp-cubic mean error ${m.value}`);
});

test('cases: discovery, malformed meta, and a case no checker applies to', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-par-'));
  mkdirSync(path.join(dir, 'a', 'images'), { recursive: true });
  writeFileSync(
    path.join(dir, 'a', 'meta.json'),
    '{"images": {"x": {"grid_thw": [1, 2, 2], "min_pixels": 1, "max_pixels": 9}}',
  );
  mkdirSync(path.join(dir, 'b', 'deeper'), { recursive: true });
  writeFileSync(path.join(dir, 'b', 'deeper', 'meta.json'), '{"prefix": [1, 2]}');
  mkdirSync(path.join(dir, 'c'), { recursive: true });
  writeFileSync(path.join(dir, 'c', 'meta.json'), '[]');
  assert.deepEqual(
    findCases(dir).map((d) => path.relative(dir, d)),
    ['a', 'b/deeper', 'c'],
  );
  const results = await runParity(dir, { device: 'cpu', settings: {} });
  assert.deepEqual(
    results.map((r) => [r.caseName, r.ok]),
    [
      ['a', false],
      ['b/deeper', false],
      ['c', false],
    ],
  );
  assert.match(results[0]!.error!, /a\/meta\.json: not valid JSON/);
  assert.match(results[1]!.error!, /no checker applies to this case \(registered: vision, engine\)/);
  assert.match(results[2]!.error!, /c\/meta\.json: expected a JSON object/);
  // A vision case whose meta misses a field names the file and the field.
  writeFileSync(
    path.join(dir, 'a', 'meta.json'),
    '{"images": {"x": {"grid_thw": [1, 2], "min_pixels": 1, "max_pixels": 9}}}',
  );
  writeFileSync(
    path.join(dir, 'a', 'inputs.safetensors'),
    readFileSync(path.join(FIX, 'qwen2vl-pil', 'inputs.safetensors')),
  );
  cpSync(path.join(FIX, 'qwen2vl-pil', 'images', 'plain_56x84.png'), path.join(dir, 'a', 'images', 'x.png'));
  const [a] = await runParity(path.join(dir, 'a'), { device: 'cpu', settings: {} });
  assert.match(a!.error!, /a\/meta\.json: images\.x\.grid_thw: expected \[t, h, w\] positive integers, got \[1,2\]/);
});

test('check-parity usage errors', () => {
  const none = cli();
  assert.equal(none.status, 2);
  assert.match(none.stderr, /missing DIR/);
  const bad = cli('/nonexistent/dir');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /\/nonexistent\/dir: no such folder/);
  assert.equal(cli(FIX, '--device', 'tpu').status, 2);
  const help = cli('--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Usage: vqalab check-parity DIR/);
});
