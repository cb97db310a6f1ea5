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
import { availableParallelism } from 'node:os';
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

// nvcc (CUDA >= 12, from VQALAB_CUDA_HOME, CUDA_HOME, /usr/local/cuda or PATH) and the cuBLASLt header
// and library (beside it, or under VQALAB_CUBLAS_DIR/{include,lib}). VQALAB_NO_CUDA=1 skips the backend.
function findCuda() {
  if (process.env.VQALAB_NO_CUDA === '1') return { ok: false, why: 'VQALAB_NO_CUDA=1' };
  const homes = [process.env.VQALAB_CUDA_HOME, process.env.CUDA_HOME, '/usr/local/cuda'].filter(Boolean);
  const which = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim()) homes.push(resolve(dirname(which.stdout.trim()), '..'));
  const home = homes.find((h) => existsSync(join(h, 'bin', 'nvcc')));
  if (!home) return { ok: false, why: 'nvcc was not found' };
  const nvcc = join(home, 'bin', 'nvcc');
  const v = spawnSync(nvcc, ['--version'], { encoding: 'utf8' });
  const m = /release (\d+)\.(\d+)/.exec(v.stdout ?? '');
  if (!m) return { ok: false, why: `${nvcc} --version did not say its release` };
  const version = `${m[1]}.${m[2]}`;
  if (Number(m[1]) < 12) return { ok: false, why: `nvcc ${version} is older than CUDA 12` };
  const cub = process.env.VQALAB_CUBLAS_DIR;
  const inc = cub ? join(cub, 'include') : join(home, 'include');
  const lib = cub ? join(cub, 'lib') : join(home, 'lib64');
  if (!existsSync(join(inc, 'cublasLt.h'))) return { ok: false, why: `nvcc ${version} found but not cublasLt.h (in ${inc}; set VQALAB_CUBLAS_DIR)` };
  if (!existsSync(join(lib, 'libcublasLt.so'))) return { ok: false, why: `nvcc ${version} found but not libcublasLt.so (in ${lib}; set VQALAB_CUBLAS_DIR)` };
  return { ok: true, home, nvcc, version, inc, lib };
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
const env = { ...process.env };
const cuda = findCuda();
if (cuda.ok) {
  // The CUDA backend: nvcc compiles native/src/cuda into a static library that the addon links.
  console.log(`native: CUDA ${cuda.version} with cuBLASLt found (${cuda.nvcc}); building the CUDA backend for sm_90`);
  const root = resolve(here, '..');
  const mk = spawnSync('make', ['-f', 'scripts/gpu/cuda.mk', `-j${Math.max(1, availableParallelism())}`, 'lib',
    `CUDA_HOME=${cuda.home}`, `NVCC=${cuda.nvcc}`, `CUBLAS_INC=${cuda.inc}`, `CUBLAS_LIB=${cuda.lib}`], { cwd: root, stdio: 'inherit' });
  if (mk.status === 0) {
    env.VQALAB_CUDA_LIB = join(root, 'native', 'build', 'cuda', 'libvqalab_cuda.a');
    env.VQALAB_CUDA_LIBDIR = join(cuda.home, 'lib64');
    env.VQALAB_CUBLAS_LIBDIR = cuda.lib;
  } else {
    console.log('native: note: the CUDA backend failed to build (see above); building the CPU engine only');
  }
} else {
  console.log(`native: note: ${cuda.why}; building the CPU engine only (device: 'cuda' will say so)`);
}
console.log(`native: building with ${gyp}${nodedir ? ` against headers in ${nodedir}/include/node` : ''}`);
const r = spawnSync(process.execPath, args, { stdio: 'inherit', env });
if (r.status !== 0) {
  console.error(`native: build failed (exit ${r.status ?? r.signal}); see the compiler output above`);
  process.exit(r.status ?? 1);
}
