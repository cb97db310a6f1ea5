#!/usr/bin/env node
// Installs the lab tree (the JupyterLab app of the end-to-end tests, test/e2e/app) from its lock and
// stamps it: node_modules/.vqalab-stamp holds a hash of package.json and package-lock.json. The one
// place that writes and checks the stamp: `npm run lab:setup` runs this script, and the e2e set-up
// (test/e2e/lab.ts) runs it with --if-changed, so a tree installed by either is not installed again.
//
//   node scripts/lab-tree.mjs [--if-changed] [--build] [APP_DIR]
//
// APP_DIR defaults to test/e2e/app. npm's output goes to stderr; stdout gets one JSON line:
// {"installed":true,"seconds":S} or {"installed":false} (--if-changed, the stamp matched). --build also
// builds the app (webpack) when build/.vqalab-stamp does not match its inputs, and adds "built" and
// "buildSeconds". Callers running at once take turns (a lock folder in APP_DIR): the second finds the
// first's stamps (two webpack runs into one build folder break each other as two `npm ci` do).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const args = process.argv.slice(2);
const ifChanged = args.includes('--if-changed');
const build = args.includes('--build');
const rest = args.filter((a) => a !== '--if-changed' && a !== '--build');
if (rest.length > 1 || rest.some((a) => a.startsWith('-'))) {
  console.error(`lab-tree: expected [--if-changed] [--build] [APP_DIR]; got ${args.join(' ')}`);
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

// Temp file + rename: an interrupted write leaves no half stamp that could match.
const writeStamp = (file, value) => {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, value);
  renameSync(`${file}.tmp`, file);
};
const result = {};
if (ifChanged && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) {
  result.installed = false;
} else {
  const t = performance.now();
  // stdout carries only the result line: npm's own output goes to stderr.
  execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: app,
    stdio: ['ignore', process.stderr, process.stderr],
  });
  writeStamp(stamp, hash); // npm ci makes no node_modules for a tree without dependencies: writeStamp does
  result.installed = true;
  result.seconds = (performance.now() - t) / 1000;
}
if (build) {
  const b = createHash('sha256');
  for (const f of ['package-lock.json', 'webpack.config.js', 'index.js', 'bootstrap.js'])
    b.update(readFileSync(path.join(app, f)));
  const buildHash = b.digest('hex').slice(0, 16);
  const buildStamp = path.join(app, 'build/.vqalab-stamp');
  if (existsSync(buildStamp) && readFileSync(buildStamp, 'utf8') === buildHash) result.built = false;
  else {
    const t = performance.now();
    execFileSync(
      process.execPath,
      [path.join(app, 'node_modules/webpack-cli/bin/cli.js'), '--config', 'webpack.config.js'],
      {
        cwd: app,
        stdio: ['ignore', process.stderr, process.stderr],
      },
    );
    writeStamp(buildStamp, buildHash);
    result.built = true;
    result.buildSeconds = (performance.now() - t) / 1000;
  }
}
process.stdout.write(`${JSON.stringify(result)}\n`);
