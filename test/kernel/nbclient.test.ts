/**
 * A notebook executed headless by Debian's nbclient with the vqalab kernel, from a directory
 * outside this package, then exported by nbconvert: the executed file keeps the vendor MIME types
 * with their text/html, text/plain and image/png fallbacks, live updates land in place, an error
 * cell is recorded (allow-errors) without stopping the rest, and nbconvert's HTML shows the
 * fallbacks.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import sharp from 'sharp';
import { findPython, installTempKernel, type TempKernel } from './helpers.js';
import { executeNotebook, notebook, notebookProblems, textOf, type NotebookOutput } from './notebook.js';

let kernel: TempKernel;
before(async () => {
  kernel = await installTempKernel();
});
after(() => kernel?.cleanup());

test('nbclient executes a notebook; the executed file keeps vendor types, fallbacks and display updates', {
  timeout: 600_000,
}, async () => {
  const python = findPython(['nbclient', 'nbformat', 'nbconvert']);
  const image = path.join(kernel.workDir, 'red.png');
  await sharp({ create: { width: 32, height: 24, channels: 3, background: { r: 200, g: 30, b: 30 } } })
    .png()
    .toFile(image);
  const nb = notebook([
    { md: '# A notebook run by nbclient' },
    'const n = 3;\nconsole.log("n =", n);',
    '({ n })',
    'plot([{ step: 0, loss: 1 }, { step: 1, loss: 0.5 }], { title: "loss" })',
    `await show({ id: "q1", imagePath: ${JSON.stringify(image)}, question: "What color is it?", answer: "red", answers: Array(10).fill("red") })`,
    'const dash = dashboard({ total: 2, intervalMs: 0 });\ndash.log({ step: 1, loss: 1 });\ndash.log({ step: 2, loss: 0.5 });\ndash.finish();',
    'throw new Error("recorded, not fatal")',
    '"after the error"',
  ]);
  const input = path.join(kernel.workDir, 'smoke.ipynb');
  const output = path.join(kernel.workDir, 'smoke.executed.ipynb');
  const html = path.join(kernel.workDir, 'smoke.html');
  writeFileSync(input, JSON.stringify(nb));

  const { summary, executed } = await executeNotebook(python, kernel.env, input, output, {
    cwd: kernel.workDir,
    allowErrors: true,
    html,
  });
  assert.equal(summary.error, null);
  const cells = executed.cells;
  const outs = (i: number): NotebookOutput[] => cells[i]!.outputs ?? [];

  // Every code cell ran, in order, with consecutive execution counts (execute_input is sent).
  assert.deepEqual(
    cells.filter((c) => c.cell_type === 'code').map((c) => c.execution_count),
    [1, 2, 3, 4, 5, 6, 7],
  );
  assert.deepEqual(
    outs(1).map((o) => [o.output_type, o.name, textOf(o)]),
    [['stream', 'stdout', 'n = 3\n']],
  );
  assert.deepEqual(
    outs(2).map((o) => [o.output_type, textOf(o)]),
    [['execute_result', '{ n: 3 }']],
  );

  // The plot: one output with the vendor type and both fallbacks; no echo of the returned bundle.
  assert.equal(outs(3).length, 1);
  const plotOut = outs(3)[0]!;
  assert.equal(plotOut.output_type, 'display_data');
  assert.deepEqual(Object.keys(plotOut.data!).sort(), [
    'application/vnd.vqalab.metrics.v1+json',
    'text/html',
    'text/plain',
  ]);
  assert.equal((plotOut.data!['application/vnd.vqalab.metrics.v1+json'] as { title: string }).title, 'loss');

  // The sample card: the image is the point, so a PNG rides along.
  const card = outs(4)[0]!;
  assert.deepEqual(Object.keys(card.data!).sort(), [
    'application/vnd.vqalab.sample.v1+json',
    'image/png',
    'text/html',
    'text/plain',
  ]);
  assert.deepEqual(
    [...Buffer.from(String(card.data!['image/png']), 'base64').subarray(1, 4)]
      .map((b) => String.fromCharCode(b))
      .join(''),
    'PNG',
  );

  // The dashboard was shown once and updated in place: the file holds its final state.
  assert.equal(outs(5).length, 1);
  const dash = outs(5)[0]!.data!['application/vnd.vqalab.metrics.v1+json'] as {
    runs: { points: unknown[] }[];
    progress: { status: string; step: number };
  };
  assert.equal(dash.runs[0]!.points.length, 2);
  assert.equal(dash.progress.status, 'done');

  // The error is recorded with its name, message and traceback; the next cell still ran.
  const err = outs(6)[0]!;
  assert.equal(err.output_type, 'error');
  assert.equal(err.ename, 'Error');
  assert.equal(err.evalue, 'recorded, not fatal');
  assert.ok(err.traceback!.length >= 1);
  assert.equal(textOf(outs(7)[0]!), "'after the error'");

  // Apart from the deliberate error, the file passes the checks every notebook must pass.
  assert.deepEqual(notebookProblems(executed, 'smoke'), ['smoke cell 7: Error: recorded, not fatal']);

  // nbconvert's HTML (no extension there) shows the text/html fallbacks.
  const page = readFileSync(html, 'utf8');
  const fallback = String(plotOut.data!['text/html']);
  const marker = fallback.match(/class="(vqa[\w-]*)/)?.[1];
  assert.ok(marker, 'the metrics fallback HTML has our class names');
  assert.ok(page.includes(marker), `nbconvert's HTML contains the fallback (${marker})`);
  assert.ok(page.includes('recorded, not fatal'));
});
