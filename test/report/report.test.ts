/**
 * End to end: `vqalab report run` on real notebooks with Debian's ipykernel, the report opened in
 * headless Chromium, `verify` on the report and on a tampered copy, a failing cell, planted
 * secrets, `export`, and nbconvert's own HTML export of the executed notebook.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readReportData } from '../../src/report/html.js';
import { Browser } from './browser.js';
import { demoNotebook, failingNotebook, pythonNotebook, secretsNotebook } from './notebooks.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = path.join(ROOT, 'bin', 'vqalab.js');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

function vqalab(args: string[], opts: { cwd: string; env?: Record<string, string> }) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    encoding: 'utf8',
    timeout: 180_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 't',
      GIT_AUTHOR_EMAIL: 't@t',
      GIT_COMMITTER_NAME: 't',
      GIT_COMMITTER_EMAIL: 't@t',
    },
  }).trim();
}

describe('vqalab report', { timeout: 600_000 }, () => {
  let dir: string;
  let browser: Browser;
  let commit: string;
  let run: ReturnType<typeof vqalab>;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vq-report-'));
    writeFileSync(path.join(dir, 'demo.ipynb'), JSON.stringify(demoNotebook(), null, 1));
    git(dir, 'init', '-q');
    git(dir, 'add', 'demo.ipynb');
    git(dir, 'commit', '-qm', 'demo');
    commit = git(dir, 'rev-parse', 'HEAD');
    writeFileSync(path.join(dir, 'scratch.txt'), 'uncommitted'); // makes the tree dirty
    mkdirSync(ARTIFACTS, { recursive: true });
    run = vqalab(['report', 'run', 'demo.ipynb', '--out', 'out', '--param', 'steps=5', '--param', 'run_name=toy'], {
      cwd: dir,
    });
    browser = await Browser.launch();
  });
  after(async () => {
    await browser?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('run writes the executed notebook with parameters injected after the parameters cell', () => {
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /wrote out\/demo\.ipynb and out\/report\.html \(\d+ KiB, plotly inlined\)/);
    const nb = JSON.parse(readFileSync(path.join(dir, 'out', 'demo.ipynb'), 'utf8'));
    const tags = nb.cells.map((c: any) => (c.metadata.tags ?? []).join(','));
    assert.equal(tags.indexOf('injected-parameters'), tags.indexOf('parameters') + 1);
    assert.deepEqual(nb.cells[tags.indexOf('injected-parameters')].source, [
      '# Parameters\n',
      'steps = 5\n',
      'run_name = "toy"\n',
    ]);
    const code = nb.cells.filter((c: any) => c.cell_type === 'code');
    assert.deepEqual(
      code.map((c: any) => c.execution_count),
      code.map((_: unknown, i: number) => i + 1),
    );
    // The live-updated metrics display is kept in its final state: 5 steps.
    const metrics = code
      .flatMap((c: any) => c.outputs)
      .find((o: any) => o.data?.['application/vnd.vqalab.metrics.v1+json']);
    assert.equal(metrics.data['application/vnd.vqalab.metrics.v1+json'].runs[0].points.length, 5);
    assert.ok(metrics.data['text/html'].join('').includes('vq-fallback-metrics'));
    // The progress line's carriage returns leave only its last state.
    assert.ok(
      code
        .flatMap((c: any) => c.outputs)
        .some((o: any) => o.output_type === 'stream' && o.text.join('') === 'step 5/5\n'),
    );
    assert.deepEqual(nb.metadata.papermill.parameters, { steps: 5, run_name: 'toy' });
  });

  test('report.html renders in Chromium offline: no console errors, plot and widget fallbacks visible', async () => {
    const file = path.join(dir, 'out', 'report.html');
    const html = readFileSync(file, 'utf8');
    assert.equal(
      html.split('* plotly.js (basic - minified) v').length - 1,
      1,
      'the partial plotly.js (scatter, bar, pie) is inlined exactly once',
    );
    assert.ok(
      Buffer.byteLength(html) <= 1.5e6,
      `report.html with two plots and a metrics widget: ${Buffer.byteLength(html)} bytes (≤ 1.5 MB)`,
    );
    const { page, errors, requests } = await browser.open(file);
    try {
      const plot = await page.locator('.vq-plotly.vq-rendered .main-svg').first().boundingBox();
      assert.ok(plot && plot.height > 200 && plot.width > 300, `plot drawn: ${JSON.stringify(plot)}`);
      assert.ok(await page.locator('.vq-plotly .gtitle', { hasText: 'reward vs step' }).isVisible());
      const img = page.locator('.vq-vendor[data-mime="application/vnd.vqalab.sample.v1+json"] img').first();
      assert.ok(await img.isVisible());
      await img.scrollIntoViewIfNeeded(); // the widget's images load lazily
      assert.equal(
        await img.evaluate(async (el: any) => {
          await el.decode();
          return el.naturalWidth as number;
        }),
        48,
        'the embedded image decoded',
      );
      // The metrics widget (the display renderers' code, as in JupyterLab) draws its plotly panels.
      const metrics = page.locator(
        '.vq-vendor[data-mime="application/vnd.vqalab.metrics.v1+json"] [data-vqa="metrics"]',
      );
      assert.ok(await metrics.isVisible());
      await page.waitForSelector('.vq-vendor[data-mime="application/vnd.vqalab.metrics.v1+json"] .main-svg', {
        timeout: 15_000,
      });
      const panel = await page
        .locator('.vq-vendor[data-mime="application/vnd.vqalab.metrics.v1+json"] .main-svg')
        .first()
        .boundingBox();
      assert.ok(panel && panel.height > 100, `metrics panel drawn: ${JSON.stringify(panel)}`);
      assert.ok(await page.locator('.vq-markdown-cell table').isVisible(), 'markdown rendered (a table)');
      assert.equal(await page.locator('h1').first().textContent(), 'Demo report');
      await page.screenshot({ path: path.join(ARTIFACTS, 'report-demo.png'), fullPage: true });
      assert.deepEqual(errors, []);
      assert.deepEqual(requests, []);
    } finally {
      await page.close();
    }
  });

  test('the stamp is complete: parameters, configs, seeds, datasets, models, versions, git (dirty), CPU/GPU, times', async () => {
    const { page } = await browser.open(path.join(dir, 'out', 'report.html'));
    try {
      for (const part of ['parameters', 'configs', 'seeds', 'datasets', 'models', 'versions', 'git', 'host', 'time']) {
        const section = page.locator(`[data-stamp="${part}"]`);
        assert.equal(await section.count(), 1, part);
        assert.equal(
          await section.evaluate((el) => el.classList.contains('vq-empty')),
          false,
          `stamp part "${part}" is recorded`,
        );
      }
      const text = (part: string) => page.locator(`[data-stamp="${part}"]`).innerText();
      assert.match(await text('parameters'), /steps\s+5/);
      assert.match(await text('configs'), /"group_size": 4/);
      assert.match(await text('seeds'), /trainer\s+0/);
      assert.match(await text('datasets'), /toy-vqa.*sha256:[0-9a-f]{64}/s);
      assert.match(await text('models'), /tiny-qwen2-vl.*sha256:/s);
      assert.match(await text('versions'), /engine\s+toy-engine 0\.0\.1 \(cpu\)/);
      assert.match(await text('versions'), /vqalab\s+\d+\.\d+\.\d+/);
      assert.ok((await text('git')).includes(commit));
      assert.match(await text('git'), /dirty\s+yes \(0 modified, 1 untracked\)/);
      assert.match(await text('host'), /cpu\s+.+× \d+/);
      assert.match(await text('host'), /gpu\s+none on this host/);
      assert.match(await text('time'), /duration\s+\d+\.\d s/);
    } finally {
      await page.close();
    }
    const data = readReportData(readFileSync(path.join(dir, 'out', 'report.html'), 'utf8'), 'report.html');
    assert.deepEqual(data.source.parameters, { steps: 5, run_name: 'toy' });
    assert.equal(
      data.source.notebook.cells.some((c) => (c.metadata.tags ?? []).includes('injected-parameters')),
      false,
    );
    assert.equal(Object.keys(data.metrics).length, 11, '5 steps × (reward, loss) + final_reward');
  });

  test('verify re-runs the report and finds the same metrics', () => {
    const r = vqalab(['report', 'verify', 'out/report.html', '-q'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout, 'verified: 11 metrics match exactly (CPU run)\n');
  });

  test('verify fails on a tampered metric, with a readable diff', () => {
    const html = readFileSync(path.join(dir, 'out', 'report.html'), 'utf8');
    const tampered = html.replace(/("toy\/reward@2":)([0-9.e-]+)/, '$10.123');
    assert.notEqual(tampered, html);
    writeFileSync(path.join(dir, 'out', 'tampered.html'), tampered);
    const r = vqalab(['report', 'verify', 'out/tampered.html', '-q'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^NOT verified: 1 of 11 metrics differ \(compared exactly \(CPU run\)\)/);
    assert.match(r.stdout, /toy\/reward@2\s+0\.123\s+0\.3\d+\s+differs\s+Δ/);
  });

  test('export turns the executed notebook into the same HTML without running it', () => {
    const r = vqalab(['report', 'export', 'out/demo.ipynb', '--out', 'out/exported.html'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const exported = readFileSync(path.join(dir, 'out', 'exported.html'), 'utf8');
    const original = readFileSync(path.join(dir, 'out', 'report.html'), 'utf8');
    let at = 0;
    while (at < original.length && original[at] === exported[at]) at++;
    assert.ok(
      at === original.length && exported.length === original.length,
      `identical HTML; first difference at ${at}: ${JSON.stringify(original.slice(at - 80, at + 80))} vs ${JSON.stringify(exported.slice(at - 80, at + 80))}`,
    );
  });

  test("nbconvert's own HTML export of the executed notebook still shows the fallbacks", () => {
    execFileSync(
      '/usr/bin/python3',
      ['-m', 'nbconvert', '--to', 'html', '--output', 'nbconvert.html', 'out/demo.ipynb'],
      { cwd: dir, stdio: 'pipe' },
    );
    const html = readFileSync(path.join(dir, 'out', 'nbconvert.html'), 'utf8');
    assert.ok(html.includes('vq-fallback-metrics'), 'metrics table fallback');
    assert.ok(html.includes('vq-fallback-sample'), 'sample card fallback');
    assert.match(html, /<img[^>]* src="data:image\/png;base64,/);
  });

  test('a cell that throws stops the run, is reported, and exits non-zero (0 with --allow-errors)', async () => {
    writeFileSync(path.join(dir, 'fail.ipynb'), JSON.stringify(failingNotebook(), null, 1));
    const r = vqalab(['report', 'run', 'fail.ipynb', '--out', 'fail', '-q'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'vqalab report run: cell 1 failed: ValueError: planted failure 42\n');
    const html = readFileSync(path.join(dir, 'fail', 'report.html'), 'utf8');
    assert.ok(!html.includes('* plotly.js'), 'no plot, no plotly');
    const { page, errors } = await browser.open(path.join(dir, 'fail', 'report.html'));
    try {
      assert.match(
        await page.locator('.vq-banner-error').innerText(),
        /The run stopped at cell 1: ValueError: planted failure 42/,
      );
      assert.match(
        await page.locator('#cell-1.vq-failed .vq-error').innerText(),
        /ValueError\s+Traceback[\s\S]*boom\(\)[\s\S]*ValueError: planted failure 42/,
      );
      assert.equal(await page.locator('#cell-2 .vq-output').count(), 0, 'the cell after the failure did not run');
      await page.screenshot({ path: path.join(ARTIFACTS, 'report-failed-cell.png'), fullPage: true });
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
    const allowed = vqalab(['report', 'run', 'fail.ipynb', '--out', 'fail2', '-q', '--allow-errors'], { cwd: dir });
    assert.equal(allowed.code, 0, allowed.stderr);
    const nb = JSON.parse(readFileSync(path.join(dir, 'fail2', 'fail.ipynb'), 'utf8'));
    assert.deepEqual(nb.cells[2].outputs[0].text, ['after the failure\n']);
  });

  test('secrets from the environment, a config, a header and a parameter never reach the report', () => {
    const key = `sk-test-${randomBytes(16).toString('hex')}`;
    const token = `tok_${randomBytes(12).toString('hex')}`;
    writeFileSync(path.join(dir, 'secrets.ipynb'), JSON.stringify(secretsNotebook('VQALAB_PLANTED_API_KEY'), null, 1));
    const r = vqalab(['report', 'run', 'secrets.ipynb', '--out', 'secrets', '--param', `api_token=${token}`], {
      cwd: dir,
      env: { VQALAB_PLANTED_API_KEY: key },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /\d+ secret\(s\) redacted/);
    const reversed = [...key].reverse().join('');
    for (const file of ['report.html', 'secrets.ipynb']) {
      const text = readFileSync(path.join(dir, 'secrets', file), 'utf8');
      for (const secret of [key, token, reversed])
        assert.ok(!text.includes(secret), `${file} leaks ${secret.slice(0, 8)}…`);
      assert.ok(text.includes('[REDACTED:VQALAB_PLANTED_API_KEY]'), `${file} shows where the key was`);
    }
    const data = readReportData(readFileSync(path.join(dir, 'secrets', 'report.html'), 'utf8'), 'report.html');
    assert.equal((data.stamp.facts.configs as any).openai.apiKey, '[REDACTED]');
    assert.equal((data.stamp.facts.configs as any).openai.model, 'toy');
    assert.equal(data.source.parameters.api_token, '[REDACTED]');
    // Re-running needs the secret again, and says so.
    const v = vqalab(['report', 'verify', 'secrets/report.html', '-q'], {
      cwd: dir,
      env: { VQALAB_PLANTED_API_KEY: key },
    });
    assert.equal(v.code, 1);
    assert.match(
      v.stderr,
      /parameter "api_token" was redacted from the report \(a secret\); pass it again with --param api_token=…/,
    );
  });

  test('Ctrl-C interrupts the running cell, keeps what ran, and exits 130', async () => {
    const nb = pythonNotebook([
      { cell_type: 'code', metadata: {}, source: 'print("first")', outputs: [], execution_count: null },
      {
        cell_type: 'code',
        metadata: {},
        // The cell says it is running by a file the test waits for (an event, not a guess at how long
        // the kernel takes to start on a busy machine).
        source: `import pathlib, time\nprint("sleeping", flush=True)\npathlib.Path(${JSON.stringify(path.join(dir, 'started'))}).touch()\ntime.sleep(120)`,
        outputs: [],
        execution_count: null,
      },
      { cell_type: 'code', metadata: {}, source: 'print("never")', outputs: [], execution_count: null },
    ]);
    writeFileSync(path.join(dir, 'slow.ipynb'), JSON.stringify(nb));
    const child = spawn(process.execPath, [CLI, 'report', 'run', 'slow.ipynb', '--out', 'slow'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    let gone = false;
    void exited.then(() => (gone = true));
    while (!existsSync(path.join(dir, 'started')) && !gone) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!gone, `the run ended before the slow cell started: ${stderr}`);
    const t0 = Date.now();
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 130, stderr);
    assert.ok(Date.now() - t0 < 100_000, 'stopped long before the 120 s cell would have ended');
    const out = JSON.parse(readFileSync(path.join(dir, 'slow', 'slow.ipynb'), 'utf8'));
    assert.deepEqual(
      out.cells[1].outputs.map((o: any) => o.ename ?? o.name),
      ['stdout', 'KeyboardInterrupt'],
    );
    assert.deepEqual(out.cells[2].outputs, []);
    assert.equal(out.metadata.vqalab.report.stamp.run.status, 'interrupted');
    assert.match(
      readFileSync(path.join(dir, 'slow', 'report.html'), 'utf8'),
      /The run stopped at <a href="#cell-1">cell 1<\/a>: interrupted/,
    );
  });
});
