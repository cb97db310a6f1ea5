/**
 * End to end in a real JupyterLab 4.6.4 front end (Debian's jupyter-server + jupyterlab-server,
 * headless Chromium) with the "TypeScript (vqalab)" kernel: the prebuilt extension installed by
 * `vqalab lab install --user` loads as a federated extension; running the notebook (cells calling
 * show, browse, plot, dashboard and the reward lab) renders every widget with our renderers (DOM checks);
 * the dashboard updates in place while the loop runs; keyboard works inside widgets; a malformed
 * bundle shows its error; the dark theme renders; the saved notebook keeps vendor types and
 * fallbacks. Screenshots go to test-artifacts/.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Locator, Page } from 'playwright-core';
import { MIME } from '../../src/display/types.js';
import { artifactPath, launch, type Browser } from '../extension/chromium.js';
import { ensureLabApp, ROOT, startLab, type LabServer } from './lab.js';
import { DASHBOARD_STEPS, writeNotebook } from './notebook.js';

const cli = (args: string[], env: NodeJS.ProcessEnv) => execFileSync(process.execPath, [path.join(ROOT, 'bin/vqalab.js'), ...args], { env, encoding: 'utf8' }).trim();

// DOM globals inside page.evaluate callbacks (the project compiles without the DOM lib; these stay module-local).
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const window: any, document: any;
declare function getComputedStyle(el: unknown): any;

const t0 = performance.now();
const log = (s: string) => process.stderr.write(`[e2e ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}\n`);
let tmp: string;
let server: LabServer;
let browser: Browser;
let page: Page;
const timings: Record<string, number | null> = {};

/** The output area of code cell `i` (0-based among all cells, markdown included). */
const cell = (i: number): Locator => page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell').nth(i);

before(async () => {
  const times = ensureLabApp(log);
  timings.labInstallSeconds = times.installSeconds;
  timings.labBuildSeconds = times.buildSeconds;
  tmp = mkdtempSync(path.join(tmpdir(), 'vqa-e2e-'));
  const dirs = Object.fromEntries(['data', 'config', 'runtime', 'lab', 'notebooks'].map((d) => [d, path.join(tmp, d)]));
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env, JUPYTER_NO_CONFIG: '1', JUPYTER_DATA_DIR: dirs.data, JUPYTER_CONFIG_DIR: dirs.config,
    JUPYTER_RUNTIME_DIR: dirs.runtime, VQALAB_E2E_RUNTIME: dirs.lab, PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  // Exactly what a user runs: the extension and the kernelspec land in the user's Jupyter data folder.
  log(cli(['lab', 'install', '--user'], env));
  log(cli(['kernel', 'install', '--user'], env));
  await writeNotebook(dirs.notebooks!);
  const s = performance.now();
  server = await startLab(dirs.notebooks!, env);
  timings.serverStartSeconds = (performance.now() - s) / 1000;
  browser = await launch({ width: 1400, height: 1000 });
  page = browser.page;
  const p = performance.now();
  await page.goto(`${server.url}/lab?reset&token=${server.token}`);
  await page.waitForFunction(() => window.jupyterapp, null, { timeout: 60_000 });
  await page.evaluate(() => window.jupyterapp.restored);
  timings.pageRestoredSeconds = (performance.now() - p) / 1000;
  log('JupyterLab restored');
});

after(async () => {
  log(`timings ${JSON.stringify(timings)}`);
  await browser?.close();
  await server?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('the server lists the prebuilt extension and JupyterLab loads it', async () => {
  const federated = await page.evaluate(() => JSON.parse(document.getElementById('jupyter-config-data').textContent).federated_extensions);
  assert.deepEqual(federated.map((e: { name: string }) => e.name), ['vqalab-jupyterlab']);
});

test('running the notebook renders every widget with the extension; the dashboard updates in place while the loop runs', async () => {
  await page.evaluate(async () => {
    const w = await window.jupyterapp.commands.execute('docmanager:open', { path: 'widgets.ipynb', factory: 'Notebook' });
    await w.context.ready;
    await w.sessionContext.ready;
  });
  await page.waitForFunction(() => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle', null, { timeout: 60_000 });
  // Watch the dashboard from inside the page while the notebook runs: each change of its progress
  // label, with the plot's revision and the cell's prompt ([*] while running).
  await page.evaluate(() => {
    const seen: any[] = [];
    window.__dashboardLog = seen;
    window.__dashboardTimer = setInterval(() => {
      const c = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[6];
      const label = c?.querySelector('.vqa-progress-label')?.textContent;
      if (!label || seen.at(-1)?.label === label) return;
      seen.push({ label, rev: Number(c.querySelector('.vqa-plot')?.dataset.revision ?? 0), prompt: c.querySelector('.jp-InputArea-prompt')?.textContent,
        plot: c.querySelector('.vqa-plot'), outputs: c.querySelectorAll('.vqa-lab-output').length });
    }, 50);
  });
  const run = performance.now();
  await page.evaluate(() => window.jupyterapp.commands.execute('notebook:run-all-cells'));
  const dash = cell(6).locator('.vqa-metrics');
  await dash.locator('.vqa-plot[data-revision]').waitFor({ timeout: 60_000 });
  await cell(6).scrollIntoViewIfNeeded();
  // A picture of the dashboard mid-run when the machine is quick enough to catch one.
  if (/running$/.test(await dash.locator('.vqa-progress-label').textContent() ?? '')) await page.screenshot({ path: artifactPath('lab-dashboard-running.png') });
  await page.waitForFunction(() => [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')].every((p: any) => /\[\d+\]/.test(p.textContent)), null, { timeout: 120_000 });
  const seen = await page.evaluate(() => {
    clearInterval(window.__dashboardTimer);
    const log = window.__dashboardLog;
    const last = log.at(-1)?.plot;
    return log.map((e: any) => ({ label: e.label, rev: e.rev, running: /\[\*\]/.test(e.prompt ?? ''), outputs: e.outputs, samePlot: !e.plot || e.plot === last }));
  });
  log(`dashboard states seen: ${seen.length}, while running: ${seen.filter((e: { running: boolean }) => e.running).length}`);
  const live = seen.filter((e: { running: boolean; rev: number }) => e.running && e.rev > 0);
  assert.ok(live.length >= 4, `the plotted dashboard changed at least 4 times while the cell ran: ${JSON.stringify(seen)}`);
  assert.ok(live.every((e: { outputs: number }) => e.outputs === 1), 'always one output');
  assert.ok(seen.every((e: { samePlot: boolean }) => e.samePlot), 'the plot element was never replaced');
  assert.ok(live.at(-1).rev > live[0].rev, 'Plotly.react ran on updates');
  timings.runAllSeconds = (performance.now() - run) / 1000;
  assert.match(await dash.locator('.vqa-progress-label').textContent() ?? '', new RegExp(`^step ${DASHBOARD_STEPS}/${DASHBOARD_STEPS} · .* · done$`));
  assert.equal(await dash.evaluate((el: any) => el.querySelector('.vqa-plot').data.filter((t: any) => t.name === 'live' && t.mode === 'lines')[0].x.length), DASHBOARD_STEPS, 'every step plotted');
  assert.equal(await cell(6).locator('.vqa-lab-output').count(), 1, 'one output, updated in place');
  assert.match(await dash.locator('.vqa-latest h3').textContent() ?? '', /Group at step 19/);

  // Each widget is drawn by the extension (not the text/html fallback).
  assert.equal(await page.locator('.jp-NotebookPanel .vqa-lab-output').count(), 7);
  assert.equal(await page.locator('.jp-NotebookPanel .jp-RenderedHTMLCommon .vqa').count(), 0);
  assert.deepEqual(await page.$$eval('.jp-NotebookPanel .vqa-lab-output > [data-vqa]', (els: any[]) => els.map((e) => e.dataset.vqa)),
    ['sample', 'group', 'rewards', 'dataset', 'error', 'metrics', 'metrics']);
});

test('sample card: image with alt text, crisp, zoomable; answers with counts; prediction; rewards with parts', async () => {
  const c = cell(1);
  const img = c.locator('.vqa-sample figure img');
  assert.equal(await img.getAttribute('alt'), 'image scene.png for the question "What color is the square?"');
  assert.equal(await img.evaluate((el: any) => getComputedStyle(el).imageRendering), 'pixelated');
  assert.equal(await c.locator('.vqa-answers tbody tr').count(), 4);
  assert.match(await c.locator('.vqa-answers tr.vqa-match').textContent() ?? '', /^red\s*= prediction\s*7$/);
  assert.match(await c.locator('.vqa-prediction').textContent() ?? '', /7\/10 annotators/);
  assert.match(await c.locator('.vqa-reward-scores').textContent() ?? '', /tagged=1, brevity=−0\.500.*timeout after 30 s/);
  const zoom = c.locator('button.vqa-zoom');
  await zoom.click();
  assert.equal(await img.evaluate((el: any) => el.getBoundingClientRect().width), 576);
  await zoom.press('Escape');
  assert.equal(await zoom.getAttribute('aria-pressed'), 'false');
  await c.locator('.vqa-sample').screenshot({ path: artifactPath('lab-sample.png') });
});

test('group view: sorted by reward, sign-coloured advantages, clipped and truncated marked, token log-probs on hover', async () => {
  const c = cell(2);
  assert.deepEqual(await c.locator('table.vqa-completions tbody tr').evaluateAll((rows: any[]) => rows.map((r) => r.dataset.index)), ['0', '1', '3', '2', '5', '4']);
  assert.equal(await c.locator('.vqa-adv .vqa-pos').count(), 2);
  assert.equal(await c.locator('.vqa-adv .vqa-neg').count(), 3);
  assert.match(await c.locator('tr.vqa-clipped').textContent() ?? '', /clipped 25%/);
  assert.equal(await c.locator('.vqa-badge', { hasText: 'length' }).count(), 1);
  await c.locator('tr[data-index="1"] .vqa-tok[data-i="1"]').hover();
  assert.match(await page.locator('.vqa-tip').textContent() ?? '', /^" is"\nlogp -0\.250/);
  await page.mouse.move(5, 5);
  await c.locator('.vqa-group').screenshot({ path: artifactPath('lab-group.png') });
});

test('reward table (the reward lab in the kernel): keyboard sorting inside JupyterLab, disagreement filter', async () => {
  const c = cell(3);
  const rows = c.locator('table.vqa-rewards-table tbody tr');
  assert.equal(await rows.count(), 8);
  const headers = await c.locator('table.vqa-rewards-table thead th').allTextContents();
  assert.deepEqual(headers, ['sample', 'question', 'completion', 'vqa', 'exact', 'brief', 'disagreement']);
  // Sort by disagreement with the keyboard (the notebook's command-mode shortcuts stay out of the widget).
  const dis = c.locator('button.vqa-sort[data-col="6"]');
  await dis.focus();
  await page.keyboard.press('Enter');
  assert.equal(await c.locator('table.vqa-rewards-table th').nth(6).getAttribute('aria-sort'), 'descending');
  const values = (await rows.evaluateAll((rs: any[]) => rs.map((r) => Number(r.cells[6].dataset.v))));
  assert.deepEqual(values, [...values].sort((a, b) => b - a));
  assert.ok(values[0]! > 0, 'some completion makes the rewards disagree');
  await page.keyboard.press('Shift+Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.dataset?.col), '5', 'Shift+Tab moves to the previous header');
  await page.keyboard.press('Enter');
  assert.equal(await c.locator('table.vqa-rewards-table th').nth(5).getAttribute('aria-sort'), 'descending');
  const disagreeing = await c.locator('tr.vqa-disagree').count();
  await c.locator('input.vqa-only-dis').check();
  assert.equal(await c.locator('table.vqa-rewards-table tbody tr:not(.vqa-hidden)').count(), disagreeing);
  await c.locator('.vqa-rewards').screenshot({ path: artifactPath('lab-rewards.png') });
});

test('dataset browser: paging and filters; a malformed bundle shows a readable error in its cell', async () => {
  const c = cell(4);
  assert.equal(await c.locator('.vqa-card').count(), 8);
  await c.locator('button.vqa-next').click();
  assert.equal(await c.locator('.vqa-page').textContent(), 'page 2 of 4');
  await c.locator('select.vqa-f-question').selectOption('how many');
  assert.equal(await c.locator('.vqa-matchcount').textContent(), '10 shown of 30');
  await c.locator('.vqa-card').first().click();
  assert.equal(await c.locator('.vqa-detail .vqa-sample').count(), 1);
  await c.locator('.vqa-dataset').screenshot({ path: artifactPath('lab-dataset.png') });
  const err = cell(5).locator('[role="alert"]');
  assert.match(await err.textContent() ?? '', /vqalab could not render application\/vnd\.vqalab\.group\.v1\+json.*Expected finite number for group\.completions\[1\]\.advantage but received undefined/);
});

test('metrics with several runs overlaid; smoothing control re-smooths', async () => {
  const plot = cell(7).locator('.vqa-plot');
  await plot.waitFor();
  assert.equal(await plot.evaluate((el: any) => new Set(el.data.map((t: any) => t.name)).size), 2);
  await cell(7).locator('input.vqa-smoothing').evaluate((el: any) => { el.value = '0.9'; el.dispatchEvent(new Event('input')); });
  await page.waitForFunction(() => document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[7].querySelector('output.vqa-smoothing-value')?.textContent === '0.90');
  await cell(7).locator('.vqa-metrics').screenshot({ path: artifactPath('lab-metrics.png') });
});

test('dark theme: widgets and plots follow JupyterLab Dark', async () => {
  await page.evaluate(() => window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Dark' }));
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'false', null, { timeout: 30_000 });
  const fg = await cell(1).locator('.vqa-question').evaluate((el: any) => getComputedStyle(el).color);
  const [r, g, b] = fg.match(/\d+/g)!.map(Number);
  assert.ok(r! + g! + b! > 500, `light text on dark: ${fg}`);
  await page.waitForFunction(() => {
    const plot = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[6].querySelector('.vqa-plot');
    const c = plot?.layout?.font?.color ?? '';
    return (c.match(/\d+/g) ?? []).map(Number).reduce((a: number, x: number) => a + x, 0) > 500;
  }, null, { timeout: 10_000 });
  await cell(6).scrollIntoViewIfNeeded();
  await page.screenshot({ path: artifactPath('lab-dark.png') });
  await cell(6).locator('.vqa-metrics').screenshot({ path: artifactPath('lab-dashboard-dark.png') });
  await page.evaluate(() => window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' }));
});

test('the saved notebook keeps each output\'s vendor type with its fallbacks; the page logged no errors', async () => {
  const saved = await page.evaluate(async () => {
    const app = window.jupyterapp;
    const w = app.shell.currentWidget;
    await w.context.save();
    const m = await app.serviceManager.contents.get(w.context.path, { content: true });
    await w.sessionContext.shutdown();
    return m.content.cells.filter((c: any) => c.cell_type === 'code').map((c: any) => c.outputs.map((o: any) => `${o.output_type}:${Object.keys(o.data ?? {}).sort().join('|')}`));
  });
  assert.deepEqual(saved[0], [`display_data:${MIME.sample}|image/png|text/html|text/plain`]);
  assert.deepEqual(saved[2], [`display_data:${MIME.rewards}|text/html|text/plain`]);
  assert.deepEqual(saved[5], [`display_data:${MIME.metrics}|text/html|text/plain`], 'the dashboard is one output, its final value not echoed');
  assert.deepEqual(saved[6], [`display_data:${MIME.metrics}|text/html|text/plain`], 'plot() as the last line shows once');
  // JupyterLab 4.6 warns that jupyter-server 1.23's kernel manager lacks kernelInfoTimeout: harmless.
  const problems = browser.problems.filter((p) => !/kernel manager does not support the kernelInfoTimeout/.test(p));
  assert.deepEqual(problems, []);
});
