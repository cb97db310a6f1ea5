#!/usr/bin/env node
// Installs the lab tree (the JupyterLab app of the end-to-end tests, test/e2e/app) from its lock and
// stamps it: node_modules/.vqalab-stamp holds a hash of package.json and package-lock.json. The one
// place that writes and checks the stamp: `npm run lab:setup` runs this script, and the e2e set-up
// (test/e2e/lab.ts) runs it with --if-changed, so a tree installed by either is not installed again.
//
//   node scripts/lab-tree.mjs [--if-changed] [APP_DIR]
//
// APP_DIR defaults to test/e2e/app. npm's output goes to stderr; stdout gets one JSON line:
// {"installed":true,"seconds":S} or {"installed":false} (--if-changed, the stamp matched).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
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
