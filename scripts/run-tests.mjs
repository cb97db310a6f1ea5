#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js, dist/kernel/*.test.js) with node:test. Node 20 given a directory
// would also run every other .js under a folder named `test` (helpers, fixture scripts), so the
// files are listed explicitly. Arguments filter by path: `npm test -- engine grpo`.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const dist = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'dist');
// Tests live in test/ and beside the kernel's modules (kernel/*.test.ts).
const roots = ['test', 'kernel'].map((d) => path.join(dist, d));
const filters = process.argv.slice(2);

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const files = roots
  .flatMap((r) => walk(r))
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => filters.length === 0 || filters.some((x) => path.relative(dist, f).includes(x)))
  .sort();
if (files.length === 0) {
  console.error(
    `run-tests: no test files under ${roots.join(', ')}${filters.length ? ` matching ${filters.join(', ')}` : ''}`,
  );
  process.exit(1);
}
const concurrency = process.env.VQALAB_TEST_CONCURRENCY ?? '2';
const result = spawnSync(
  process.execPath,
  ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files],
  { stdio: 'inherit' },
);
process.exit(result.status ?? 1);
