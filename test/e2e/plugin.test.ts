/**
 * End to end for the application plugin (extension/src/plugin.ts) in the real JupyterLab 4.6.4
 * front end with the "TypeScript (vqalab)" kernel: the Runs panel lists the two runs of the
 * notebook's folder and overlays them, then shows a third while a notebook cell writes it (step by
 * step: the cell waits for a gate file the test writes after it has seen the previous step, so
 * nothing races the clock); the status bar shows that run and its stop button stops it at a step
 * boundary with the kernel alive; "Export as Reproducible Report" runs `vqalab report run` and the
 * report opens in a new tab. Screenshots go to test-artifacts/.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { artifactPath, type Browser } from '../extension/chromium.js';
import { ensureLabApp, ROOT, startLab, type LabServer } from './lab.js';
import { openLab, openNotebook } from './page.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
declare const window: any, document: any;

const cli = (args: string[], env: NodeJS.ProcessEnv) =>
  execFileSync(process.execPath, [path.join(ROOT, 'bin/vqalab.js'), ...args], { env, encoding: 'utf8' }).trim();
const t0 = performance.now();
const log = (s: string) => process.stderr.write(`[e2e-plugin ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}\n`);

const TOTAL = 8;
let tmp: string;
let nbDir: string;
let server: LabServer;
let browser: Browser;
let page: Page;

function code(source: string): object {
  return { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source };
}

function notebook(cells: object[]): string {
  return JSON.stringify(
    {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { kernelspec: { name: 'vqalab', display_name: 'TypeScript (vqalab)', language: 'typescript' } },
      cells,
    },
    null,
    1,
  );
}

/** metrics.jsonl lines as the trainer writes them (src/grpo/metrics.ts: one StepMetrics object per line). */
function metricsLines(steps: number, base: number): string {
  return Array.from(
    { length: steps },
    (_, step) =>
      JSON.stringify({
        step,
        time: new Date(0).toISOString(),
        rewardMean: base + 0.04 * step,
        rewardStd: 0.1,
        loss: 1 / (step + 1),
        rewardParts: { vqa: base },
      }) + '\n',
  ).join('');
}

/**
 * The third run: a cell that writes metrics.jsonl and a live dashboard one step at a time, each
 * step only once the test has written its gate file, checking the interrupt scope between steps
 * (as the trainer does at its step boundary).
 */
const TRAIN_CELL = `import { appendFileSync, existsSync, mkdirSync } from 'fs';
mkdirSync('runs/gamma', { recursive: true });
const total = ${TOTAL};
const live = dashboard({ title: 'gamma', total, run: 'gamma', intervalMs: 0 });
const signal = interruptSignal();
let step = 0;
for (; step < total; step++) {
  while (!existsSync(\`gate-\${step}\`) && !signal.aborted) await new Promise((r) => setTimeout(r, 20));
  if (signal.aborted) break;
  const m = { step, rewardMean: 0.3 + 0.05 * step, rewardStd: 0.1, loss: 1 / (step + 1) };
  appendFileSync('runs/gamma/metrics.jsonl', JSON.stringify(m) + '\\n');
  live.log({ step, reward: m.rewardMean, loss: m.loss });
}
live.finish(signal.aborted ? 'stopped' : 'done');
\`stopped after \${step} steps\``;

before(async () => {
  ensureLabApp(log);
  tmp = mkdtempSync(path.join(tmpdir(), 'vqa-e2e-plugin-'));
  const dirs = Object.fromEntries(['data', 'config', 'runtime', 'lab', 'notebooks'].map((d) => [d, path.join(tmp, d)]));
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  nbDir = dirs.notebooks!;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    JUPYTER_NO_CONFIG: '1',
    JUPYTER_DATA_DIR: dirs.data,
    JUPYTER_CONFIG_DIR: dirs.config,
    JUPYTER_RUNTIME_DIR: dirs.runtime,
    VQALAB_E2E_RUNTIME: dirs.lab,
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  log(cli(['lab', 'install', '--user'], env));
  log(cli(['kernel', 'install', '--user'], env));
  // Two finished runs: alpha (metrics only) and beta (with a checkpoint whose trainer.json holds its config).
  for (const [name, base] of [
    ['alpha', 0.2],
    ['beta', 0.25],
  ] as const) {
    mkdirSync(path.join(nbDir, 'runs', name), { recursive: true });
    writeFileSync(path.join(nbDir, 'runs', name, 'metrics.jsonl'), metricsLines(6, base));
  }
  const ckpt = path.join(nbDir, 'runs/beta/checkpoints/checkpoint-000006');
  mkdirSync(ckpt, { recursive: true });
  writeFileSync(path.join(nbDir, 'runs/beta/checkpoints/latest'), 'checkpoint-000006\n');
  writeFileSync(
    path.join(ckpt, 'trainer.json'),
    JSON.stringify({ step: 6, config: { learningRate: 1e-5, groupSize: 4, klBeta: 0 }, seed: 7, metrics: [] }, null, 1),
  );
  writeFileSync(path.join(nbDir, 'train.ipynb'), notebook([code(TRAIN_CELL)]));
  writeFileSync(
    path.join(nbDir, 'report-me.ipynb'),
    notebook([
      { ...code('let points = 4;'), metadata: { tags: ['parameters'] } },
      code(
        'const xs = Array.from({ length: points }, (_, i) => i);\ndisplay({ "application/vnd.plotly.v1+json": { data: [{ type: "scatter", mode: "lines", x: xs, y: xs.map((x) => x * x) }], layout: { title: { text: "squares" } } }, "text/plain": "squares" });',
      ),
    ]),
  );
  server = await startLab(nbDir, env);
  ({ browser, page } = await openLab(server));
  log('JupyterLab restored');
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const runItem = (name: string) => page.locator(`.vqa-runs-item[data-run="runs/${name}"]`);

test('the plugin is loaded: Runs panel, export command in the palette, File menu and notebook toolbar', async () => {
  const has = await page.evaluate(() => ({
    command: window.jupyterapp.commands.hasCommand('vqalab:export-report'),
    panel: !!document.getElementById('vqalab-runs'),
  }));
  assert.deepEqual(has, { command: true, panel: true });
});

test("the Runs panel lists the two runs of the notebook's folder and overlays them; details show a run's config", async () => {
  await openNotebook(page, 'train.ipynb');
  assert.equal(
    await page.locator('.jp-NotebookPanel-toolbar .vqa-export-button').count(),
    1,
    'the notebook toolbar has the export button',
  );
  await page.evaluate(() => window.jupyterapp.shell.activateById('vqalab-runs'));
  await page.waitForFunction(
    () =>
      document.querySelectorAll('#vqalab-runs .vqa-runs-item').length === 2 &&
      document.querySelector('#vqalab-runs .vqa-runs-plot')?.dataset.runs === '2',
    null,
    { timeout: 60_000 },
  );
  assert.match(await runItem('alpha').innerText(), /6 steps/);
  assert.match(await runItem('beta').innerText(), /6 steps · checkpoint-000006/);
  // One metrics widget overlays both runs (its legend names them).
  const plot = page.locator('#vqalab-runs .vqa-runs-plot');
  await plot.locator('svg').first().waitFor({ timeout: 30_000 });
  const legend = await plot.innerText();
  assert.ok(legend.includes('runs/alpha') && legend.includes('runs/beta'), legend);
  await runItem('beta').locator('.vqa-runs-info').click();
  await page.locator('#vqalab-runs .vqa-runs-config').waitFor({ timeout: 30_000 });
  const config = await page.locator('#vqalab-runs .vqa-runs-config').innerText();
  assert.match(config, /"groupSize": 4/);
  assert.ok(!config.includes('"metrics"'), 'the metrics history is left out of the details');
  await page.screenshot({ path: artifactPath('lab-runs-panel.png') });
});

test('a third run appears and updates while it trains; the status bar shows it; stop ends it at a step boundary, the kernel alive', async () => {
  // Not awaited: the command's promise settles when the cell ends, and the cell waits for the gates.
  await page.evaluate(() => {
    void window.jupyterapp.commands.execute('notebook:run-all-cells');
  });
  const gate = (i: number) => writeFileSync(path.join(nbDir, `gate-${i}`), '');
  gate(0);
  gate(1);
  await page.waitForFunction(
    () =>
      /2 steps/.test(document.querySelector('.vqa-runs-item[data-run="runs/gamma"]')?.textContent ?? '') &&
      document.querySelector('#vqalab-runs .vqa-runs-plot')?.dataset.runs === '3',
    null,
    { timeout: 120_000 },
  );
  // The panel follows the file while it grows.
  gate(2);
  await page.waitForFunction(
    () => /3 steps/.test(document.querySelector('.vqa-runs-item[data-run="runs/gamma"]')?.textContent ?? ''),
    null,
    { timeout: 60_000 },
  );
  const status = page.locator('.vqa-run-status');
  await page.waitForFunction(
    (t: number) => new RegExp(`^step 3/${t}`).test(document.querySelector('.vqa-run-status-text')?.textContent ?? ''),
    TOTAL,
    { timeout: 60_000 },
  );
  assert.match(await status.innerText(), /reward 0\.400/);
  assert.ok(await page.locator('.vqa-run-stop').isVisible());
  await page.screenshot({ path: artifactPath('lab-runs-live-status.png') });
  // The loop is waiting for gate-3: the stop button interrupts it at that step boundary.
  await page.locator('.vqa-run-stop').click();
  await page.waitForFunction(
    () =>
      /\[\d+\]/.test(document.querySelector('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')?.textContent ?? ''),
    null,
    { timeout: 60_000 },
  );
  const out = await page.locator('.jp-NotebookPanel .jp-CodeCell .jp-OutputArea').first().innerText();
  assert.match(out, /stopped after 3 steps/);
  assert.match(out, /InterruptedError/);
  assert.equal(
    readFileSync(path.join(nbDir, 'runs/gamma/metrics.jsonl'), 'utf8').trim().split('\n').length,
    3,
    'three whole steps, nothing half-written',
  );
  await page.waitForFunction(
    () => /stopped/.test(document.querySelector('.vqa-run-status-text')?.textContent ?? ''),
    null,
    { timeout: 30_000 },
  );
  // The kernel is alive and keeps its state.
  const reply = await page.evaluate(async () => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    let text = '';
    const future = kernel.requestExecute({ code: 'step * 10' });
    future.onIOPub = (msg: any) => {
      if (msg.header.msg_type === 'execute_result') text = msg.content.data['text/plain'];
    };
    const r = await future.done;
    return { status: r.content.status, text };
  });
  assert.deepEqual(reply, { status: 'ok', text: '30' });
  await page.waitForFunction(
    () => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle',
    null,
    { timeout: 30_000 },
  );
  await page.screenshot({ path: artifactPath('lab-run-stopped.png') });
});

test('Export as Reproducible Report saves the notebook, runs vqalab report run and opens the report in a new tab', async () => {
  await openNotebook(page, 'report-me.ipynb');
  const popup = page.context().waitForEvent('page', { timeout: 300_000 });
  const reportPath = await page.evaluate(() => window.jupyterapp.commands.execute('vqalab:export-report'));
  assert.equal(reportPath, 'reports/report-me/report.html', String(reportPath));
  assert.ok(existsSync(path.join(nbDir, 'reports/report-me/report.html')));
  const tab = await popup;
  await tab.waitForLoadState();
  assert.match(tab.url(), /\/files\/reports\/report-me\/report\.html/);
  await tab.waitForSelector('html[data-hydrated="true"]', { timeout: 60_000 });
  await tab.locator('.vq-plotly.vq-rendered .main-svg').first().waitFor({ timeout: 30_000 });
  assert.ok(await tab.locator('.vq-plotly .gtitle', { hasText: 'squares' }).isVisible());
  await tab.screenshot({ path: artifactPath('lab-exported-report.png'), fullPage: true });
  await page
    .locator('.jp-toast-message', { hasText: 'Report written' })
    .first()
    .waitFor({ timeout: 30_000 })
    .catch(() => undefined);
  await page.screenshot({ path: artifactPath('lab-export-notification.png') });
  await tab.close();
});
