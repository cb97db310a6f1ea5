/**
 * kill -9 during a checkpoint save (issue 20): the last complete checkpoint stays loadable (the
 * save writes a temporary folder, then renames it into place). The child saves again and again;
 * it is killed while a save is under way, and the checkpoint that `latest` names loads, weights
 * and optimizer state.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveCheckpoint } from '../../src/engine/folder.js';
import { loadTiny } from '../grpo/helpers/tiny-task.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'kill9-child.js');

async function killDuringSave(outputDir: string, afterSaves: number): Promise<void> {
  const child = spawn(process.execPath, [CHILD, outputDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '',
    err = '';
  child.stderr!.on('data', (d) => {
    err += d;
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      // "saving N" is printed as save N starts: kill it then, mid-save
      if (new RegExp(`saving ${afterSaves}\\n`).test(out)) {
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`the child exited (${code}) before it was killed:\n${out}\n${err}`));
    });
  });
  await new Promise((r) => child.once('exit', r));
}

for (const afterSaves of [1, 3]) {
  test(`SIGKILL while save ${afterSaves} runs: the checkpoint named by latest loads`, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-hostile-kill9-'));
    try {
      await killDuringSave(dir, afterSaves);
      const ckpt = resolveCheckpoint(dir);
      const model = await loadTiny(path.join(ckpt, 'model'), { role: 'resume' });
      try {
        assert.equal(model.config.vocabSize, 539);
      } finally {
        model.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
