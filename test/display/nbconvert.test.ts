/**
 * Viewers without the extension: Debian's nbconvert exports a notebook holding our bundles to
 * HTML, which must show every widget's static fallback (not drop the output, not show raw JSON),
 * readable with JavaScript off; and must show nothing at all for report facts. Screenshot in
 * test-artifacts/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bundleFor, sampleBundle } from '../../src/display/bundle.js';
import { MIME, type MimeBundle } from '../../src/display/types.js';
import { factsBundle } from '../../src/report/facts.js';
import { artifactPath, launch } from '../extension/chromium.js';
import * as fx from './fixtures.js';

test('nbconvert --to html shows the static fallback of every widget, readable without JavaScript', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqa-nbconvert-'));
  try {
    const image = await fx.sceneImage();
    const bundles: MimeBundle[] = [
      await sampleBundle(fx.sample(image)),
      bundleFor(MIME.group, fx.group(image)),
      bundleFor(MIME.rewards, fx.rewardTable()),
      bundleFor(MIME.metrics, fx.metrics(image)),
      bundleFor(MIME.dataset, fx.dataset(image)),
    ];
    const nb = {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { kernelspec: { name: 'vqalab', display_name: 'TypeScript (vqalab)', language: 'typescript' } },
      cells: bundles.map((data, i) => ({
        cell_type: 'code',
        id: `c${i}`,
        execution_count: i + 1,
        metadata: {},
        source: `show(${i})`,
        outputs: [{ output_type: 'display_data', data, metadata: {} }],
      })),
    };
    writeFileSync(path.join(dir, 'widgets.ipynb'), JSON.stringify(nb));
    execFileSync('/usr/bin/python3', ['-m', 'nbconvert', '--to', 'html', 'widgets.ipynb'], {
      cwd: dir,
      stdio: 'pipe',
      env: { ...process.env, JUPYTER_NO_CONFIG: '1' },
    });
    const html = (await import('node:fs')).readFileSync(path.join(dir, 'widgets.html'), 'utf8');
    for (const name of ['sample', 'group', 'rewards', 'metrics', 'dataset'])
      assert.match(html, new RegExp(`<div class="vqa vqa-${name}" data-vqa="${name}">`), name);
    assert.doesNotMatch(html, /application\/vnd\.vqalab/, 'the vendor JSON is not what is shown');
    assert.ok((html.match(/<svg class="vqa-chart"/g) ?? []).length >= 6, 'metrics drawn as inline SVG');

    const b = await launch({ width: 1200, height: 900 });
    try {
      await b.context.route('**/*', (route) =>
        route.request().url().startsWith('file:') ? route.continue() : route.abort(),
      );
      await b.page.goto(`file://${path.join(dir, 'widgets.html')}`);
      // The widgets' own CSS applies (inlined in each fallback): the answers' bar, the advantage bars.
      assert.equal(await b.page.locator('.vqa-sample .vqa-answers tr.vqa-match').count(), 1);
      const bar = await b.page
        .locator('.vqa-group .vqa-adv .vqa-pos')
        .first()
        .evaluate((el) => (el as unknown as { offsetWidth: number }).offsetWidth);
      assert.ok(bar > 20, `advantage bar drawn ${bar}px`);
      await b.page.screenshot({ path: artifactPath('nbconvert-fallbacks.png'), fullPage: true });
    } finally {
      await b.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('nbconvert --to html shows nothing for report facts: no line of text, the facts stay in the notebook', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqa-nbconvert-facts-'));
  try {
    const facts = { configs: { grpo: { lr: 0.5 } }, seeds: { trainer: 7 } };
    const cells = [
      [{ output_type: 'display_data', data: factsBundle(facts), metadata: {} }],
      [
        { output_type: 'stream', name: 'stdout', text: 'before the facts\n' },
        { output_type: 'display_data', data: factsBundle({ seeds: { data: 3 } }), metadata: {} },
        { output_type: 'stream', name: 'stdout', text: 'after the facts\n' },
      ],
    ];
    const nb = {
      nbformat: 4,
      nbformat_minor: 5,
      metadata: { kernelspec: { name: 'vqalab', display_name: 'TypeScript (vqalab)', language: 'typescript' } },
      cells: cells.map((outputs, i) => ({
        cell_type: 'code',
        id: `c${i}`,
        execution_count: i + 1,
        metadata: {},
        source: `recordFacts(${i})`,
        outputs,
      })),
    };
    writeFileSync(path.join(dir, 'facts.ipynb'), JSON.stringify(nb));
    execFileSync('/usr/bin/python3', ['-m', 'nbconvert', '--to', 'html', 'facts.ipynb'], {
      cwd: dir,
      stdio: 'pipe',
      env: { ...process.env, JUPYTER_NO_CONFIG: '1' },
    });
    const html = readFileSync(path.join(dir, 'facts.html'), 'utf8');
    assert.doesNotMatch(html, /report facts|trainer|grpo/, 'nothing of the facts is printed');
    const b = await launch({ width: 1000, height: 700 });
    try {
      await b.context.route('**/*', (route) =>
        route.request().url().startsWith('file:') ? route.continue() : route.abort(),
      );
      await b.page.goto(`file://${path.join(dir, 'facts.html')}`);
      const shown = await b.page
        .locator('.jp-Cell-outputArea')
        .evaluateAll((areas) =>
          areas.map((a) => (a as unknown as { innerText: string }).innerText.replace(/\s+/g, ' ').trim()),
        );
      assert.deepEqual(shown, ['', 'before the facts after the facts']);
    } finally {
      await b.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
