/**
 * The report pipeline on the vqalab kernel (TypeScript): parameters injected as `let`, widgets
 * from the display helpers, facts from `vqalab.report.recordFacts`, verify, and the quickstart
 * notebook when it is in the tree. The kernelspec is installed into a temporary prefix with
 * `vqalab kernel install --prefix`; without the kernel in this checkout the tests are skipped.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Browser } from './browser.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = path.join(ROOT, 'bin', 'vqalab.js');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const KERNEL_MAIN = path.join(ROOT, 'dist', 'kernel', 'main.js');
const QUICKSTART = path.join(ROOT, 'notebooks', 'quickstart.ipynb');
const haveKernel = existsSync(KERNEL_MAIN) || !!process.env.VQALAB_TEST_KERNEL_PREFIX;

function vqalab(args: string[], cwd: string) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 540_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const tsNotebook = {
  nbformat: 4,
  nbformat_minor: 5,
  metadata: { kernelspec: { name: 'vqalab', language: 'typescript', display_name: 'TypeScript (vqalab)' } },
  cells: [
    { cell_type: 'markdown', id: 'm', metadata: {}, source: '# TypeScript report' },
    {
      cell_type: 'code',
      id: 'p',
      metadata: { tags: ['parameters'] },
      source: 'let steps = 3;\nlet seed = 1;',
      outputs: [],
      execution_count: null,
    },
    {
      cell_type: 'code',
      id: 'f',
      metadata: {},
      outputs: [],
      execution_count: null,
      source:
        "vqalab.report.recordFacts({ seeds: { trainer: seed }, configs: { grpo: { steps } }, devices: [{ kind: 'cpu' }] });\nconsole.log('steps', steps, typeof steps);",
    },
    {
      cell_type: 'code',
      id: 'm2',
      metadata: {},
      outputs: [],
      execution_count: null,
      source:
        "const points = Array.from({ length: steps }, (_, i) => ({ step: i, reward: 0.1 * i + seed / 100, loss: 1 / (i + 1) }));\nplot({ runs: [{ name: 'ts', points }] })",
    },
  ],
};

describe('reports on the vqalab kernel', {
  skip: haveKernel ? false : 'the vqalab kernel is not in this checkout (dist/kernel/main.js)',
  timeout: 900_000,
}, () => {
  let dir: string;
  let prefix: string;
  let browser: Browser;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vq-report-ts-'));
    prefix = process.env.VQALAB_TEST_KERNEL_PREFIX ?? path.join(dir, 'prefix');
    if (!process.env.VQALAB_TEST_KERNEL_PREFIX) {
      const r = vqalab(['kernel', 'install', '--prefix', prefix], dir);
      assert.equal(r.code, 0, r.stderr);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await Browser.launch();
  });
  after(async () => {
    await browser?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a TypeScript notebook runs into a report with typed parameters, widgets and facts, and verifies', async () => {
    writeFileSync(path.join(dir, 'ts.ipynb'), JSON.stringify(tsNotebook));
    const run = vqalab(
      ['report', 'run', 'ts.ipynb', '--prefix', prefix, '--out', 'out', '--param', 'steps=5', '-q'],
      dir,
    );
    assert.equal(run.code, 0, run.stderr);
    const nb = JSON.parse(readFileSync(path.join(dir, 'out', 'ts.ipynb'), 'utf8'));
    assert.deepEqual(nb.cells[2].source, ['// Parameters\n', 'let steps = 5;\n']);
    const outputs = nb.cells.flatMap((c: any) => c.outputs ?? []);
    assert.ok(outputs.some((o: any) => o.output_type === 'stream' && o.text.join('') === 'steps 5 number\n'));
    assert.ok(outputs.some((o: any) => o.data?.['application/vnd.vqalab.stamp.v1+json']?.seeds?.trainer === 1));
    assert.equal(nb.metadata.vqalab.report.stamp.kernel.name, 'vqalab');
    const { page, errors, requests } = await browser.open(path.join(dir, 'out', 'report.html'));
    try {
      await page.waitForSelector('[data-vqa="metrics"] .main-svg', { timeout: 20_000 });
      assert.match(await page.locator('[data-stamp="seeds"]').innerText(), /trainer\s+1/);
      await page.screenshot({ path: path.join(ARTIFACTS, 'report-vqalab-kernel.png'), fullPage: true });
      assert.deepEqual(errors, []);
      assert.deepEqual(requests, []);
    } finally {
      await page.close();
    }
    const v = vqalab(['report', 'verify', 'out/report.html', '--prefix', prefix, '-q'], dir);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.equal(v.stdout, 'verified: 10 metrics match exactly (CPU run)\n');
  });

  test('the quickstart notebook runs into a report that verifies', {
    skip: existsSync(QUICKSTART) ? false : 'notebooks/quickstart.ipynb is not in this checkout',
  }, async () => {
    const run = vqalab(['report', 'run', QUICKSTART, '--prefix', prefix, '--out', 'qs', '-q'], dir);
    assert.equal(run.code, 0, run.stderr);
    const { page, errors } = await browser.open(path.join(dir, 'qs', 'report.html'));
    try {
      assert.ok((await page.locator('.vq-vendor').count()) > 0, 'the quickstart shows widgets');
      await page.screenshot({ path: path.join(ARTIFACTS, 'report-quickstart.png'), fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
    const v = vqalab(['report', 'verify', 'qs/report.html', '--prefix', prefix, '-q'], dir);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  });
});
