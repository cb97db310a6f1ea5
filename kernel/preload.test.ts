import assert from 'node:assert/strict';
import { test } from 'node:test';
import { importRuntime, preludeCell, preludeNames, preludePath, runtimePath } from './preload.js';

test('the names read from prelude.d.ts are the prelude module\'s exports (the runtime is not imported to list them)', async () => {
  const names = preludeNames();
  assert.ok(names.includes('vqalab') && names.includes('Trainer') && names.includes('display'), names.join(','));
  const runtime = await importRuntime();
  assert.deepEqual(names, runtime.names);
  assert.equal(runtime.modules.get('vqalab'), runtime.modules.get(runtimePath));
  assert.equal(preludeCell(names).source, `import { ${names.join(', ')} } from ${JSON.stringify(preludePath)};`);
});
