/**
 * The CUDA backend (issue 10) from node: its op tests and model checks (native/dev, built by
 * scripts/gpu/cuda.mk) and the engine's transformers parity cases on device 'cuda', when this build
 * has the backend and a GPU is visible; skipped with the reason otherwise (CI has no GPU). The
 * option checks of loadModel's `cuda` field run everywhere (they fail before any native call).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../src/engine/model.js';
import { native } from '../../src/engine/native.js';
import { checkEngineCase } from '../../src/parity/engine.js';
import type { SampleResult } from '../../src/engine/types.js';

// VQALAB_ROOT: the tree that holds native/build/cuda and test/fixtures when this file runs bundled
// (scripts/gpu/run-all.sh on a GPU machine without npm); else the repository above dist/test/cuda.
const root = process.env.VQALAB_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
// VQALAB_CUDA_TEST_LOGS: a folder that receives each program's full output (<name>.log).
const logs = process.env.VQALAB_CUDA_TEST_LOGS;
const bin = (name: string) => path.join(root, 'native', 'build', 'cuda', name);
const fixtures = path.join(root, 'test', 'fixtures', 'engine');

function cudaState(): { available: boolean; reason: string } {
  const c = native()._cuda();
  if (!c.built) return { available: false, reason: c.reason ?? 'this build has no CUDA backend' };
  if (!c.available) return { available: false, reason: c.reason ?? 'no CUDA device is visible' };
  return { available: true, reason: '' };
}

/** Runs a native/dev program; returns its output, or the reason to skip. */
function runProgram(name: string, args: string[] = []): { skip?: string; status?: number; out?: string } {
  const state = cudaState();
  if (!state.available) return { skip: state.reason };
  if (!existsSync(bin(name))) return { skip: `${bin(name)} is not built (make -f scripts/gpu/cuda.mk tests)` };
  const r = spawnSync(bin(name), args, { encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20 });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? `\n${r.error.message}` : ''}${r.signal ? `\nkilled by ${r.signal}` : ''}`;
  if (logs) writeFileSync(path.join(logs, `${name}.log`), out);
  return { status: r.status ?? -1, out };
}

/**
 * Asserts that a program's summary line (`<label>: N passed, M failed`) counts no failure (the
 * message lists its FAIL lines) and that it exited 0; returns N.
 */
function assertNoFailures(r: { status?: number; out?: string }, name: string, label: string, what: string): number {
  const summary = new RegExp(`${label}: (\\d+) passed, (\\d+) failed`).exec(r.out ?? '');
  assert.ok(summary, `no summary line in ${name} output:\n${r.out?.slice(-2000)}`);
  const fails = (r.out ?? '')
    .split('\n')
    .filter((l) => l.startsWith('FAIL'))
    .join('\n');
  assert.equal(summary[2], '0', `failing ${what} checks:\n${fails}`);
  assert.equal(r.status, 0);
  return Number(summary[1]);
}

test('CUDA op tests: every op against the CPU reference (fp32 and bf16, fused attention and cuBLASLt paths)', (t) => {
  const r = runProgram('test_ops');
  if (r.skip) return t.skip(r.skip);
  const passed = assertNoFailures(r, 'test_ops', 'ops', 'op');
  assert.ok(passed > 400, `only ${passed} op checks ran`);
});

test('CUDA model checks: the model on the GPU against the CPU engine (packing, checkpointing, sample_many, offload)', (t) => {
  const r = runProgram('test_model');
  if (r.skip) return t.skip(r.skip);
  assertNoFailures(r, 'test_model', 'model', 'model');
});

test('engine parity on cuda: the transformers fixtures through loadModel({ device: "cuda" })', async (t) => {
  const state = cudaState();
  if (!state.available) return t.skip(state.reason);
  const cases = readdirSync(fixtures, { withFileTypes: true })
    .filter((e) => e.isDirectory() && existsSync(path.join(fixtures, e.name, 'meta.json')))
    .map((e) => path.join(fixtures, e.name));
  assert.ok(cases.length > 0);
  const bad: string[] = [];
  let total = 0;
  for (const dir of cases) {
    const meta = JSON.parse(readFileSync(path.join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    const ms = await checkEngineCase(dir, meta, { device: 'cuda', settings: {} } as never);
    for (const m of ms.filter((x) => !(x.value <= x.tolerance)))
      bad.push(`${path.basename(dir)}: ${m.name}: ${m.value} > ${m.tolerance}`);
    const worst = [...ms].sort((a, b) => b.value / (b.tolerance || 1) - a.value / (a.tolerance || 1))[0];
    t.diagnostic(
      `${path.basename(dir)}: ${ms.length} measurements; worst ${worst?.name} = ${worst?.value.toExponential(2)} (tolerance ${worst?.tolerance})`,
    );
    const near = ms.filter((m) => m.value > 0.5 * m.tolerance).map((m) => `${m.name} ${m.value.toExponential(2)}`);
    if (near.length) t.diagnostic(`  over half the tolerance: ${near.join(', ')}`);
    total += ms.length;
  }
  t.diagnostic(`parity on cuda (bf16): ${total - bad.length} passed, ${bad.length} failed`);
  assert.deepEqual(bad, [], 'measurements over tolerance on cuda');
});

test('loadModel: cuda options are checked before any native call', async () => {
  const policy = path.join(fixtures, 'tied_gqa2_one_image', 'policy');
  await assert.rejects(loadModel(policy, { device: 'cuda', cuda: { packRows: 0 } }), {
    message: 'Expected positive integer for options.cuda.packRows but received 0 of type number',
  });
  await assert.rejects(loadModel(policy, { device: 'cuda', cuda: { offloadOptimizer: 'yes' as never } }), {
    message: 'Expected boolean for options.cuda.offloadOptimizer but received "yes" of type string',
  });
  await assert.rejects(loadModel(policy, { device: 'cuda', cuda: { offload: true } as never }), {
    message:
      'Expected one of precision, offloadOptimizer, bf16Moments, checkpointActivations, packRows, graphs, loraSingleRounding, loraMergedSampling, attention, syncEveryOp, profile for options.cuda.offload but received true of type boolean',
  });
  await assert.rejects(loadModel(policy, { device: 'cuda', cuda: [] as never }), {
    message: 'Expected object for options.cuda but received an array of length 0',
  });
});

test('sampling runs hand a batching device (as the CUDA backend) each admitted group in one sample_many call', async () => {
  // runs on any machine: the test device batches and samples with another CPU model
  const dir = path.join(fixtures, 'untied_mqa_two_images', 'policy');
  const m = await loadModel(dir);
  const cpu = await loadModel(dir);
  try {
    const textOnly = { ids: Int32Array.from([21, 15, 36, 34, 40, 17, 8, 53, 7, 11, 40, 41]), images: [] };
    const short = { ids: Int32Array.from([5, 9, 13]), images: [] };
    const reqs = [
      { prompt: textOnly, n: 3, temperature: 1, maxTokens: 9, seed: 5 },
      { prompt: short, n: 2, temperature: 0, maxTokens: 6, seed: 0 },
      { prompt: textOnly, n: 2, temperature: 0.7, topP: 0.8, maxTokens: 12, seed: 77 },
    ];
    const want: SampleResult[] = [];
    for (const r of reqs) want.push(await cpu.sample(r));
    m._native._attachTestDevice(cpu._native, 0, true);
    const events: number[] = [];
    const got = await m.sampleBatch(
      reqs.map((r, i) =>
        i === 0
          ? {
              ...r,
              onToken: (e: { tokenId: number }) => {
                events.push(e.tokenId);
              },
            }
          : r,
      ),
    );
    assert.match(
      m._native.info().device,
      /batches; 1 sample_many calls/,
      'the three requests reached the device in one call',
    );
    got.forEach((r, i) => {
      want[i]!.tokenIds.forEach((ids, g) => {
        assert.deepEqual(Array.from(r.tokenIds[g]!), Array.from(ids), `request ${i} sample ${g}: ids`);
        assert.deepEqual(
          Array.from(r.logprobs[g]!),
          Array.from(want[i]!.logprobs[g]!),
          `request ${i} sample ${g}: log-probs`,
        );
      });
      assert.deepEqual(r.finishReason, want[i]!.finishReason, `request ${i}: finish reasons`);
    });
    assert.equal(
      events.length,
      got[0]!.tokenIds.reduce((s, t) => s + t.length, 0),
      'the streaming request got each of its tokens',
    );
    await m.sampleBatch([reqs[1]!, reqs[2]!]);
    assert.match(m._native.info().device, /batches; 2 sample_many calls/);
  } finally {
    m.dispose();
    cpu.dispose();
  }
});

test("sampling runs on cuda: a batch goes through the device hook (sample_many) and gives the CPU engine's tokens (fp32)", async (t) => {
  const state = cudaState();
  if (!state.available) return t.skip(state.reason);
  const dir = path.join(fixtures, 'untied_mqa_two_images', 'policy');
  const g = await loadModel(dir, { device: 'cuda', cuda: { precision: 'fp32' } });
  const cpu = await loadModel(dir);
  try {
    assert.match(g._native.info().device, /^cuda:0 \(fp32\)/);
    const textOnly = { ids: Int32Array.from([21, 15, 36, 34, 40, 17, 8, 53, 7, 11, 40, 41]), images: [] };
    const short = { ids: Int32Array.from([5, 9, 13]), images: [] };
    const reqs = [
      { prompt: textOnly, n: 3, temperature: 1, maxTokens: 9, seed: 5 },
      { prompt: short, n: 2, temperature: 0, maxTokens: 6, seed: 0 },
      { prompt: textOnly, n: 4, temperature: 0.8, maxTokens: 5, seed: 77 },
    ];
    const want: SampleResult[] = [];
    for (const r of reqs) want.push(await cpu.sample(r));
    const got = await g.sampleBatch(reqs);
    got.forEach((r, i) => {
      want[i]!.tokenIds.forEach((ids, k) => {
        assert.deepEqual(Array.from(r.tokenIds[k]!), Array.from(ids), `request ${i} sample ${k}: ids`);
        r.logprobs[k]!.forEach((lp, j) =>
          assert.ok(
            Math.abs(lp - want[i]!.logprobs[k]![j]!) <= 1e-4,
            `request ${i} sample ${k} token ${j}: log-prob ${lp} vs ${want[i]!.logprobs[k]![j]}`,
          ),
        );
      });
    });
  } finally {
    g.dispose();
    cpu.dispose();
  }
});
