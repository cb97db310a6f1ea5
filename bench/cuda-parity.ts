/**
 * The engine's parity cases (test/fixtures/engine, made with transformers) on a chosen device, for
 * GPU machines that have Node but no npm install: scripts/gpu/run-all.sh bundles this file with
 * esbuild. It runs the same checker as `vqalab check-parity DIR --device D` (src/parity/engine.ts)
 * without the CLI's other checkers (the vision checker needs sharp's native binary).
 *
 *   node dist/bench/cuda-parity.js test/fixtures/engine cuda [OUT.json]   (VQALAB_CUDA_PRECISION=fp32 for fp32)
 *
 * OUT.json: every case's measurements, in `vqalab check-parity --json`'s form (scripts/parity-table.py
 * makes the per-family table of docs/engine.md from it).
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { checkEngineCase } from '../src/parity/engine.js';

async function main(): Promise<number> {
  const root = process.argv[2] ?? 'test/fixtures/engine';
  const device = process.argv[3] ?? 'cuda';
  const cases = readdirSync(root, { withFileTypes: true })
    .filter(
      (e) =>
        e.isDirectory() &&
        existsSync(path.join(root, e.name, 'meta.json')) &&
        existsSync(path.join(root, e.name, 'expected.safetensors')),
    )
    .map((e) => path.join(root, e.name))
    .sort();
  const jsonOut = process.argv[4];
  const results: { checker: string; caseName: string; caseDir: string; measurements: unknown[] }[] = [];
  let failed = 0,
    passed = 0;
  for (const dir of cases) {
    const meta = JSON.parse(readFileSync(path.join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    const t0 = Date.now();
    const ms = await checkEngineCase(dir, meta, { device, settings: {} } as never);
    results.push({ checker: 'engine', caseName: path.basename(dir), caseDir: dir, measurements: ms });
    const bad = ms.filter((m) => !(m.value <= m.tolerance));
    failed += bad.length;
    passed += ms.length - bad.length;
    const worst = [...ms].sort((a, b) => b.value / (b.tolerance || 1) - a.value / (a.tolerance || 1))[0];
    console.log(
      `${bad.length ? 'FAIL' : 'ok  '} ${path.basename(dir)} on ${device} (${process.env.VQALAB_CUDA_PRECISION ?? 'bf16'}): ${ms.length} measurements, ${bad.length} over tolerance, ${Date.now() - t0} ms; worst ${worst?.name} = ${worst?.value.toExponential(2)} (tol ${worst?.tolerance})`,
    );
    for (const m of bad) console.log(`     ${m.name}: ${m.value} > ${m.tolerance} ${m.note ?? ''}`);
  }
  console.log(`parity ${device}: ${passed} passed, ${failed} failed`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(results));
  return failed ? 1 : 0;
}

main().then(
  (c) => process.exit(c),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
