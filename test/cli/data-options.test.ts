/**
 * `vqalab data <command>` reads its options from the Options section of its own help: every option
 * the help lists is accepted with the kind its placeholder says (`N`: a non-negative integer; a
 * word in capitals: a string; none: a flag), and an option the help does not list is refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const BIN = path.resolve('bin/vqalab.js');
const data = (...args: string[]) => spawnSync(process.execPath, [BIN, 'data', ...args], { encoding: 'utf8' });

test('data commands parse the options their help lists, with the kind of each placeholder, and refuse others', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-data-options-'));
  try {
    const help = data('show', '--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /^Options:\n {2}--n N {4}how many samples to print/m);

    const synth = data('synth', '--out', dir, '--images', '2', '--show', '1', '--quiet');
    assert.equal(synth.status, 0, synth.stderr);
    const parquet = path.join(dir, 'synth.parquet');
    assert.equal(data('show', parquet, '--n', '1').status, 0);
    const word = data('show', parquet, '--n', 'x');
    assert.equal(word.status, 2);
    assert.match(word.stderr, /show: --n expects a non-negative integer, got "x"/);

    // a flag (--no-decode), a string (--file FILE) and the seed's --n-samples N, all listed by verify's help
    const verify = data('verify', '--file', parquet, '--no-decode', '--n-samples', '3', '--quiet');
    assert.equal(verify.status, 0, verify.stderr);
    assert.match(data('verify', '--help').stdout, /^ {2}--n-samples N /m);

    // synth-video's help lists no --quiet
    const unlisted = data('synth-video', '--out', dir, '--quiet');
    assert.equal(unlisted.status, 2);
    assert.match(unlisted.stderr, /synth-video: unknown option --quiet/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
