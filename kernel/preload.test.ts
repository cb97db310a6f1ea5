import assert from 'node:assert/strict';
import { test } from 'node:test';
import { importRuntime, preludeCell, preludeNames, preludePath, runtimePath } from './preload.js';
import { createConverter } from './tslab.js';

test("the names read from prelude.d.ts are the prelude module's exports (the runtime is not imported to list them)", async () => {
  const names = preludeNames();
  assert.ok(names.includes('vqalab') && names.includes('Trainer') && names.includes('display'), names.join(','));
  const runtime = await importRuntime();
  assert.deepEqual(names, runtime.names);
  assert.equal(runtime.modules.get('vqalab'), runtime.modules.get(runtimePath));
  assert.equal(preludeCell(names).source, `import { ${names.join(', ')} } from ${JSON.stringify(preludePath)};`);
});

test("the prebuilt declaration of the hidden cell is what tslab's converter makes of it, and it type-checks", () => {
  const cell = preludeCell(preludeNames());
  const converter = createConverter();
  try {
    const out = converter.convert('', cell.source);
    assert.deepEqual(out.diagnostics, []);
    assert.equal(out.declOutput, cell.declaration);
    // A later cell sees the names with their types through the prebuilt declaration.
    const next = converter.convert(
      cell.declaration,
      'const t: typeof Trainer = Trainer; const n: string = vqalab.vqaAccuracy().name;',
    );
    assert.deepEqual(next.diagnostics, []);
  } finally {
    converter.close();
  }
});
