/**
 * Issue 19's house rule: no module of the runtime over 600 lines (after the formatter), so each
 * file keeps one job. Generated tables are exempt only by being short already.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '../../..');
const LIMIT = 600;

function tsFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) tsFiles(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

test(`no file in src/ or kernel/ has more than ${LIMIT} lines`, () => {
  const long = [...tsFiles(path.join(root, 'src')), ...tsFiles(path.join(root, 'kernel'))]
    .map((f) => ({ file: path.relative(root, f), lines: readFileSync(f, 'utf8').split('\n').length - 1 }))
    .filter((x) => x.lines > LIMIT);
  assert.deepEqual(
    long,
    [],
    `split these into modules of one job: ${long.map((x) => `${x.file} (${x.lines})`).join(', ')}`,
  );
});
