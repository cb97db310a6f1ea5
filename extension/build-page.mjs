#!/usr/bin/env node
// Bundles extension/src/page.ts (the widgets' browser code for report pages) into
// dist/browser/vqalab-page.js: one self-contained IIFE (no plotly inside; the page inlines
// plotly.min.js once and the bundle finds window.Plotly). Part of `npm run build`.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
await esbuild.build({
  entryPoints: [path.join(here, 'src/page.ts')],
  outfile: path.join(here, '../dist/browser/vqalab-page.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
