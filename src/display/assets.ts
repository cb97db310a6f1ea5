/**
 * The browser assets a report page needs to show live widgets offline: the widgets' code
 * (extension/src/page.ts, bundled by `npm run build`) and plotly.js. A page inlines
 * `<style>VQA_CSS</style>`, then each output as `reportOutputHtml(mime, payload)`, then
 * `<script>plotlyScript()</script><script>pageScript()</script>` once at the end.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Path of the bundled browser code (dist/browser/vqalab-page.js). */
export function pageScriptPath(): string {
  return fileURLToPath(new URL('../../browser/vqalab-page.js', import.meta.url));
}

export function pageScript(): string {
  return readFileSync(pageScriptPath(), 'utf8');
}

/** Path of plotly.js (minified, UMD: defines window.Plotly). */
export function plotlyScriptPath(): string {
  return createRequire(import.meta.url).resolve('plotly.js-dist-min');
}

export function plotlyScript(): string {
  return readFileSync(plotlyScriptPath(), 'utf8');
}
