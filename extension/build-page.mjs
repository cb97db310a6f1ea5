#!/usr/bin/env node
// Bundles extension/src/renderers.ts (the widgets' browser code in the report's renderer contract)
// into dist/src/display/browser.js, where the report exporter (src/report/bundle.ts) finds it and
// bundles it into report.html. ESM, not minified (the exporter minifies), no plotly inside (the
// report inlines plotly.min.js once). Part of `npm run build`.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
await esbuild.build({
  entryPoints: [path.join(here, 'src/renderers.ts')],
  outfile: path.join(here, '../dist/src/display/browser.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
});
