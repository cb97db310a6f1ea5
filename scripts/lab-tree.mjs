#!/usr/bin/env node
// Installs the lab tree (the JupyterLab app of the end-to-end tests, test/e2e/app) from its lock and
// stamps it: node_modules/.vqalab-stamp holds a hash of package.json and package-lock.json. The one
// place that writes and checks the stamp: `npm run lab:setup` runs this script, and the e2e set-up
// (test/e2e/lab.ts) runs it with --if-changed, so a tree installed by either is not installed again.
//
//   node scripts/lab-tree.mjs [--if-changed] [APP_DIR]
//
// APP_DIR defaults to test/e2e/app. npm's output goes to stderr; stdout gets one JSON line:
// {"installed":true,"seconds":S} or {"installed":false} (--if-changed, the stamp matched). Callers
// running at once take turns (a lock folder in APP_DIR): the second finds the first's stamp.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const ifChanged = args.includes('--if-changed');
const rest = args.filter((a) => a !== '--if-changed');
if (rest.length > 1 || rest.some((a) => a.startsWith('-'))) {
  console.error(`lab-tree: expected [--if-changed] [APP_DIR]; got ${args.join(' ')}`);
  process.exit(2);
}
const app = path.resolve(rest[0] ?? path.join(root, 'test/e2e/app'));

const h = createHash('sha256');
for (const f of ['package.json', 'package-lock.json']) {
  const file = path.join(app, f);
  if (!existsSync(file)) {
    console.error(`lab-tree: ${file} is missing; the lab tree needs its package.json and lock`);
    process.exit(1);
  }
  h.update(readFileSync(file));
}
const hash = h.digest('hex').slice(0, 16);
const stamp = path.join(app, 'node_modules/.vqalab-stamp');

// One installer at a time: test files run in parallel and each may ask for the tree (two `npm ci` in
// one folder break each other). The lock is a folder (mkdir is atomic) holding its owner's pid; a
// lock whose owner is gone is taken over.
const lock = path.join(app, '.lab-tree.lock');
const pause = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
  try {
    mkdirSync(lock);
    writeFileSync(path.join(lock, 'pid'), String(process.pid));
    break;
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
    let owner = NaN;
    try {
      owner = Number(readFileSync(path.join(lock, 'pid'), 'utf8'));
    } catch {}
    let alive = true;
    if (!(Number.isInteger(owner) && owner > 0)) {
      // no pid yet: its owner is between mkdir and writing it, unless it died there long ago
      try {
        alive = Date.now() - statSync(lock).mtimeMs < 30_000;
      } catch {
        alive = false;
      }
    } else {
      try {
        process.kill(owner, 0);
      } catch (e) {
        alive = e.code === 'EPERM';
      }
    }
    if (!alive) rmSync(lock, { recursive: true, force: true });
    else Atomics.wait(pause, 0, 0, 250); // the owner is installing: wait for it
  }
}
const release = () => rmSync(lock, { recursive: true, force: true });
process.on('exit', release);

if (ifChanged && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) {
  process.stdout.write(`${JSON.stringify({ installed: false })}\n`);
} else {
  const t = performance.now();
  // stdout carries only the result line: npm's own output goes to stderr.
  execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: app,
    stdio: ['ignore', process.stderr, process.stderr],
  });
  // Temp file + rename: an interrupted write leaves no half stamp that could match.
  mkdirSync(path.dirname(stamp), { recursive: true }); // npm ci makes none for a tree without dependencies
  writeFileSync(`${stamp}.tmp`, hash);
  renameSync(`${stamp}.tmp`, stamp);
  process.stdout.write(`${JSON.stringify({ installed: true, seconds: (performance.now() - t) / 1000 })}\n`);
}
