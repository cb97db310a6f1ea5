/**
 * Report facts in the real JupyterLab 4.6.4 front end (Debian's jupyter-server, headless Chromium):
 * cells that record facts — `vqalab.report.recordFacts`, `recordSeed` between two prints, a
 * trainer run (the trainer records its config, seeds, data and weights), a Python cell writing the
 * MIME type, and an output an older vqalab saved with a text line — show nothing of them: no text
 * in the output area, the facts' output items hidden, and a cell whose only outputs are facts
 * looks like a cell without outputs. The saved notebooks still carry the facts, and
 * `vqalab report export` gathers them into the report's stamp. Screenshot in test-artifacts/.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { STAMP_MIME } from '../../src/display/types.js';
import { readReportData } from '../../src/report/html.js';
import { artifactPath, type Browser } from '../extension/chromium.js';
import { ensureLabApp, ROOT, startLab, type LabServer } from './lab.js';
import { openLab, openNotebook } from './page.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
declare const window: any, document: any;
declare function getComputedStyle(el: unknown): any;

const t0 = performance.now();
const log = (s: string) => process.stderr.write(`[e2e-facts ${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}\n`);

let tmp: string;
let nbDir: string;
let env: NodeJS.ProcessEnv;
let server: LabServer;
let browser: Browser;
let page: Page;

const cli = (args: string[]) =>
  execFileSync(process.execPath, [path.join(ROOT, 'bin/vqalab.js'), ...args], { env, encoding: 'utf8' }).trim();

const code = (source: string, outputs: object[] = [], executionCount: number | null = null) => ({
  cell_type: 'code',
  execution_count: executionCount,
  metadata: {},
  outputs,
  source,
});

function notebook(kernel: { name: string; display_name: string; language: string }, cells: object[]): string {
  return JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: { kernelspec: kernel }, cells }, null, 1);
}

/** facts.ipynb's code cells (0-based among all its cells; cell 0 is markdown). */
const CELL = { only: 1, between: 2, legacy: 3, trainer: 4, run: 5 } as const;

const TS_CELLS = [
  { cell_type: 'markdown', metadata: {}, source: '# Report facts\nRecorded for the report, shown nowhere.' },
  code(`vqalab.report.recordFacts({ configs: { notebook: { lr: 0.5, groupSize: 4 } }, seeds: { notebookSeed: 7 } });`),
  code(`console.log('before the facts');\nvqalab.report.recordSeed('data', 3);\nconsole.log('after the facts');`),
  // As an older vqalab saved it: the facts with a one-line text/plain summary. Opened, not re-run.
  code(
    `// saved by an older vqalab\nvqalab.report.recordFacts({ notes: { legacy: 'yes' } });`,
    [
      {
        output_type: 'display_data',
        data: { [STAMP_MIME]: { notes: { legacy: 'yes' } }, 'text/plain': 'vqalab report facts: notes legacy' },
        metadata: {},
      },
    ],
    1,
  ),
  code(`import { mkdtempSync } from 'fs';
import os from 'os';
import path from 'path';
const work = mkdtempSync(path.join(os.tmpdir(), 'vqa-e2e-facts-'));
await vqalab.data.writeSynth(path.join(work, 'synth'), { images: 8, seed: 0, quiet: true });
const train = await vqalab.VqaDataset.fromParquet(path.join(work, 'synth', 'synth.parquet'));
const trainer = await Trainer.fromPretrained(vqalab.model.DEFAULT_MODEL_DIR, {
  threads: 2, train, rewards: [vqaAccuracy()],
  config: { seed: 0, promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 4, totalSteps: 1 },
});
console.log('trainer ready');`),
  code(`const result = await trainer.run({ steps: 1 });\nconsole.log(\`trained \${result.stepsRun} step\`);`),
];

before(async () => {
  ensureLabApp(log);
  tmp = mkdtempSync(path.join(tmpdir(), 'vqa-e2e-facts-'));
  const dirs = Object.fromEntries(['data', 'config', 'runtime', 'lab', 'notebooks'].map((d) => [d, path.join(tmp, d)]));
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  nbDir = dirs.notebooks!;
  env = {
    ...process.env,
    JUPYTER_NO_CONFIG: '1',
    JUPYTER_DATA_DIR: dirs.data,
    JUPYTER_CONFIG_DIR: dirs.config,
    JUPYTER_RUNTIME_DIR: dirs.runtime,
    VQALAB_E2E_RUNTIME: dirs.lab,
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  log(cli(['lab', 'install', '--user']));
  log(cli(['kernel', 'install', '--user']));
  writeFileSync(
    path.join(nbDir, 'facts.ipynb'),
    notebook({ name: 'vqalab', display_name: 'TypeScript (vqalab)', language: 'typescript' }, TS_CELLS),
  );
  writeFileSync(
    path.join(nbDir, 'facts-python.ipynb'),
    notebook({ name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' }, [
      code(
        `from IPython.display import display\ndisplay({'${STAMP_MIME}': {'seeds': {'python': 11}}}, raw=True)\nprint('python cell ran')`,
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

/** Run all cells and wait until every code cell shows an execution count (the command settles when they ran). */
async function runAll(): Promise<void> {
  await page.evaluate(() => window.jupyterapp.commands.execute('notebook:run-all-cells'));
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')].every(
        (p: any) => /\[\d+\]/.test(p.textContent),
      ),
    null,
    { timeout: 300_000 },
  );
}

interface CellView {
  /** What a reader sees in the output area (innerText skips what is not rendered). */
  text: string;
  /** Outputs the facts renderer drew, and how many of their output items take any room. */
  facts: number;
  factsShown: number;
  /** Whether the cell's output wrapper (gap, collapser bar, outputs) takes any room. */
  outputArea: boolean;
  /** Output items that take room. */
  itemsShown: number;
}

/** The cells of the notebook in front (another one left open by a failed test stays behind, hidden). */
const ACTIVE_CELLS = '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell';

async function view(index: number): Promise<CellView> {
  await page.locator(ACTIVE_CELLS).nth(index).scrollIntoViewIfNeeded();
  return page.evaluate(
    ({ i, cells }: { i: number; cells: string }) => {
      const cell = document.querySelectorAll(cells)[i];
      const takesRoom = (el: any) => {
        const r = el.getBoundingClientRect();
        return getComputedStyle(el).display !== 'none' && r.height > 0;
      };
      const items = [...cell.querySelectorAll('.jp-OutputArea-child')];
      const factsItems = items.filter((it: any) => it.querySelector('.vqa-facts-output'));
      return {
        text: (cell.querySelector('.jp-Cell-outputArea')?.innerText ?? '').replace(/\s+/g, ' ').trim(),
        facts: factsItems.length,
        factsShown: factsItems.filter(takesRoom).length,
        outputArea: takesRoom(cell.querySelector('.jp-Cell-outputWrapper')),
        itemsShown: items.filter(takesRoom).length,
      };
    },
    { i: index, cells: ACTIVE_CELLS },
  );
}

/** Save the open notebook, shut its kernel down, close it; the saved file as read from disk. */
async function saveAndClose(file: string): Promise<any> {
  await page.evaluate(async () => {
    const w = window.jupyterapp.shell.currentWidget;
    await w.context.save();
    await w.sessionContext.shutdown();
    window.__closing = w;
    w.close();
  });
  await page.waitForFunction(() => window.__closing.isDisposed, null, { timeout: 60_000 });
  return JSON.parse(readFileSync(path.join(nbDir, file), 'utf8'));
}

/** The facts a saved cell carries: the data of each output with STAMP_MIME, which must be its only type. */
function savedFacts(cell: any): unknown[] {
  const outs = (cell.outputs ?? []).filter((o: any) => o.data?.[STAMP_MIME] !== undefined);
  for (const o of outs)
    assert.deepEqual(Object.keys(o.data), [STAMP_MIME], `a facts output carries nothing else: ${JSON.stringify(o)}`);
  return outs.map((o: any) => o.data[STAMP_MIME]);
}

function exportReport(file: string): { html: string; data: ReturnType<typeof readReportData> } {
  const out = path.join(nbDir, file.replace(/\.ipynb$/, '.html'));
  cli(['report', 'export', path.join(nbDir, file), '--out', out]);
  const html = readFileSync(out, 'utf8');
  return { html, data: readReportData(html, out) };
}

test('facts saved by an older vqalab with a text line show nothing when the notebook is opened', async () => {
  await openNotebook(page, 'facts.ipynb');
  const legacy = await view(CELL.legacy);
  assert.deepEqual(legacy, { text: '', facts: 1, factsShown: 0, outputArea: false, itemsShown: 0 });
});

test('cells recording facts (recordFacts, recordSeed between prints, a trainer run) show nothing of them; the saved notebook carries them', async () => {
  await runAll();
  const only = await view(CELL.only);
  assert.deepEqual(
    only,
    { text: '', facts: 1, factsShown: 0, outputArea: false, itemsShown: 0 },
    'facts alone: no output area',
  );
  const between = await view(CELL.between);
  assert.deepEqual(
    between,
    { text: 'before the facts after the facts', facts: 1, factsShown: 0, outputArea: true, itemsShown: 2 },
    'only the two prints',
  );
  const legacy = await view(CELL.legacy);
  assert.deepEqual(legacy, { text: '', facts: 1, factsShown: 0, outputArea: false, itemsShown: 0 });
  const trainerCell = await view(CELL.trainer);
  assert.equal(trainerCell.text, 'trainer ready');
  const run = await view(CELL.run);
  assert.ok(run.facts >= 2, `the trainer recorded its start and its run's end: ${JSON.stringify(run)}`);
  assert.equal(run.factsShown, 0);
  assert.doesNotMatch(run.text, /report facts/);
  assert.match(run.text, /trained 1 step$/);
  assert.equal(
    await page.locator(ACTIVE_CELLS).nth(CELL.run).locator('.vqa-lab-output [data-vqa="metrics"]').count(),
    1,
    "the run's dashboard is there",
  );
  const outputs = await page.evaluate(() =>
    [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea')]
      .map((a: any) => a.innerText)
      .join('\n'),
  );
  assert.doesNotMatch(outputs, /report facts|notebookSeed|legacy/i, 'no output shows any of the facts');
  await page.locator(ACTIVE_CELLS).nth(CELL.only).scrollIntoViewIfNeeded();
  await page.screenshot({ path: artifactPath('lab-facts-hidden.png') });

  const saved = await saveAndClose('facts.ipynb');
  assert.deepEqual(savedFacts(saved.cells[CELL.only]), [
    { configs: { notebook: { lr: 0.5, groupSize: 4 } }, seeds: { notebookSeed: 7 } },
  ]);
  assert.deepEqual(savedFacts(saved.cells[CELL.between]), [{ seeds: { data: 3 } }]);
  assert.deepEqual(savedFacts(saved.cells[CELL.legacy]), [{ notes: { legacy: 'yes' } }]);
  const trained = savedFacts(saved.cells[CELL.run]) as any[];
  assert.ok(
    trained.some((f) => f.configs?.grpo && f.models?.length && f.datasets?.length),
    JSON.stringify(trained),
  );

  // What JupyterLab saved is what `vqalab report export` reads: the facts land in the stamp.
  const { html, data } = exportReport('facts.ipynb');
  const facts = data.stamp.facts;
  assert.deepEqual(facts.configs?.notebook, { lr: 0.5, groupSize: 4 });
  assert.equal(facts.seeds?.notebookSeed, 7);
  assert.equal(facts.seeds?.data, 3);
  assert.equal(facts.notes?.legacy, 'yes');
  assert.equal((facts.configs?.grpo as { promptsPerStep?: number } | undefined)?.promptsPerStep, 2);
  assert.equal(facts.datasets?.[0]?.name, 'train');
  assert.ok(facts.models?.length, 'the starting weights are in the stamp');
  assert.equal(facts.metrics?.['train/steps'], 1);
  assert.doesNotMatch(html.slice(html.indexOf('<section class="vq-cell')), /report facts|vq-stamp-note/);
});

test('a Python cell writing the facts MIME type shows only its print; the saved notebook carries the facts to the report', async () => {
  await openNotebook(page, 'facts-python.ipynb');
  await runAll();
  const cell = await view(0);
  assert.deepEqual(cell, { text: 'python cell ran', facts: 1, factsShown: 0, outputArea: true, itemsShown: 1 });
  const saved = await saveAndClose('facts-python.ipynb');
  assert.deepEqual(savedFacts(saved.cells[0]), [{ seeds: { python: 11 } }]);
  assert.equal(exportReport('facts-python.ipynb').data.stamp.facts.seeds?.python, 11);
});

test('the page logged no errors', () => {
  // JupyterLab 4.6 warns that jupyter-server 1.23's kernel manager lacks kernelInfoTimeout: harmless.
  const problems = browser.problems.filter((p) => !/kernel manager does not support the kernelInfoTimeout/.test(p));
  assert.deepEqual(problems, []);
});
