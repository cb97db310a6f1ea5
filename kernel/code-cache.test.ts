import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { codeCacheDir, codeCacheHit, loadWithCodeCache, saveCodeCache } from './code-cache.js';

test('a script loaded with the code cache is the module require returns; the cache is written once and used by the next load', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-code-cache-test-'));
  const name = `probe-${process.pid}-${Date.now()}.cjs`;
  const cacheFiles = () =>
    readdirSync(codeCacheDir(), { withFileTypes: true })
      .filter((e) => e.name.startsWith(`${name}-`))
      .map((e) => path.join(codeCacheDir(), e.name));
  try {
    writeFileSync(
      path.join(dir, name),
      'exports.answer = 6 * 7; exports.self = module; exports.dirname = __dirname; exports.req = typeof require("node:path").join;',
    );
    const req = createRequire(path.join(dir, 'index.js'));
    const file = req.resolve(`./${name}`);

    assert.equal(loadWithCodeCache(req, `./${name}`), true);
    assert.equal(codeCacheHit(), false, 'no cache yet');
    const first = req(`./${name}`) as {
      answer: number;
      self: { loaded: boolean; filename: string };
      dirname: string;
      req: string;
    };
    assert.deepEqual(
      [first.answer, first.self.loaded, first.self.filename, first.dirname, first.req],
      [42, true, file, dir, 'function'],
    );
    assert.equal(loadWithCodeCache(req, `./${name}`), false, 'already in the require cache');

    saveCodeCache();
    assert.equal(cacheFiles().length, 1);
    saveCodeCache();
    assert.equal(cacheFiles().length, 1, 'written once');

    delete req.cache[file];
    assert.equal(loadWithCodeCache(req, `./${name}`), true);
    assert.equal(codeCacheHit(), true, 'V8 accepted the cache');
    assert.equal((req(`./${name}`) as { answer: number }).answer, 42);

    assert.equal(loadWithCodeCache(req, './missing.cjs'), false, 'a script that cannot be loaded is left to require');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    for (const f of cacheFiles()) rmSync(f, { force: true });
  }
});
