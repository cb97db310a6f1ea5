/**
 * Parity with transformers for Qwen2.5-VL and Qwen3-VL on the CPU engine: every fixture case of
 * test/fixtures/engine whose policy is one of those families (made by scripts/gen/engine_fixtures.py
 * --family qwen2_5_vl,qwen3_vl on the GPU machine), through the same checker as Qwen2-VL's cases
 * (logits, log-probs, GRPO loss, every gradient; `vqalab check-parity` runs them too).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { checkEngineCase, engineChecker } from '../../src/parity/engine.js';
import { FIXTURES } from './helpers.js';

const familyCases = existsSync(FIXTURES)
  ? readdirSync(FIXTURES, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .filter((name) => {
        const cfg = path.join(FIXTURES, name, 'policy', 'config.json');
        if (!existsSync(cfg)) return false;
        const t = (JSON.parse(readFileSync(cfg, 'utf8')) as { model_type?: string }).model_type;
        return t === 'qwen2_5_vl' || t === 'qwen3_vl';
      })
  : [];

if (familyCases.length === 0) {
  test('parity with transformers: Qwen2.5-VL / Qwen3-VL fixtures', (t) =>
    t.skip(
      'no qwen2_5_vl / qwen3_vl cases in test/fixtures/engine yet (scripts/gen/engine_fixtures.py makes them on a machine with transformers)',
    ));
}

for (const name of familyCases) {
  test(`parity with transformers: ${name}`, async () => {
    const dir = path.join(FIXTURES, name);
    const meta = JSON.parse(readFileSync(path.join(dir, 'meta.json'), 'utf8')) as Record<string, unknown>;
    assert.ok(engineChecker.applies(dir, meta));
    const ms = await checkEngineCase(dir, meta, { device: 'cpu', settings: {} });
    assert.ok(ms.length > 20);
    const bad = ms.filter((m) => !(m.value <= m.tolerance));
    assert.deepEqual(bad, [], `beyond tolerance: ${JSON.stringify(bad)}`);
    assert.ok(
      ms.some((m) => m.name.startsWith('grad.')),
      'gradients compared',
    );
  });
}
