/** report.html from notebooks built in memory: no kernel needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { factsBundle, STAMP_MIME } from '../../src/report/facts.js';
import { readReportData, renderReport, scriptJson, type ReportData } from '../../src/report/html.js';
import type { Notebook } from '../../src/report/nbformat.js';
import { exportNotebook } from '../../src/report/runner.js';
import { Browser } from './browser.js';
import { pythonNotebook } from './notebooks.js';

function data(nb: Notebook): ReportData {
  return {
    schema: 'vqalab.report.v1',
    title: 't',
    stamp: { facts: {} },
    source: { notebook: nb, notebookName: 'n.ipynb', parameters: {}, kernel: 'python3' },
    metrics: {},
  };
}

const cell = (outputs: any[]) => ({
  cell_type: 'code' as const,
  execution_count: 1,
  metadata: {},
  source: 'x',
  outputs,
});

test('JSON in script elements cannot close them', async () => {
  assert.equal(
    scriptJson({ a: '</script><script>alert(1)</script>' }),
    '{"a":"\\u003c/script>\\u003cscript>alert(1)\\u003c/script>"}',
  );
  const nb = pythonNotebook([{ cell_type: 'markdown', metadata: {}, source: '</script> in a cell' }]);
  const html = (await renderReport(nb, data(nb))).html;
  assert.deepEqual(readReportData(html, 'r.html').source.notebook.cells[0]!.source, '</script> in a cell');
});

test('plotly.js is inlined only when a plot is present', async () => {
  const plain = pythonNotebook([cell([{ output_type: 'stream', name: 'stdout', text: 'hi\n' }])]);
  const r1 = await renderReport(plain, data(plain));
  assert.equal(r1.plotlyInlined, false);
  assert.ok(!r1.html.includes('* plotly.js'));
  assert.ok(r1.html.length < 100_000, `small report: ${r1.html.length} bytes`);
  const plot = pythonNotebook([
    cell([
      {
        output_type: 'display_data',
        data: { 'application/vnd.plotly.v1+json': { data: [] }, 'text/plain': 'p' },
        metadata: {},
      },
    ]),
  ]);
  const r2 = await renderReport(plot, data(plot));
  assert.equal(r2.plotlyInlined, true);
  assert.equal(r2.html.split('* plotly.js (basic - minified) v').length - 1, 1, 'the partial (basic) bundle, once');
  // The partial bundle keeps a report with plots small (the full plotly.js alone is 4.8 MB).
  assert.ok(
    Buffer.byteLength(r2.html) <= 1.5e6,
    `a report with a plot is ${Buffer.byteLength(r2.html)} bytes (≤ 1.5 MB)`,
  );
});

test('a vendor output carries its payload for the renderers and its fallback for readers without JavaScript', async () => {
  const nb = pythonNotebook([
    cell([
      {
        output_type: 'display_data',
        data: {
          'application/vnd.vqalab.sample.v1+json': { id: 'q</script>' },
          'text/html': '<p class="fb">fallback</p>',
          'text/plain': 's',
        },
        metadata: {},
      },
    ]),
  ]);
  const r = await renderReport(nb, data(nb));
  assert.ok(
    r.html.includes(
      '<div class="vq-vendor" data-mime="application/vnd.vqalab.sample.v1+json"><script type="application/json" class="vq-payload">{"id":"q\\u003c/script>"}</script><div class="vq-fallback"><div class="vq-html"><p class="fb">fallback</p></div></div></div>',
    ),
  );
  assert.equal(r.vendorOutputs, 1);
  assert.ok(r.renderers === null || r.renderers.endsWith('display/browser.js'), String(r.renderers));
});

test('an unknown vendor type falls back to its text/html; ANSI tracebacks become coloured HTML; images are embedded', async () => {
  const nb = pythonNotebook([
    cell([
      {
        output_type: 'display_data',
        data: { 'application/vnd.vqalab.future.v9+json': {}, 'text/html': '<b class="fb">fallback</b>' },
        metadata: {},
      },
      { output_type: 'error', ename: 'E', evalue: 'v', traceback: ['\u001b[0;31mE\u001b[0m: v'] },
      {
        output_type: 'display_data',
        data: { 'image/png': 'iVBORw0KGgo=', 'text/plain': 'pic' },
        metadata: { 'image/png': { width: 10 } },
      },
    ]),
  ]);
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

test('the partial plotly.js draws scatter traces; another trace type keeps its fallback with a note naming it', async () => {
  const fig = (type: string) => ({
    output_type: 'display_data',
    data: {
      'application/vnd.plotly.v1+json': {
        data: [
          {
            type,
            x: [1, 2, 3],
            y: [2, 1, 3],
            z: [
              [1, 2],
              [3, 4],
            ],
          },
        ],
        layout: { title: { text: `${type} plot` } },
      },
      'text/plain': `${type} fallback`,
    },
    metadata: {},
  });
  const nb = pythonNotebook([cell([fig('scatter')]), cell([fig('heatmap')])]);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vq-html-'));
  const browser = await Browser.launch();
  try {
    const file = path.join(dir, 'report.html');
    writeFileSync(file, (await renderReport(nb, data(nb))).html);
    const { page, errors } = await browser.open(file);
    const plots = page.locator('.vq-plotly');
    const scatter = await plots.nth(0).locator('.vq-rendered .main-svg, .main-svg').first().boundingBox();
    assert.ok(scatter && scatter.width > 300 && scatter.height > 200, `scatter drawn: ${JSON.stringify(scatter)}`);
    assert.equal(await plots.nth(0).locator('.scatterlayer .trace').count(), 1, 'one scatter trace drawn');
    assert.equal(await plots.nth(1).evaluate((el) => el.classList.contains('vq-rendered')), false);
    assert.match(
      await plots.nth(1).locator('.vq-render-error').innerText(),
      /trace type "heatmap" not in this report's plotly\.js \(it draws scatter, bar, pie\)/,
    );
    assert.ok(await plots.nth(1).locator('.vq-fallback', { hasText: 'heatmap fallback' }).isVisible());
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('report facts go into the header stamp and nowhere in the body, also those an older vqalab saved with a text line', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vq-facts-'));
  try {
    const legacy = {
      [STAMP_MIME]: { seeds: { data: 3 }, notes: { saved: 'with a text/plain line' } },
      'text/plain': 'vqalab report facts: seeds data; notes saved',
    };
    const nb = pythonNotebook([
      cell([{ output_type: 'display_data', data: factsBundle({ configs: { grpo: { lr: 0.5 } } }), metadata: {} }]),
      cell([
        { output_type: 'stream', name: 'stdout', text: 'before\n' },
        { output_type: 'display_data', data: legacy, metadata: {} },
        { output_type: 'stream', name: 'stdout', text: 'after\n' },
      ]),
    ]);
    const file = path.join(dir, 'saved.ipynb');
    writeFileSync(file, JSON.stringify(nb));
    const { html } = await exportNotebook(file);
    const facts = readReportData(html, file).stamp.facts;
    assert.deepEqual(facts.configs, { grpo: { lr: 0.5 } });
    assert.deepEqual(facts.seeds, { data: 3 });
    assert.match(
      html,
      /class="vq-stamp-part[^"]*" data-stamp="configs">((?!<\/section>).)*grpo/s,
      'the stamp shows them',
    );
    const body = html.slice(html.indexOf('<section class="vq-cell'));
    assert.doesNotMatch(body, /report facts|recorded into the report stamp|vq-stamp-note/);
    const section = (i: number) =>
      body.slice(body.indexOf(`id="cell-${i}"`), body.indexOf('</section>', body.indexOf(`id="cell-${i}"`)));
    assert.doesNotMatch(section(0), /vq-outputs/, 'a cell whose only output is facts shows no output box');
    assert.equal(section(1).split('<div class="vq-output">').length - 1, 2, 'the two stream outputs, not the facts');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
