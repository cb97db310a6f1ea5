/**
 * The widgets' browser code in real Chromium, in a real report page: the report exporter
 * (src/report/html.ts renderReport) bundles dist/src/display/browser.js, the same hydrate code the
 * JupyterLab extension runs. Every widget hydrates, each behaviour works with mouse and keyboard,
 * a live update goes through Plotly.react in place, a bad payload shows an error, the page logs no
 * errors. Screenshots land in test-artifacts/.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bundleFor, sampleBundle } from '../../src/display/bundle.js';
import { MIME, type MetricsPayload, type MimeBundle } from '../../src/display/types.js';
import { renderReport } from '../../src/report/html.js';
import type { Notebook } from '../../src/report/nbformat.js';
import * as fx from '../display/fixtures.js';
import { artifactPath, launch, type Browser } from './chromium.js';

// DOM globals inside page.evaluate callbacks (the project compiles without the DOM lib; these stay module-local).
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const window: any, document: any;
declare function getComputedStyle(el: unknown): any;
type HTMLTableRowElement = any;
type HTMLInputElement = any;

let browser: Browser;
let dir: string;
const image = await fx.sceneImage();
const metrics = fx.metrics(image);

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'vqa-page-'));
  const bad = fx.group(image) as unknown as { completions: Record<string, unknown>[] };
  delete bad.completions[1]!.advantage;
  const bundles: MimeBundle[] = [
    await sampleBundle(fx.sample(image)),
    bundleFor(MIME.group, fx.group(image)),
    bundleFor(MIME.rewards, fx.rewardTable()),
    bundleFor(MIME.metrics, metrics),
    bundleFor(MIME.dataset, fx.dataset(image)),
    { [MIME.group]: bad, 'text/plain': 'a group from a buggy producer' },
  ];
  const nb: Notebook = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {},
    cells: bundles.map((data, i) => ({
      cell_type: 'code',
      source: `show(${i})`,
      metadata: {},
      execution_count: i + 1,
      outputs: [{ output_type: 'display_data', data, metadata: {} }],
    })),
  };
  const report = await renderReport(nb, {
    schema: 'vqalab.report.v1',
    title: 'vqalab widgets',
    stamp: { facts: {} },
    metrics: {},
    source: { notebook: nb, notebookName: 'widgets.ipynb', parameters: {}, kernel: 'vqalab' },
  });
  assert.ok(
    report.renderers?.endsWith('dist/src/display/browser.js'),
    `the report bundled our renderers: ${report.renderers}`,
  );
  assert.equal(report.plotlyInlined, true);
  writeFileSync(path.join(dir, 'report.html'), report.html);
  browser = await launch();
  await browser.page.goto(`file://${path.join(dir, 'report.html')}`);
  await browser.page.waitForSelector('html[data-hydrated="true"]', { timeout: 30_000 });
  await browser.page.waitForSelector('#cell-3 .vqa-metrics[data-plotly="ready"]', { timeout: 30_000 });
});

after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('every output hydrates into its interactive widget; bad payloads show readable errors', async () => {
  const { page } = browser;
  const roots = await page.$$eval('section.vq-code-cell', (els) =>
    els.map((e) => e.querySelector('.vq-widget > [data-vqa]')?.getAttribute('data-vqa') ?? null),
  );
  assert.deepEqual(roots, ['sample', 'group', 'rewards', 'metrics', 'dataset', null]);
  assert.equal(
    await page.locator('.vq-vendor .vq-fallback').count(),
    1,
    'fallbacks replaced by widgets, except the failed one',
  );
  // The report shows our message above the fallback it keeps.
  assert.match(
    (await page.textContent('#cell-5 [role="alert"]')) ?? '',
    /Expected finite number for group\.completions\[1\]\.advantage but received undefined/,
  );
  assert.equal(await page.locator('button.vqa-zoom').count(), 1, 'the sample card zoom button (dataset detail closed)');
  await page.screenshot({ path: artifactPath('page-widgets.png'), fullPage: true });
});

test('sample card: click zooms the image crisply to an integer factor, + zooms further, Escape resets', async () => {
  const { page } = browser;
  const button = page.locator('#cell-0 button.vqa-zoom');
  await button.click();
  assert.equal(await button.getAttribute('aria-pressed'), 'true');
  // 48×32 is shown at 6× (fits 320 px); zoom doubles that, then doubles again.
  const img = page.locator('#cell-0 img');
  const shown = () =>
    img.evaluate((el) => [el.getBoundingClientRect().width, getComputedStyle(el).imageRendering].join());
  assert.equal(await shown(), '576,pixelated');
  assert.match((await page.textContent('#cell-0 figcaption')) ?? '', /^48×32 · zoom 12×$/);
  await button.press('+');
  assert.equal(await shown(), '1152,pixelated');
  await button.press('Escape');
  assert.equal(await button.getAttribute('aria-pressed'), 'false');
  assert.equal(await shown(), '288,pixelated');
  assert.equal(await page.textContent('#cell-0 figcaption'), '48×32 · shown 6×');
});

test('group view: hovering a token shows its log-prob; the keyboard walks tokens too', async () => {
  const { page } = browser;
  await page.hover('#cell-1 tr[data-index="1"] .vqa-tok[data-i="1"]');
  const tip = page.locator('.vqa-tip');
  await tip.waitFor({ state: 'visible' });
  assert.match((await tip.textContent()) ?? '', /^" is"\nlogp -0\.250 {3}p 0\.779$/);
  await page.mouse.move(0, 0);
  await page.locator('#cell-1 tr[data-index="0"] td.vqa-text').focus();
  await page.keyboard.press('ArrowRight');
  assert.match((await tip.textContent()) ?? '', /^"red"\nlogp -0\.100/);
  await page.keyboard.press('Escape');
  assert.equal(await tip.isVisible(), false);
});

test('reward table: headers sort (failed scores last, aria-sort set), disagreements filter', async () => {
  const { page } = browser;
  const col = (i: number) =>
    page.$$eval(
      '#cell-2 table.vqa-rewards-table tbody tr:not(.vqa-hidden)',
      (rows, c) => rows.map((r) => (r as HTMLTableRowElement).cells[c as number]!.textContent),
      i,
    );
  await page.click('#cell-2 button.vqa-sort[data-col="5"]'); // judge
  assert.deepEqual(await col(5), ['1', '1', '0.800', '0.500', 'failed']);
  assert.equal(await page.getAttribute('#cell-2 th:nth-child(6)', 'aria-sort'), 'descending');
  await page.focus('#cell-2 button.vqa-sort[data-col="5"]');
  await page.keyboard.press('Enter');
  assert.deepEqual(await col(5), ['0.500', '0.800', '1', '1', 'failed']);
  assert.equal(await page.getAttribute('#cell-2 th:nth-child(6)', 'aria-sort'), 'ascending');
  await page.check('#cell-2 input.vqa-only-dis');
  assert.deepEqual(await col(0), ['s2', 's1']);
  assert.equal(await page.textContent('#cell-2 .vqa-rowcount'), '2 of 5 rows');
});

test('dataset browser: pages, filters by answer type and text, opens a sample, Escape closes it', async () => {
  const { page } = browser;
  const ds = '#cell-4';
  assert.equal(await page.textContent(`${ds} .vqa-page`), 'page 1 of 4');
  assert.equal(await page.isDisabled(`${ds} button.vqa-prev`), true);
  await page.click(`${ds} button.vqa-next`);
  assert.equal(await page.textContent(`${ds} .vqa-page`), 'page 2 of 4');
  assert.equal(await page.getAttribute(`${ds} .vqa-card >> nth=0`, 'data-sample'), '8');
  await page.selectOption(`${ds} select.vqa-f-answer`, 'number');
  assert.equal(await page.textContent(`${ds} .vqa-matchcount`), '10 shown of 30');
  assert.equal(await page.textContent(`${ds} .vqa-page`), 'page 1 of 2');
  await page.fill(`${ds} input.vqa-f-text`, 'question 13');
  assert.equal(await page.locator(`${ds} .vqa-card`).count(), 1);
  await page.click(`${ds} .vqa-card`);
  assert.equal(await page.isVisible(`${ds} .vqa-detail .vqa-sample`), true);
  assert.match((await page.textContent(`${ds} .vqa-detail .vqa-question`)) ?? '', /how many question 13\?/);
  const zoom = page.locator(`${ds} .vqa-detail button.vqa-zoom`);
  await zoom.click();
  await zoom.press('Escape'); // the first Escape resets the zoom only
  assert.equal(await zoom.getAttribute('aria-pressed'), 'false');
  assert.equal(await page.isVisible(`${ds} .vqa-detail`), true);
  await page.keyboard.press('Escape');
  assert.equal(await page.isVisible(`${ds} .vqa-detail`), false);
});

test('metrics: one plotly figure (two runs × six metrics, raw behind smoothed); a live update goes through Plotly.react in place', async () => {
  const { page } = browser;
  const m = '#cell-3';
  const traces = () => page.$eval(`${m} .vqa-plot`, (el) => (el as unknown as { data: unknown[] }).data.length);
  assert.equal(await traces(), 24);
  await page.$eval(`${m} .vqa-plot`, (el) => {
    (el as unknown as Record<string, unknown>).__marker = 1;
  });
  await page.evaluate(() => window.scrollTo(0, 600));
  const scrollBefore = await page.evaluate(() => window.scrollY);
  const rev = Number(await page.getAttribute(`${m} .vqa-plot`, 'data-revision'));
  const next: MetricsPayload = {
    ...metrics,
    runs: [metrics.runs[0]!, { name: 'lr=1e-5', points: fx.points(35, 0) }],
    progress: { step: 35, total: 50, elapsedSeconds: 110, etaSeconds: 47, status: 'running' },
  };
  await page.evaluate((p) => window.vqalabWidgets.find((m: any) => m.host.closest('#cell-3')).render(p), next as never);
  await page.waitForFunction(
    (r) => Number(document.querySelector('#cell-3 .vqa-plot')?.getAttribute('data-revision')) > r,
    rev,
  );
  assert.equal(
    await page.$eval(`${m} .vqa-plot`, (el) => (el as unknown as Record<string, unknown>).__marker),
    1,
    'same plot element',
  );
  assert.equal(
    await page.$eval(`${m} .vqa-plot`, (el) => (el as unknown as { data: { x: number[] }[] }).data[3]!.x.length),
    35,
  );
  assert.equal(await page.evaluate(() => window.scrollY), scrollBefore, 'no scroll jump');
  assert.match(
    (await page.textContent(`${m} .vqa-progress-label`)) ?? '',
    /step 35\/50 · 1m50s elapsed · ETA 47s · running/,
  );
  // Smoothing off: only the raw traces remain.
  await page.$eval(`${m} input.vqa-smoothing`, (el) => {
    (el as HTMLInputElement).value = '0';
    el.dispatchEvent(new Event('input'));
  });
  await page.waitForFunction(
    () => (document.querySelector('#cell-3 .vqa-plot') as unknown as { data: unknown[] }).data.length === 12,
  );
  assert.equal(await page.textContent(`${m} output.vqa-smoothing-value`), '0.00');
  await page.locator(m).screenshot({ path: artifactPath('page-metrics.png') });
});

test('dark theme: widgets follow the theme variables and the plot re-themes when the theme flips', async () => {
  const { page } = browser;
  // A report page switches theme with data-theme on <html>; the widgets' dark fallbacks apply.
  await page.evaluate(() => {
    document.documentElement.dataset.theme = 'dark';
    document.body.style.background = '#0d1117';
  });
  await page.waitForFunction(() => {
    const el = document.querySelector('#cell-3 .vqa-plot') as unknown as { layout: { font: { color: string } } };
    return el.layout.font.color === '#e6edf3';
  });
  assert.equal(await page.$eval('#cell-0 .vqa-question', (el) => getComputedStyle(el).color), 'rgb(230, 237, 243)');
  await page.screenshot({ path: artifactPath('page-dark.png'), fullPage: true });
});

test('dispose() purges the plot (plotly releases its data and listeners)', async () => {
  const { page } = browser;
  const purged = await page.evaluate(() => {
    const m = window.vqalabWidgets.find((w: any) => w.host.closest('#cell-3'));
    const plot = document.querySelector('#cell-3 .vqa-plot');
    const before = Array.isArray(plot.data);
    m.dispose();
    return { before, after: plot.data === undefined && plot._fullLayout === undefined };
  });
  assert.deepEqual(purged, { before: true, after: true });
});

test('the page logged no errors', () => {
  assert.deepEqual(browser.problems, []);
});
