#!/usr/bin/env node
// Builds the prebuilt (federated) JupyterLab 4 extension into extension/labextension/, offline:
//   1. type-check the browser code (DOM types, no Node types: the shared renderers must stay pure);
//   2. esbuild bundles extension/src/index.ts (+ src/display/render) into extension/lib/index.js and
//      extension/src/plugin.ts (the application plugin) into extension/lib/plugin.js,
//      leaving @jupyterlab/*, @lumino/* (shared by JupyterLab) and plotly.js (lazy chunk) to webpack;
//   3. @jupyterlab/builder's build-labextension makes the federated bundle (builder and core-meta come
//      from the lab tree in test/e2e/app: `npm run lab:setup` installs it);
//   4. records the hash of the sources in labextension/vqalab-build.json, which a unit test compares
//      with the working tree so a stale committed build fails CI.
// Usage: node extension/build.mjs [--no-typecheck]
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { sourceHash } from './source-hash.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const labTree = path.join(root, 'test/e2e/app/node_modules');
const t0 = Date.now();
const step = (msg) => console.log(`[build:lab ${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

if (!existsSync(path.join(labTree, '@jupyterlab/builder'))) {
  console.error('build:lab: the lab tree is missing; run "npm run lab:setup" first (npm ci in test/e2e/app)');
  process.exit(1);
}

if (!process.argv.includes('--no-typecheck')) {
  step('type-check (tsc -p extension)');
  execFileSync(
    process.execPath,
    [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(here, 'tsconfig.json')],
    { stdio: 'inherit' },
  );
}

// Two entries: the MIME renderers (jupyterlab.mimeExtension) and the application plugin
// (jupyterlab.extension: Runs panel, export command, status bar item).
for (const entry of ['index', 'plugin']) {
  step(`esbuild → extension/lib/${entry}.js`);
  await esbuild.build({
    entryPoints: [path.join(here, `src/${entry}.ts`)],
    outfile: path.join(here, `lib/${entry}.js`),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    external: ['@jupyterlab/*', '@lumino/*', 'plotly.js-basic-dist-min'],
    legalComments: 'none',
    logLevel: 'warning',
  });
}

step('build-labextension (webpack, module federation)');
const core = path.join(here, 'core');
mkdirSync(core, { recursive: true });
copyFileSync(path.join(labTree, '@jupyterlab/core-meta/core.package.json'), path.join(core, 'package.json'));
execFileSync(
  process.execPath,
  [path.join(labTree, '@jupyterlab/builder/lib/build-labextension.js'), '--core-path', core, here],
  {
    stdio: 'inherit',
    cwd: here,
    env: { ...process.env, NODE_PATH: labTree },
  },
);

const builder = JSON.parse(readFileSync(path.join(labTree, '@jupyterlab/builder/package.json'), 'utf8')).version;
const coreMeta = JSON.parse(readFileSync(path.join(labTree, '@jupyterlab/core-meta/package.json'), 'utf8')).version;
const info = {
  sourceHash: sourceHash(root),
  builder,
  coreMeta,
  note: 'written by extension/build.mjs; test/extension checks sourceHash against the sources',
};
writeFileSync(path.join(here, 'labextension/vqalab-build.json'), `${JSON.stringify(info, null, 2)}\n`);
step(`done: ${JSON.stringify(info)}`);
