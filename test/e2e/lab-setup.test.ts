/**
 * `npm run lab:setup` stamps the tree it installs with the stamp the e2e set-up checks
 * (ensureLabTree), so the first e2e run after it does not run npm ci again. Run on a lab tree of
 * its own (a package with no dependencies: npm ci takes a second and reaches no registry), through
 * npm itself as a person would.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensureLabTree, ROOT } from './lab.js';

const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-lab-setup-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function writeTree(version: string): void {
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify({ name: 'lab-tree', version, private: true })}\n`);
  writeFileSync(
    path.join(dir, 'package-lock.json'),
    `${JSON.stringify({
      name: 'lab-tree',
      version,
      lockfileVersion: 3,
      requires: true,
      packages: { '': { name: 'lab-tree', version } },
    })}\n`,
  );
}

test('lab:setup writes the stamp the e2e set-up checks; a changed lock installs again', () => {
  writeTree('1.0.0');
  execFileSync('npm', ['run', '--silent', 'lab:setup', '--', dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  assert.ok(existsSync(path.join(dir, 'node_modules/.vqalab-stamp')), 'the given tree was installed and stamped');
  assert.equal(ensureLabTree(dir), null, 'the e2e set-up finds the tree up to date: no second npm ci');
  writeTree('1.0.1');
  const seconds = ensureLabTree(dir);
  assert.ok(seconds !== null && seconds >= 0, 'a changed lock is installed again');
  assert.equal(ensureLabTree(dir), null, 'and stamped');
});
