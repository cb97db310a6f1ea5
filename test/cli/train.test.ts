/**
 * `vqalab train` end to end, as a user runs it: the seed's 4-column Parquet and VQAv2 converted by
 * `vqalab data convert`; Ctrl-C (SIGINT once a step line was printed) saves and exits 130, and
 * --resume finishes the run; every bad flag or file gets an exact message.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as arrow from 'apache-arrow';
import sharp from 'sharp';
import { cocoFileName, writeFakeVqa } from '../../bench/convert-fixture.js';
import { writeParquetAtomic } from '../../src/data/parquet.js';
import { utf8Data } from '../../src/data/schema.js';
import { grpoConfig } from '../../src/grpo/config.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const bin = path.join(root, 'bin', 'vqalab.js');
const work = mkdtempSync(path.join(tmpdir(), 'vqalab-train-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const vqalab = (...args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, VQALAB_THREADS: '1' } });
/** Small, fast steps on the embedded tiny model. */
const cfg = path.join(work, 'config.json');
writeFileSync(
  cfg,
  JSON.stringify({
    promptsPerStep: 2,
    numGenerations: 4,
    maxCompletionLength: 4,
    evalMaxTokens: 4,
    learningRate: 1e-3,
  }),
);

const COLORS: Record<string, string> = { red: '#d62728', blue: '#1f77b4', green: '#2ca02c', yellow: '#e8c81a' };

/** The seed's format: exactly id, image_path, question, answer (relative image paths). */
async function fourColumnParquet(name: string, n: number): Promise<string> {
  const dir = path.join(work, name);
  mkdirSync(path.join(dir, 'images'), { recursive: true });
  const names = Object.keys(COLORS);
  const ids: string[] = [],
    paths: string[] = [],
    questions: string[] = [],
    answers: string[] = [];
  for (let i = 0; i < n; i++) {
    const colour = names[i % names.length]!;
    const file = `images/${i}.png`;
    writeFileSync(
      path.join(dir, file),
      await sharp({ create: { width: 56, height: 56, channels: 3, background: COLORS[colour]! } })
        .png()
        .toBuffer(),
    );
    ids.push(`q${i}`);
    paths.push(file);
    questions.push('What color is the image?');
    answers.push(colour);
  }
  const file = path.join(dir, 'train.parquet');
  const col = (v: string[]) => arrow.makeVector(utf8Data(v));
  await writeParquetAtomic(file, async (write) => {
    await write(
      new arrow.Table({ id: col(ids), image_path: col(paths), question: col(questions), answer: col(answers) }),
    );
  });
  return file;
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.length > 0);
}

function checkStepLines(stdout: string, from: number, to: number, total: number): void {
  const steps = lines(stdout).filter((l) => l.startsWith('step '));
  assert.equal(steps.length, to - from + 1, stdout);
  steps.forEach((l, i) => {
    assert.match(
      l,
      new RegExp(
        `^step ${from + i}/${total} \\| reward \\d\\.\\d{3} \\| accuracy \\d\\.\\d{3} \\| \\d+ tok/s \\| [\\d.]+s/step \\| ETA [\\d.]+s$`,
      ),
      l,
    );
  });
}

test("vqalab train on the seed's 4-column Parquet: progress lines, metrics.jsonl, checkpoint, result.json", async () => {
  const data = await fourColumnParquet('four', 8);
  const out = path.join(work, 'run-four');
  const r = vqalab(
    'train',
    '--data-path',
    data,
    '--val-data-path',
    data,
    '--max-steps',
    '3',
    '--sft-steps',
    '1',
    '--config',
    cfg,
    '--out',
    out,
    '--eval-every',
    '2',
    '--checkpoint-every',
    '2',
    '--quiet',
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const all = lines(r.stdout);
  assert.match(
    all[0]!,
    /^vqalab train: tiny Qwen2-VL \(embedded\) \(1\.13M parameters, cpu\) on .*train\.parquet: 8 training samples, 8 validation; 3 GRPO steps of 2×4; out /,
  );
  checkStepLines(r.stdout, 1, 3, 3);
  // Evaluated after step 2 (--eval-every) and at the end; single-answer rows scored by exact match.
  assert.equal(
    all.filter((l) => /^eval after step [23]: val accuracy \d+\.\d{2}% \(8 questions; other \d+\.\d{2}\)$/.test(l))
      .length,
    2,
    r.stdout,
  );
  assert.match(all.at(-1)!, /^done: 3 steps in [\d.]+s; checkpoint .*checkpoint-000003; metrics .*metrics\.jsonl$/);
  const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; step: number });
  assert.deepEqual(
    metrics.filter((m) => m.kind === 'grpo').map((m) => m.step),
    [0, 1, 2],
  );
  assert.equal(metrics.filter((m) => m.kind === 'eval').length, 2);
  assert.ok(existsSync(path.join(out, 'checkpoints', 'checkpoint-000002', 'trainer.json')));
  assert.equal(readFileSync(path.join(out, 'checkpoints', 'latest'), 'utf8').trim(), 'checkpoint-000003');
  const result = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(result.steps, 3);
  assert.equal(result.interrupted, false);
  assert.equal(typeof result.valAccuracy, 'number');
});

test('vqalab train on VQAv2 converted by vqalab data convert (10 answers, the official formula)', async () => {
  const dir = path.join(work, 'vqav2');
  mkdirSync(dir);
  const q = path.join(dir, 'questions.json'),
    a = path.join(dir, 'annotations.json');
  const { images } = writeFakeVqa(q, a, { questions: 12, subtype: 'val2014', seed: 3 });
  const imgDir = path.join(dir, 'val2014');
  mkdirSync(imgDir);
  const jpeg = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#3366cc' } })
    .jpeg()
    .toBuffer();
  for (const id of images) writeFileSync(path.join(imgDir, cocoFileName('val2014', id)), jpeg);
  const parquet = path.join(dir, 'val.parquet');
  const c = vqalab('data', 'convert', '--questions', q, '--annotations', a, '--image-dir', imgDir, '--output', parquet);
  assert.equal(c.status, 0, c.stderr);
  const out = path.join(work, 'run-vqav2');
  const r = vqalab(
    'train',
    '--data-path',
    parquet,
    '--val-data-path',
    parquet,
    '--limit-val',
    '6',
    '--max-steps',
    '2',
    '--sft-steps',
    '1',
    '--config',
    cfg,
    '--out',
    out,
    '--quiet',
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /on .*val\.parquet: 12 training samples, 6 validation; 2 GRPO steps/);
  checkStepLines(r.stdout, 1, 2, 2);
  assert.match(r.stdout, /\neval after step 2: val accuracy \d+\.\d{2}% \(6 questions; [a-z/]+ \d+\.\d{2}/);
  assert.ok(existsSync(path.join(out, 'checkpoints', 'checkpoint-000002', 'model', 'model.safetensors')));
});

test('Ctrl-C once a step line is out: saves at the step boundary, exits 130; --resume finishes the run', async () => {
  const data = await fourColumnParquet('interrupt', 8);
  const out = path.join(work, 'run-interrupt');
  const args = [
    'train',
    '--data-path',
    data,
    '--max-steps',
    '400',
    '--sft-steps',
    '1',
    '--config',
    cfg,
    '--out',
    out,
    '--quiet',
  ];
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, VQALAB_THREADS: '1' },
  });
  let stdout = '',
    stderr = '',
    sent = false;
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!sent && /\nstep 1\/400 /.test(stdout)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.on('close', (c) => resolve(c));
  });
  assert.ok(sent, `no step line: ${stdout}${stderr}`);
  assert.equal(code, 130, stdout + stderr);
  const done = lines(stdout).filter((l) => l.startsWith('step ')).length;
  assert.ok(done >= 1 && done < 400, stdout);
  assert.equal(
    lines(stdout).at(-1),
    `interrupted after step ${done}: checkpoint ${path.join(path.resolve(out), 'checkpoints', `checkpoint-${String(done).padStart(6, '0')}`)}; continue with the same command and --resume`,
  );
  assert.equal(
    readFileSync(path.join(out, 'checkpoints', 'latest'), 'utf8').trim(),
    `checkpoint-${String(done).padStart(6, '0')}`,
  );
  assert.equal(JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')).interrupted, true);

  // Resume to a total of done + 2 steps: the next step lines continue the count.
  const r = vqalab(...args.map((a) => (a === '400' ? String(done + 2) : a)), '--resume');
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, new RegExp(`resuming at step ${done}, 2 GRPO steps`));
  checkStepLines(r.stdout, done + 1, done + 2, done + 2);
  const steps = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; step: number })
    .filter((m) => m.kind === 'grpo')
    .map((m) => m.step);
  assert.deepEqual(
    steps,
    Array.from({ length: done + 2 }, (_, i) => i),
  );
});

test('vqalab train: bad flags and files get exact messages', async () => {
  const good = await fourColumnParquet('bad', 4);
  const missingCols = path.join(work, 'cols.parquet');
  await writeParquetAtomic(missingCols, async (write) => {
    await write(
      new arrow.Table({ id: arrow.makeVector(utf8Data(['a'])), question: arrow.makeVector(utf8Data(['q?'])) }),
    );
  });
  const missingImage = path.join(work, 'noimage.parquet');
  await writeParquetAtomic(missingImage, async (write) => {
    const c = (v: string) => arrow.makeVector(utf8Data([v]));
    await write(new arrow.Table({ id: c('x1'), image_path: c('nowhere.png'), question: c('q?'), answer: c('a') }));
  });
  const badJson = path.join(work, 'bad.json');
  writeFileSync(badJson, '{"learningRate": ');
  const arrayJson = path.join(work, 'array.json');
  writeFileSync(arrayJson, '[1]');
  const badField = path.join(work, 'field.json');
  writeFileSync(badField, '{"numGenerations": 1}');
  let fieldMessage = '';
  try {
    grpoConfig({ numGenerations: 1 });
  } catch (err) {
    fieldMessage = (err as Error).message;
  }
  assert.ok(fieldMessage.length > 0);
  const out = path.join(work, 'never');
  const d = ['--data-path', good, '--out', out];
  const cases: [string[], string][] = [
    [['--max-steps', '0', ...d], '--max-steps must be an integer >= 1; got "0"'],
    [['--max-steps', 'ten', ...d], '--max-steps must be an integer >= 1; got "ten"'],
    [['--lora-rank', '1.5', ...d], '--lora-rank must be an integer >= 1; got "1.5"'],
    [['--eval-every=-1', ...d], '--eval-every must be an integer >= 0; got "-1"'],
    [['--checkpoint-every', 'x', ...d], '--checkpoint-every must be an integer >= 0; got "x"'],
    [['--sft-lr', '0', ...d], '--sft-lr must be a number > 0; got "0"'],
    [['--sft-lr', 'fast', ...d], '--sft-lr must be a number > 0; got "fast"'],
    [['--device', 'tpu', ...d], '--device must be cpu, cuda or cuda:N; got "tpu"'],
    [['--model', path.join(work, 'nomodel'), ...d], `--model ${path.join(work, 'nomodel')}: no such folder`],
    [
      ['--model', path.join(work, 'bad'), ...d],
      `--model ${path.join(work, 'bad')}: not a model folder (no config.json), a vqalab checkpoint (trainer.json + model/, or checkpoints/latest) nor a PEFT adapter (adapter_config.json)`,
    ],
    [
      ['--data-path', path.join(work, 'none.parquet'), '--out', out],
      `--data-path ${path.join(work, 'none.parquet')}: no such file`,
    ],
    [
      ['--data-path', work, '--out', out],
      `--data-path ${work}: is a folder; expected a Parquet file (vqalab data convert / vqalab data synth write one)`,
    ],
    [
      ['--data-path', missingCols, '--out', out],
      `--data-path ${missingCols}: missing required columns "image_path", "answer"; a VQA table needs id, image_path, question, answer (it has: id, question)`,
    ],
    [
      ['--data-path', missingImage, '--out', out],
      `--data-path ${missingImage}: row 0 (id x1): image ${path.join(work, 'nowhere.png')} does not exist (image_path resolves against the Parquet file's folder)`,
    ],
    [
      ['--val-data-path', good, '--out', out],
      '--val-data-path needs --data-path (the embedded default brings its own held-out questions)',
    ],
    [
      ['--config', path.join(work, 'none.json'), ...d],
      `--config ${path.join(work, 'none.json')}: cannot read (ENOENT)`,
    ],
    [
      ['--config', badJson, ...d],
      `--config ${badJson}: invalid JSON (${(() => {
        try {
          JSON.parse('{"learningRate": ');
        } catch (e) {
          return (e as Error).message;
        }
        return '';
      })()})`,
    ],
    [
      ['--config', arrayJson, ...d],
      `--config ${arrayJson}: expected a JSON object of trainer config fields (docs/grpo.md), e.g. {"learningRate": 1e-5, "numGenerations": 8}`,
    ],
    [['--config', badField, ...d], `trainer config (--config): ${fieldMessage}`],
    [
      ['--resume', ...d],
      `--resume: ${out} holds no checkpoint to continue (no ${path.join(out, 'checkpoints', 'latest')}); run without --resume to start, or pass the run's --out`,
    ],
    [['--data-path', '', '--out', out], '--data-path needs a path; got an empty string'],
  ];
  for (const [args, message] of cases) {
    const r = vqalab('train', ...args);
    assert.equal(r.stderr, `vqalab train: ${message}\n`, args.join(' '));
    assert.equal(r.status, 2, args.join(' '));
    assert.equal(r.stdout, '');
  }
  const unknown = vqalab('train', '--max-step', '3');
  assert.equal(
    unknown.stderr,
    `vqalab train: Unknown option '--max-step'; run "vqalab train --help" for the options\n`,
  );
  assert.equal(unknown.status, 2);
  assert.ok(!existsSync(out), 'nothing was written');
});
