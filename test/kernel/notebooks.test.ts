/**
 * Every notebook in notebooks/ runs headless through nbclient with the vqalab kernel, on the
 * embedded default on CPU, with no errors; the executed copies (written to
 * test-artifacts/notebooks/, for inspection) keep vendor types and their fallbacks.
 *
 * Notebooks run in a copy of notebooks/ so that whatever they write (checkpoints, outputs) stays
 * out of the source tree. A notebook may declare what it needs in its metadata:
 *   "vqalab": { "timeoutSeconds": 900 }   per-cell time limit (default 600)
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findPython, installTempKernel, repoRoot, type TempKernel } from './helpers.js';
import { executeNotebook, notebookProblems, type Notebook } from './notebook.js';

const notebooksDir = path.join(repoRoot, 'notebooks');
const artifacts = path.join(repoRoot, 'test-artifacts', 'notebooks');
const names = existsSync(notebooksDir)
  ? readdirSync(notebooksDir)
      .filter((f) => f.endsWith('.ipynb'))
      .sort()
  : [];

let kernel: TempKernel;
let workDir: string;
before(async () => {
  kernel = await installTempKernel();
  workDir = mkdtempSync(path.join(tmpdir(), 'vqalab-notebooks-'));
  if (names.length > 0) cpSync(notebooksDir, workDir, { recursive: true });
  mkdirSync(artifacts, { recursive: true });
});
after(() => {
  kernel?.cleanup();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('notebooks/', () => {
  test('has notebooks to run', (t) => {
    if (names.length === 0) t.skip('notebooks/ has no notebooks yet');
  });

  for (const name of names) {
    test(`${name} runs headless with no errors`, { timeout: 3_600_000 }, async () => {
      const python = findPython(['nbclient', 'nbformat']);
      const source = JSON.parse(readFileSync(path.join(notebooksDir, name), 'utf8')) as Notebook;
      assert.equal(
        (source.metadata.kernelspec as { name?: string } | undefined)?.name,
        'vqalab',
        `${name}: kernelspec name must be "vqalab"`,
      );
      const cellTimeoutS = (source.metadata.vqalab as { timeoutSeconds?: number } | undefined)?.timeoutSeconds ?? 600;
      const output = path.join(artifacts, name);
      const { summary, executed } = await executeNotebook(python, kernel.env, path.join(workDir, name), output, {
        cwd: workDir,
        cellTimeoutS,
        timeoutMs: 3_500_000,
      });
      assert.equal(summary.error, null, `${name} failed:\n${summary.error}`);
      assert.deepEqual(notebookProblems(executed, name), []);
    });
  }
});
