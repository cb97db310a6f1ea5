/**
 * End to end in a real JupyterLab 4.6.4 front end (Debian's jupyter-server + jupyterlab-server,
 * headless Chromium) with the "TypeScript (vqalab)" kernel: the prebuilt extension installed by
 * `vqalab lab install --user` loads as a federated extension; the quickstart notebook
 * (notebooks/quickstart.ipynb: real data, the embedded policy, a reward lab, one trainer.step()
 * with show(group), trainer.run() with its built-in live dashboard, a plot) runs all and renders
 * every widget, the dashboard updating while it trains, also in the dark theme; then a notebook of
 * fixed payloads (cells calling show, browse, plot, dashboard and the reward lab) checks the
 * renderers in detail (DOM checks);
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
import { artifactPath, type Browser } from '../extension/chromium.js';
import { ensureLabApp, ROOT, startLab, type LabServer } from './lab.js';
import { openLab, openNotebook } from './page.js';
import {
  DASHBOARD_STEPS,
  GATED_STEPS,
  QUICKSTART_STEPS,
  releaseGate,
  writeNotebook,
  writeQuickstart,
} from './notebook.js';

const cli = (args: string[], env: NodeJS.ProcessEnv) =>
  execFileSync(process.execPath, [path.join(ROOT, 'bin/vqalab.js'), ...args], { env, encoding: 'utf8' }).trim();

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
let quick: ReturnType<typeof writeQuickstart>;
let notebooksDir: string;
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
    ...process.env,
    JUPYTER_NO_CONFIG: '1',
    JUPYTER_DATA_DIR: dirs.data,
    JUPYTER_CONFIG_DIR: dirs.config,
    JUPYTER_RUNTIME_DIR: dirs.runtime,
    VQALAB_E2E_RUNTIME: dirs.lab,
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  // Exactly what a user runs: the extension and the kernelspec land in the user's Jupyter data folder.
  log(cli(['lab', 'install', '--user'], env));
  log(cli(['kernel', 'install', '--user'], env));
  notebooksDir = dirs.notebooks!;
  await writeNotebook(dirs.notebooks!);
  quick = writeQuickstart(dirs.notebooks!, ROOT, {
    browse: 'await browse(',
    sample: 'await show(train.get(0))',
    rewards: 'await vqalab.rewardLab(',
    group: 'await show(group',
    run: 'await trainer.run(',
    plot: 'plot([{ name: "quickstart"',
  });
  const s = performance.now();
  server = await startLab(dirs.notebooks!, env);
  timings.serverStartSeconds = (performance.now() - s) / 1000;
  const p = performance.now();
  ({ browser, page } = await openLab(server));
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
  const federated = await page.evaluate(
    () => JSON.parse(document.getElementById('jupyter-config-data').textContent).federated_extensions,
  );
  assert.deepEqual(
    federated.map((e: { name: string }) => e.name),
    ['vqalab-jupyterlab'],
  );
});

/** Record each change of cell `index`'s dashboard progress label or plot revision (and whether the cell runs). */
async function watchDashboard(index: number): Promise<void> {
  await page.evaluate((i: number) => {
    const seen: any[] = [];
    window.__dashboardLog = seen;
    window.__dashboardTimer = setInterval(() => {
      const c = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[i];
      const label = c?.querySelector('.vqa-progress-label')?.textContent;
      const rev = Number(c.querySelector('.vqa-plot')?.dataset.revision ?? 0);
      if (!label || (seen.at(-1)?.label === label && seen.at(-1)?.rev === rev)) return;
      seen.push({
        label,
        rev,
        prompt: c.querySelector('.jp-InputArea-prompt')?.textContent,
        plot: c.querySelector('.vqa-plot'),
        outputs: c.querySelectorAll('.vqa-lab-output').length,
      });
    }, 50);
  }, index);
}

/**
 * Starts "run all" without waiting for it, then takes turns with the gated loop (GATED_STEPS):
 * each time the page has recorded one more drawn dashboard state while the cell runs, the loop
 * may take its next step.
 */
async function runAllGated(gate: string, index: number): Promise<void> {
  await page.evaluate(() => {
    void window.jupyterapp.commands.execute('notebook:run-all-cells');
  });
  // The plot is drawn once its cell is on screen.
  await cell(index).locator('.vqa-metrics').waitFor({ timeout: 300_000 });
  await cell(index).scrollIntoViewIfNeeded();
  for (let n = 1; n <= GATED_STEPS; n++) {
    await page
      .waitForFunction(
        (k: number) => window.__dashboardLog.filter((e: any) => /\[\*\]/.test(e.prompt ?? '') && e.rev > 0).length >= k,
        n,
        { timeout: 300_000 },
      )
      .catch(async (err: Error) => {
        const seen = await page.evaluate(() =>
          window.__dashboardLog.map((e: any) => `${e.label} rev ${e.rev} ${e.prompt}`),
        );
        const prompts = await page.evaluate(() =>
          [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')].map(
            (p: any) => p.textContent,
          ),
        );
        throw new Error(
          `gate ${gate} ${n}: the page never showed a drawn dashboard state while the cell ran (${err.message}); seen ${JSON.stringify(seen)}; prompts ${JSON.stringify(prompts)}`,
        );
      });
    releaseGate(notebooksDir, gate, n);
  }
}

/** Stop watching; what was seen. */
async function dashboardStates(): Promise<
  { label: string; rev: number; running: boolean; outputs: number; samePlot: boolean }[]
> {
  return page.evaluate(() => {
    clearInterval(window.__dashboardTimer);
    const log = window.__dashboardLog;
    const last = log.at(-1)?.plot;
    return log.map((e: any) => ({
      label: e.label,
      rev: e.rev,
      running: /\[\*\]/.test(e.prompt ?? ''),
      outputs: e.outputs,
      samePlot: !e.plot || e.plot === last,
    }));
  });
}

const allCellsRan = () =>
  page.waitForFunction(
    () =>
      [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')].every((p: any) =>
        /\[\d+\]/.test(p.textContent),
      ),
    null,
    { timeout: 300_000 },
  );

/** Save the current notebook, shut its kernel down and close it; returns each cell's saved output types. */
async function saveAndClose(): Promise<string[][]> {
  const saved = await page.evaluate(async () => {
    const app = window.jupyterapp;
    const w = app.shell.currentWidget;
    if (!w?.context) return [];
    await w.context.save();
    const m = await app.serviceManager.contents.get(w.context.path, { content: true });
    await w.sessionContext.shutdown();
    w.close();
    return m.content.cells.map((cl: any) =>
      (cl.outputs ?? []).map(
        (o: any) =>
          `${o.output_type}:${Object.keys(o.data ?? {})
            .sort()
            .join('|')}`,
      ),
    );
  });
  await page.waitForFunction(() => document.querySelectorAll('.jp-NotebookPanel').length === 0, null, {
    timeout: 60_000,
  });
  return saved;
}

test("the quickstart notebook runs all: dataset, sample, rewards, the step's group, the live training dashboard and the plot render; dark theme", async () => {
  await openNotebook(page, quick.file);
  try {
    await checkQuickstart();
  } finally {
    // Whatever happened, the next notebook gets the page to itself.
    await page.evaluate(() =>
      window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' }),
    );
    const saved = await saveAndClose();
    const c = quick.cells;
    assert.deepEqual(
      saved[c.group!]!.filter((o) => o.startsWith('display_data')),
      [`display_data:${MIME.group}|text/html|text/plain`],
    );
    assert.equal(
      saved[c.run!]!.filter((o: string) => o === `display_data:${MIME.metrics}|text/html|text/plain`).length,
      1,
      `the dashboard is one output: ${JSON.stringify(saved[c.run!])}`,
    );
  }
});

async function checkQuickstart(): Promise<void> {
  const c = quick.cells;
  await watchDashboard(c.run!);
  const run = performance.now();
  await runAllGated('quickstart', c.run!);
  const dash = cell(c.run!).locator('.vqa-metrics');
  await dash.locator('.vqa-plot[data-revision]').waitFor({ timeout: 240_000 });
  await cell(c.run!).scrollIntoViewIfNeeded();
  if (/running$/.test((await dash.locator('.vqa-progress-label').textContent()) ?? ''))
    await page.screenshot({ path: artifactPath('lab-quickstart-training.png') });
  await allCellsRan();
  timings.quickstartRunAllSeconds = (performance.now() - run) / 1000;
  const seen = await dashboardStates();
  log(`quickstart dashboard states seen: ${seen.length}, while training: ${seen.filter((e) => e.running).length}`);
  const running = seen.filter((e) => e.running);
  assert.ok(
    running.length >= 3,
    `the training dashboard changed at least 3 times while trainer.run() ran: ${JSON.stringify(seen)}`,
  );
  const plotted = running.filter((e) => e.rev > 0);
  assert.ok(
    plotted.length >= 2 && plotted.at(-1)!.rev > plotted[0]!.rev,
    `the plot was redrawn in place while training (Plotly.react): ${JSON.stringify(seen)}`,
  );
  assert.ok(
    seen.every((e) => e.outputs <= 1 && e.samePlot),
    'one dashboard output, its plot never replaced',
  );
  // One GRPO step in the cell before, then QUICKSTART_STEPS more: progress counts the trainer's global steps.
  const total = QUICKSTART_STEPS + 1;
  assert.match(
    (await dash.locator('.vqa-progress-label').textContent()) ?? '',
    new RegExp(`^step ${total}/${total} · .* · done$`),
  );
  assert.equal(
    await dash.evaluate(
      (el: any) =>
        el.querySelector('.vqa-plot').data.filter((t: any) => t.name === 'run' && t.mode === 'lines')[0].x.length,
    ),
    QUICKSTART_STEPS,
    'every step of the run plotted',
  );
  assert.match(
    (await dash.locator('.vqa-latest h3').textContent()) ?? '',
    new RegExp(`Group at step ${QUICKSTART_STEPS}`),
  );
  assert.equal(await cell(c.run!).locator('.vqa-lab-output').count(), 1, 'one dashboard, updated in place');

  // Every widget of the notebook is drawn by the extension, in the cell that made it.
  const kind = (i: number) =>
    cell(i)
      .locator('.vqa-lab-output > [data-vqa]')
      .evaluateAll((els: any[]) => els.map((e) => e.dataset.vqa));
  assert.deepEqual(await kind(c.browse!), ['dataset']);
  assert.deepEqual(await kind(c.sample!), ['sample']);
  assert.deepEqual(await kind(c.rewards!), ['rewards']);
  assert.deepEqual(await kind(c.group!), ['group']);
  assert.deepEqual(await kind(c.run!), ['metrics']);
  assert.deepEqual(await kind(c.plot!), ['metrics']);
  assert.equal(
    await page.locator('.jp-NotebookPanel .jp-RenderedHTMLCommon .vqa').count(),
    0,
    'no widget fell back to its HTML',
  );
  assert.ok((await cell(c.browse!).locator('.vqa-card').count()) > 0);
  const img = cell(c.sample!).locator('.vqa-sample figure img');
  assert.match((await img.getAttribute('alt')) ?? '', /^image synth_\d+\.png for the question "/);
  await cell(c.sample!).scrollIntoViewIfNeeded();
  const natural = await img.evaluate(async (el: any) => {
    await el.decode();
    return [el.naturalWidth, el.naturalHeight];
  });
  assert.ok(natural[0] >= 112 && natural[0] === natural[1], `the sample's picture loaded: ${natural}`);
  // The group of the step: its completions (G = 4), sorted by reward, with token log-probs to hover.
  const g = cell(c.group!);
  assert.equal(await g.locator('table.vqa-completions tbody tr').count(), 4);
  const rewards = await g
    .locator('table.vqa-completions tbody tr')
    .evaluateAll((rows: any[]) => rows.map((r) => Number(r.cells[2].textContent)));
  assert.ok(
    rewards.every(Number.isFinite) && rewards.every((r, i) => i === 0 || r <= rewards[i - 1]!),
    `sorted by reward: ${rewards}`,
  );
  assert.ok((await g.locator('.vqa-tok').count()) > 0, 'token log-probs on hover');
  await g.scrollIntoViewIfNeeded();
  const groupImage = await g
    .locator('.vqa-group img')
    .first()
    .evaluate(async (el: any) => {
      await el.decode();
      return el.naturalWidth;
    });
  assert.ok(groupImage >= 112, `the group shows the prompt's image (${groupImage} px)`);
  await g.locator('.vqa-group').screenshot({ path: artifactPath('lab-quickstart-group.png') });
  await cell(c.run!)
    .locator('.vqa-metrics')
    .screenshot({ path: artifactPath('lab-quickstart-dashboard.png') });

  await page.evaluate(() => window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Dark' }));
  await page.waitForFunction(
    (i: number) => {
      const plot = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[i].querySelector('.vqa-plot');
      const col = plot?.layout?.font?.color ?? '';
      return (
        document.body.dataset.jpThemeLight === 'false' &&
        (col.match(/\d+/g) ?? []).map(Number).reduce((a: number, x: number) => a + x, 0) > 500
      );
    },
    c.run!,
    { timeout: 30_000 },
  );
  await cell(c.run!).scrollIntoViewIfNeeded();
  await page.screenshot({ path: artifactPath('lab-quickstart-dark.png') });
  await page.evaluate(() => window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' }));
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'true', null, { timeout: 30_000 });
}

test('running the notebook renders every widget with the extension; the dashboard updates in place while the loop runs', async () => {
  await openNotebook(page, 'widgets.ipynb');
  // Watch the dashboard from inside the page while the notebook runs: each change of its progress
  // label, with the plot's revision and the cell's prompt ([*] while running).
  await watchDashboard(6);
  const run = performance.now();
  await runAllGated('widgets', 6);
  const dash = cell(6).locator('.vqa-metrics');
  await dash.locator('.vqa-plot[data-revision]').waitFor({ timeout: 60_000 });
  await cell(6).scrollIntoViewIfNeeded();
  // A picture of the dashboard mid-run when the machine is quick enough to catch one.
  if (/running$/.test((await dash.locator('.vqa-progress-label').textContent()) ?? ''))
    await page.screenshot({ path: artifactPath('lab-dashboard-running.png') });
  await allCellsRan();
  const seen = await dashboardStates();
  log(
    `dashboard states seen: ${seen.length}, while running: ${seen.filter((e: { running: boolean }) => e.running).length}`,
  );
  const live = seen.filter((e: { running: boolean; rev: number }) => e.running && e.rev > 0);
  assert.ok(
    live.length >= 4,
    `the plotted dashboard changed at least 4 times while the cell ran: ${JSON.stringify(seen)}`,
  );
  assert.ok(
    live.every((e: { outputs: number }) => e.outputs === 1),
    'always one output',
  );
  assert.ok(
    seen.every((e: { samePlot: boolean }) => e.samePlot),
    'the plot element was never replaced',
  );
  assert.ok(live.at(-1)!.rev > live[0]!.rev, 'Plotly.react ran on updates');
  timings.runAllSeconds = (performance.now() - run) / 1000;
  assert.match(
    (await dash.locator('.vqa-progress-label').textContent()) ?? '',
    new RegExp(`^step ${DASHBOARD_STEPS}/${DASHBOARD_STEPS} · .* · done$`),
  );
  assert.equal(
    await dash.evaluate(
      (el: any) =>
        el.querySelector('.vqa-plot').data.filter((t: any) => t.name === 'live' && t.mode === 'lines')[0].x.length,
    ),
    DASHBOARD_STEPS,
    'every step plotted',
  );
  assert.equal(await cell(6).locator('.vqa-lab-output').count(), 1, 'one output, updated in place');
  assert.match((await dash.locator('.vqa-latest h3').textContent()) ?? '', /Group at step 19/);

  // Each widget is drawn by the extension (not the text/html fallback).
  assert.equal(await page.locator('.jp-NotebookPanel .vqa-lab-output').count(), 7);
  assert.equal(await page.locator('.jp-NotebookPanel .jp-RenderedHTMLCommon .vqa').count(), 0);
  assert.deepEqual(
    await page.$$eval('.jp-NotebookPanel .vqa-lab-output > [data-vqa]', (els: any[]) => els.map((e) => e.dataset.vqa)),
    ['sample', 'group', 'rewards', 'dataset', 'error', 'metrics', 'metrics'],
  );
});

test('sample card: image with alt text, crisp, zoomable; answers with counts; prediction; rewards with parts', async () => {
  const c = cell(1);
  const img = c.locator('.vqa-sample figure img');
  assert.equal(await img.getAttribute('alt'), 'image scene.png for the question "What color is the square?"');
  assert.equal(await img.evaluate((el: any) => getComputedStyle(el).imageRendering), 'pixelated');
  assert.equal(await c.locator('.vqa-answers tbody tr').count(), 4);
  assert.match((await c.locator('.vqa-answers tr.vqa-match').textContent()) ?? '', /^red\s*= prediction\s*7$/);
  assert.match((await c.locator('.vqa-prediction').textContent()) ?? '', /7\/10 annotators/);
  assert.match(
    (await c.locator('.vqa-reward-scores').textContent()) ?? '',
    /tagged=1, brevity=−0\.500.*timeout after 30 s/,
  );
  const zoom = c.locator('button.vqa-zoom');
  await zoom.click();
  assert.equal(await img.evaluate((el: any) => el.getBoundingClientRect().width), 576);
  await zoom.press('Escape');
  assert.equal(await zoom.getAttribute('aria-pressed'), 'false');
  await c.locator('.vqa-sample').screenshot({ path: artifactPath('lab-sample.png') });
});

test('group view: sorted by reward, sign-coloured advantages, clipped and truncated marked, token log-probs on hover', async () => {
  const c = cell(2);
  assert.deepEqual(
    await c.locator('table.vqa-completions tbody tr').evaluateAll((rows: any[]) => rows.map((r) => r.dataset.index)),
    ['0', '1', '3', '2', '5', '4'],
  );
  assert.equal(await c.locator('.vqa-adv .vqa-pos').count(), 2);
  assert.equal(await c.locator('.vqa-adv .vqa-neg').count(), 3);
  assert.match((await c.locator('tr.vqa-clipped').textContent()) ?? '', /clipped 25%/);
  assert.equal(await c.locator('.vqa-badge', { hasText: 'length' }).count(), 1);
  await c.locator('tr[data-index="1"] .vqa-tok[data-i="1"]').hover();
  assert.match((await page.locator('.vqa-tip').textContent()) ?? '', /^" is"\nlogp -0\.250/);
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
  const values = await rows.evaluateAll((rs: any[]) => rs.map((r) => Number(r.cells[6].dataset.v)));
  assert.deepEqual(
    values,
    [...values].sort((a, b) => b - a),
  );
  assert.ok(values[0]! > 0, 'some completion makes the rewards disagree');
  await page.keyboard.press('Shift+Tab');
  assert.equal(
    await page.evaluate(() => document.activeElement?.dataset?.col),
    '5',
    'Shift+Tab moves to the previous header',
  );
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
  assert.match(
    (await err.textContent()) ?? '',
    /vqalab could not render application\/vnd\.vqalab\.group\.v1\+json.*Expected finite number for group\.completions\[1\]\.advantage but received undefined/,
  );
});

test('metrics with several runs overlaid; smoothing control re-smooths', async () => {
  const plot = cell(7).locator('.vqa-plot');
  await plot.waitFor();
  assert.equal(await plot.evaluate((el: any) => new Set(el.data.map((t: any) => t.name)).size), 2);
  await cell(7)
    .locator('input.vqa-smoothing')
    .evaluate((el: any) => {
      el.value = '0.9';
      el.dispatchEvent(new Event('input'));
    });
  await page.waitForFunction(
    () =>
      document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[7].querySelector('output.vqa-smoothing-value')
        ?.textContent === '0.90',
  );
  await cell(7)
    .locator('.vqa-metrics')
    .screenshot({ path: artifactPath('lab-metrics.png') });
});

test('dark theme: widgets and plots follow JupyterLab Dark', async () => {
  await page.evaluate(() => window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Dark' }));
  await page.waitForFunction(() => document.body.dataset.jpThemeLight === 'false', null, { timeout: 30_000 });
  const fg = await cell(1)
    .locator('.vqa-question')
    .evaluate((el: any) => getComputedStyle(el).color);
  const [r, g, b] = fg.match(/\d+/g)!.map(Number);
  assert.ok(r! + g! + b! > 500, `light text on dark: ${fg}`);
  await page.waitForFunction(
    () => {
      const plot = document.querySelectorAll('.jp-NotebookPanel .jp-Cell')[6].querySelector('.vqa-plot');
      const c = plot?.layout?.font?.color ?? '';
      return (c.match(/\d+/g) ?? []).map(Number).reduce((a: number, x: number) => a + x, 0) > 500;
    },
    null,
    { timeout: 60_000 },
  );
  await cell(6).scrollIntoViewIfNeeded();
  await page.screenshot({ path: artifactPath('lab-dark.png') });
  await cell(6)
    .locator('.vqa-metrics')
    .screenshot({ path: artifactPath('lab-dashboard-dark.png') });
  await page.evaluate(() => window.jupyterapp.commands.execute('apputils:change-theme', { theme: 'JupyterLab Light' }));
});

test("the saved notebook keeps each output's vendor type with its fallbacks; the page logged no errors", async () => {
  const saved = await page.evaluate(async () => {
    const app = window.jupyterapp;
    const w = app.shell.currentWidget;
    await w.context.save();
    const m = await app.serviceManager.contents.get(w.context.path, { content: true });
    await w.sessionContext.shutdown();
    return m.content.cells
      .filter((c: any) => c.cell_type === 'code')
      .map((c: any) =>
        c.outputs.map(
          (o: any) =>
            `${o.output_type}:${Object.keys(o.data ?? {})
              .sort()
              .join('|')}`,
        ),
      );
  });
  assert.deepEqual(saved[0], [`display_data:${MIME.sample}|image/png|text/html|text/plain`]);
  assert.deepEqual(saved[2], [`display_data:${MIME.rewards}|text/html|text/plain`]);
  assert.deepEqual(
    saved[5],
    [`display_data:${MIME.metrics}|text/html|text/plain`],
    'the dashboard is one output, its final value not echoed',
  );
  assert.deepEqual(
    saved[6],
    [`display_data:${MIME.metrics}|text/html|text/plain`],
    'plot() as the last line shows once',
  );
  // JupyterLab 4.6 warns that jupyter-server 1.23's kernel manager lacks kernelInfoTimeout: harmless.
  const problems = browser.problems.filter((p) => !/kernel manager does not support the kernelInfoTimeout/.test(p));
  assert.deepEqual(problems, []);
});
