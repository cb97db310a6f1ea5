#!/usr/bin/env node
// Builds the native engine (native/build/Release/vqalab.node) with node-gyp, offline.
//
// node-gyp is found the way npm provides it: `npm_config_node_gyp` when npm runs this script, else
// the copy bundled with the npm beside this Node. Headers come from the local Node installation
// (--nodedir), so nothing is downloaded. The CUDA backend is added when nvcc is found (issue 10);
// until it exists the CPU engine is built on every machine.
//
// Environment: VQALAB_SKIP_NATIVE=1 skips the build; VQALAB_DEBUG=1 builds with -O0 -g.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  return null;
}

function findNodeDir() {
  // node-gyp wants DIR/include/node/node_api.h (a Node installation prefix).
  const prefixes = [process.env.VQALAB_NODEDIR, resolve(dirname(process.execPath), '..'), '/usr', '/usr/local'];
  for (const p of prefixes) if (p && existsSync(join(p, 'include', 'node', 'node_api.h'))) return p;
  return null;
}

if (process.env.VQALAB_SKIP_NATIVE === '1') {
  console.log('native: skipped (VQALAB_SKIP_NATIVE=1)');
  process.exit(0);
}
const gyp = findNodeGyp();
if (!gyp) {
  console.error('native: node-gyp not found. It ships with npm; run this through `npm install`, or set npm_config_node_gyp to node-gyp.js.');
  process.exit(1);
}
const args = [gyp, 'rebuild', `--directory=${here}`, '--jobs=max'];
const nodedir = findNodeDir();
if (nodedir) args.push(`--nodedir=${nodedir}`);
if (process.env.VQALAB_DEBUG === '1') args.push('--debug');
const nvcc = ['/usr/local/cuda/bin/nvcc'].find((p) => existsSync(p));
if (nvcc) console.log(`native: nvcc found at ${nvcc}; the CUDA backend is not part of this build yet (CPU engine only)`);
console.log(`native: building with ${gyp}${nodedir ? ` against headers in ${nodedir}/include/node` : ''}`);
const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: process.env });
if (r.status !== 0) {
  console.error(`native: build failed (exit ${r.status ?? r.signal}); see the compiler output above`);
  process.exit(r.status ?? 1);
}
