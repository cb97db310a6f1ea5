/**
 * `vqalab demo` end to end on a reduced recipe (the full one is bench/demo.ts): the CLI prints both
 * accuracies and ends with the JSON line, writes metrics.jsonl (SFT, GRPO and eval rows) and
 * result.json, and the same seed gives the same numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');

function demo(out: string): string[] {
  const stdout = execFileSync(process.execPath, [bin, 'demo', '--out', out, '--sft-steps', '4', '--grpo-steps', '3', '--train-images', '12', '--eval-questions', '10', '--threads', '2', '--quiet'], { encoding: 'utf8' });
  return stdout.trim().split('\n');
}

test('vqalab demo prints both accuracies, ends with the JSON line, writes its metrics; same seed, same numbers', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-demo-'));
  try {
    const lines = demo(path.join(dir, 'a'));
    assert.match(lines.find((l) => l.startsWith('warm start: '))!, /^warm start: \d+\.\d\d% held-out accuracy \(official VQA metric, 10 questions; /);
    assert.match(lines.find((l) => l.startsWith('after GRPO: '))!, /^after GRPO: \d+\.\d\d% held-out accuracy/);
    const result = JSON.parse(lines.at(-1)!) as { warmStartAccuracy: number; grpoAccuracy: number; seconds: number };
    assert.deepEqual(Object.keys(result), ['warmStartAccuracy', 'grpoAccuracy', 'seconds']);
    assert.ok(result.seconds > 0);
    const rows = readFileSync(path.join(dir, 'a', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string });
    assert.deepEqual(rows.map((r) => r.kind), [...Array(4).fill('sft'), 'eval', ...Array(3).fill('grpo'), 'eval']);
    const saved = JSON.parse(readFileSync(path.join(dir, 'a', 'result.json'), 'utf8')) as { warmStartAccuracy: number; recipe: { sftSteps: number } };
    assert.equal(saved.warmStartAccuracy, result.warmStartAccuracy);
    assert.equal(saved.recipe.sftSteps, 4);
    const again = JSON.parse(demo(path.join(dir, 'b')).at(-1)!) as typeof result;
    assert.deepEqual([again.warmStartAccuracy, again.grpoAccuracy], [result.warmStartAccuracy, result.grpoAccuracy]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vqalab demo --help prints its usage; a bad option is a usage error', () => {
  assert.match(execFileSync(process.execPath, [bin, 'demo', '--help'], { encoding: 'utf8' }), /^Usage: vqalab demo \[options\]/);
  assert.throws(() => execFileSync(process.execPath, [bin, 'demo', '--grpo-steps', 'x'], { encoding: 'utf8', stdio: 'pipe' }),
    (err: { status: number; stderr: string }) => err.status === 2 && err.stderr.includes('--grpo-steps must be an integer >= 0; got "x"'));
});
