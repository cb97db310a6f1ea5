/** report.html from notebooks built in memory: no kernel needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readReportData, renderReport, scriptJson, type ReportData } from '../../src/report/html.js';
import type { Notebook } from '../../src/report/nbformat.js';
import { pythonNotebook } from './notebooks.js';

function data(nb: Notebook): ReportData {
  return { schema: 'vqalab.report.v1', title: 't', stamp: { facts: {} }, source: { notebook: nb, notebookName: 'n.ipynb', parameters: {}, kernel: 'python3' }, metrics: {} };
}

const cell = (outputs: any[]) => ({ cell_type: 'code' as const, execution_count: 1, metadata: {}, source: 'x', outputs });

test('JSON in script elements cannot close them', async () => {
  assert.equal(scriptJson({ a: '</script><script>alert(1)</script>' }), '{"a":"\\u003c/script>\\u003cscript>alert(1)\\u003c/script>"}');
  const nb = pythonNotebook([{ cell_type: 'markdown', metadata: {}, source: '</script> in a cell' }]);
  const html = (await renderReport(nb, data(nb))).html;
  assert.deepEqual(readReportData(html, 'r.html').source.notebook.cells[0]!.source, '</script> in a cell');
});

test('plotly.js is inlined only when a plot is present', async () => {
  const plain = pythonNotebook([cell([{ output_type: 'stream', name: 'stdout', text: 'hi\n' }])]);
  const r1 = await renderReport(plain, data(plain));
  assert.equal(r1.plotlyInlined, false);
  assert.ok(!r1.html.includes('plotly.js v'));
  assert.ok(r1.html.length < 100_000, `small report: ${r1.html.length} bytes`);
  const plot = pythonNotebook([cell([{ output_type: 'display_data', data: { 'application/vnd.plotly.v1+json': { data: [] }, 'text/plain': 'p' }, metadata: {} }])]);
  const r2 = await renderReport(plot, data(plot));
  assert.equal(r2.plotlyInlined, true);
  assert.equal(r2.html.split('plotly.js v').length - 1, 1);
});

test('a vendor output carries its payload for the renderers and its fallback for readers without JavaScript', async () => {
  const nb = pythonNotebook([cell([{ output_type: 'display_data', data: { 'application/vnd.vqalab.sample.v1+json': { id: 'q</script>' }, 'text/html': '<p class="fb">fallback</p>', 'text/plain': 's' }, metadata: {} }])]);
  const r = await renderReport(nb, data(nb));
  assert.ok(r.html.includes('<div class="vq-vendor" data-mime="application/vnd.vqalab.sample.v1+json"><script type="application/json" class="vq-payload">{"id":"q\\u003c/script>"}</script><div class="vq-fallback"><div class="vq-html"><p class="fb">fallback</p></div></div></div>'));
  assert.equal(r.vendorOutputs, 1);
  assert.ok(r.renderers === null || r.renderers.endsWith('display/browser.js'), String(r.renderers));
});

test('an unknown vendor type falls back to its text/html; ANSI tracebacks become coloured HTML; images are embedded', async () => {
  const nb = pythonNotebook([cell([
    { output_type: 'display_data', data: { 'application/vnd.vqalab.future.v9+json': {}, 'text/html': '<b class="fb">fallback</b>' }, metadata: {} },
    { output_type: 'error', ename: 'E', evalue: 'v', traceback: ['\u001b[0;31mE\u001b[0m: v'] },
    { output_type: 'display_data', data: { 'image/png': 'iVBORw0KGgo=', 'text/plain': 'pic' }, metadata: { 'image/png': { width: 10 } } },
  ])]);
  const html = (await renderReport(nb, data(nb))).html;
  assert.ok(html.includes('<b class="fb">fallback</b>'));
  assert.match(html, /<span class="ansi-red-fg">E<\/span>: v/);
  assert.ok(html.includes('<img class="vq-image" src="data:image/png;base64,iVBORw0KGgo=" width="10" alt="pic">'));
});

test('stamp parts that were not recorded are marked, never silently absent', async () => {
  const nb = pythonNotebook([]);
  const html = (await renderReport(nb, data(nb))).html;
  for (const part of ['configs', 'seeds', 'datasets', 'models', 'git', 'host', 'time']) {
    assert.match(html, new RegExp(`class="vq-stamp-part vq-empty" data-stamp="${part}"`), part);
  }
});
