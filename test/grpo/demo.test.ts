/**
 * `vqalab demo` end to end on a reduced recipe (the full one is bench/demo.ts): the CLI prints both
 * accuracies and the mismatched-image check, ends with the JSON line, writes metrics.jsonl (SFT,
 * GRPO and eval rows) and result.json, and the same seed gives the same numbers; the blank-image
 * control; clear errors for a device or model folder that cannot work.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/engine/native.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');

function demo(out: string, ...extra: string[]): string[] {
  const stdout = execFileSync(
    process.execPath,
    [
      bin,
      'demo',
      '--out',
      out,
      '--sft-steps',
      '4',
      '--grpo-steps',
      '3',
      '--train-images',
      '12',
      '--eval-questions',
      '10',
      '--threads',
      '2',
      '--quiet',
      ...extra,
    ],
    { encoding: 'utf8' },
  );
  return stdout.trim().split('\n');
}

test('vqalab demo prints both accuracies, ends with the JSON line, writes its metrics; same seed, same numbers', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-demo-'));
  try {
    const lines = demo(path.join(dir, 'a'));
    assert.match(
      lines[0]!,
      /^vqalab demo: tiny Qwen2-VL \(1\.13M parameters, .*tiny-qwen2-vl, cpu\) on synthetic shapes \(1 shape per image; color, shape questions\): 24 training questions, 10 held-out/,
    );
    assert.match(
      lines.find((l) => l.startsWith('warm start: '))!,
      /^warm start: \d+\.\d\d% held-out accuracy \(official VQA metric, 10 questions; (color|shape) \d+\.\d\d, (color|shape) \d+\.\d\d\)$/,
    );
    assert.match(lines.find((l) => l.startsWith('after GRPO: '))!, /^after GRPO: \d+\.\d\d% held-out accuracy/);
    assert.match(
      lines.find((l) => l.startsWith('  after GRPO, '))!,
      /^  after GRPO, each question shown another question's image: \d+\.\d\d% \(/,
    );
    const result = JSON.parse(lines.at(-1)!) as { warmStartAccuracy: number; grpoAccuracy: number; seconds: number };
    assert.deepEqual(Object.keys(result), ['warmStartAccuracy', 'grpoAccuracy', 'seconds']);
    assert.ok(result.seconds > 0);
    const rows = readFileSync(path.join(dir, 'a', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string });
    assert.deepEqual(
      rows.map((r) => r.kind),
      [...Array(4).fill('sft'), 'eval', 'eval', ...Array(3).fill('grpo'), 'eval', 'eval'],
    );
    assert.deepEqual(
      rows.filter((r) => r.kind === 'eval').map((r) => (r as { extra?: { split?: string } }).extra?.split),
      ['heldout', 'heldout-mismatched-images', 'heldout', 'heldout-mismatched-images'],
    );
    const saved = JSON.parse(readFileSync(path.join(dir, 'a', 'result.json'), 'utf8')) as {
      warmStartAccuracy: number;
      grpoMismatchedImageAccuracy: number;
      recipe: { sftSteps: number; families: string[] };
    };
    assert.equal(saved.warmStartAccuracy, result.warmStartAccuracy);
    assert.equal(typeof saved.grpoMismatchedImageAccuracy, 'number');
    assert.equal(saved.recipe.sftSteps, 4);
    assert.deepEqual(saved.recipe.families, ['color', 'shape']);
    const again = JSON.parse(demo(path.join(dir, 'b')).at(-1)!) as typeof result;
    assert.deepEqual([again.warmStartAccuracy, again.grpoAccuracy], [result.warmStartAccuracy, result.grpoAccuracy]);

    // The control: the same recipe with every image blank (only the question to learn from).
    const control = demo(path.join(dir, 'c'), '--blank-images');
    assert.match(control[0]!, /; CONTROL: every image blank\): 24 training questions/);
    const blind = control
      .filter((l) => /^( {2})?(warm start|after GRPO)[:,] /.test(l))
      .map((l) => l.match(/: (\d+\.\d\d)%/)![1]);
    assert.equal(blind.length, 4);
    assert.equal(blind[0], blind[1], 'with blank images, a mismatched image changes nothing');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vqalab demo --video: the same recipe and control on the synthetic video set (one question a clip)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-demo-video-'));
  try {
    const lines = demo(path.join(dir, 'v'), '--video', '--video-frames', '8');
    assert.match(
      lines[0]!,
      /^vqalab demo: tiny Qwen2-VL \(1\.13M parameters, .*, cpu\) on synthetic videos \(8-frame clips; color, motion, blink questions\): 12 training questions, 10 held-out/,
    );
    assert.match(
      lines.find((l) => l.startsWith('warm start: '))!,
      /^warm start: \d+\.\d\d% held-out accuracy \(official VQA metric, 10 questions; color \d+\.\d\d, motion \d+\.\d\d, blink \d+\.\d\d\)$/,
    );
    assert.match(
      lines.find((l) => l.startsWith('  after GRPO, '))!,
      /^  after GRPO, each question shown another question's clip: \d+\.\d\d% \(/,
    );
    const saved = JSON.parse(readFileSync(path.join(dir, 'v', 'result.json'), 'utf8')) as {
      grpoMismatchedImageAccuracy: number;
      recipe: { video: boolean; videoFrames: number };
    };
    assert.equal(typeof saved.grpoMismatchedImageAccuracy, 'number');
    assert.deepEqual([saved.recipe.video, saved.recipe.videoFrames], [true, 8]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vqalab demo --help prints its usage; a bad option is a usage error', () => {
  assert.match(
    execFileSync(process.execPath, [bin, 'demo', '--help'], { encoding: 'utf8' }),
    /^Usage: vqalab demo \[options\]/,
  );
  assert.throws(
    () => execFileSync(process.execPath, [bin, 'demo', '--grpo-steps', 'x'], { encoding: 'utf8', stdio: 'pipe' }),
    (err: { status: number; stderr: string }) =>
      err.status === 2 && err.stderr.includes('--grpo-steps must be an integer >= 0; got "x"'),
  );
});

test('vqalab demo checks --device and --model before any work, with errors that name the fix', () => {
  const fail = (args: string[]) => {
    try {
      execFileSync(process.execPath, [bin, 'demo', ...args], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      const e = err as { status: number; stderr: string };
      return { status: e.status, stderr: e.stderr.trim() };
    }
    return assert.fail(`vqalab demo ${args.join(' ')} succeeded`);
  };
  assert.deepEqual(fail(['--device', 'gpu']), {
    status: 2,
    stderr: 'vqalab demo: --device must be cpu, cuda or cuda:N; got "gpu"',
  });
  assert.deepEqual(fail(['--model', '/nonexistent/model']), {
    status: 2,
    stderr:
      'vqalab demo: --model /nonexistent/model: not a model folder (no config.json); give a Qwen2-VL checkpoint folder with its tokenizer files',
  });
  assert.deepEqual(fail(['--video', '--blank-images']), {
    status: 2,
    stderr: 'vqalab demo: --video and --blank-images do not combine (the video control is the mismatched clips)',
  });
  assert.deepEqual(fail(['--video', '--video-families', 'color,zoom']), {
    status: 2,
    stderr: 'vqalab demo: --video-families: "zoom" is not one of color, motion, blink',
  });
  assert.deepEqual(fail(['--video', '--video-frames', '7']), {
    status: 2,
    stderr: 'vqalab demo: --video-frames must be even (whole temporal patches of 2); got 7',
  });
  assert.deepEqual(fail(['--grpo-lr', '2']), {
    status: 2,
    stderr: 'vqalab demo: --grpo-lr must be a number between 0 and 1 (e.g. 1e-5); got "2"',
  });
  if (!native()._cuda().available) {
    // This machine: a build without the CUDA backend (or no GPU). The message says why and what to do.
    const r = fail(['--device', 'cuda']);
    assert.equal(r.status, 1);
    assert.match(
      r.stderr,
      /^vqalab demo: --device cuda: .+\. Use --device cpu, or reinstall vqalab where the CUDA toolkit is found \(docs\/cuda\.md\)\.$/,
    );
    assert.ok(r.stderr.includes(native()._cuda().reason!), r.stderr);
  }
});
