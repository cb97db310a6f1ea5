import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  existsSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { cocoFileName, writeFakeVqa } from '../../bench/convert-fixture.js';
import { VqaDataset } from '../../src/data/dataset.js';
import { readParquetFooter } from '../../src/data/parquet.js';
import { convertVqav2, mostCommonAnswer } from '../../src/data/vqav2.js';

const BIN = path.resolve('bin/vqalab.js');
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, 'data', ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });

async function fixture(n: number, subtype: string, withAnnotations = true) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-conv-'));
  const q = path.join(dir, 'questions.json');
  const a = withAnnotations ? path.join(dir, 'annotations.json') : undefined;
  const { images } = writeFakeVqa(q, a, { questions: n, subtype, seed: 5 });
  const imgDir = path.join(dir, subtype === 'test-dev2015' ? 'test2015' : subtype);
  mkdirSync(imgDir);
  const jpeg = await sharp({ create: { width: 8, height: 6, channels: 3, background: '#3366cc' } })
    .jpeg()
    .toBuffer();
  for (const id of images) writeFileSync(path.join(imgDir, cocoFileName(subtype, id)), jpeg);
  return { dir, q, a, imgDir, images };
}

test('mostCommonAnswer: lower-cased, trimmed, ties to the first seen', () => {
  assert.equal(mostCommonAnswer(['Cat', 'dog', 'cat ', 'dog']), 'cat');
  assert.equal(mostCommonAnswer(['2', 'two', 'two', '2']), '2');
  assert.equal(mostCommonAnswer([' Yes']), 'yes');
  assert.equal(mostCommonAnswer(['a', 'b', 'b', 'a', 'c']), 'a');
});

test('convert through the CLI: every row equals what JSON.parse of the inputs says', async () => {
  const f = await fixture(250, 'val2014');
  const out = path.join(f.dir, 'out', 'val.parquet');
  mkdirSync(path.dirname(out));
  const r = cli(
    'convert',
    '--questions',
    f.q,
    '--annotations',
    f.a!,
    '--image-dir',
    f.imgDir,
    '--output',
    out,
    '--row-group-size',
    '100',
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /^data convert: 250 rows \(3 row groups, .* MB\) -> .*val\.parquet in [\d.]+ s\n  questions 250, annotations 250, split val2014\n$/,
  );
  assert.deepEqual((await readParquetFooter(out)).rowGroups, [100, 100, 50]);
  const questions = JSON.parse(readFileSync(f.q, 'utf8')).questions as {
    question_id: number;
    image_id: number;
    question: string;
  }[];
  const annotations = JSON.parse(readFileSync(f.a!, 'utf8')).annotations as {
    question_id: number;
    answers: { answer: string }[];
    answer_type: string;
    question_type: string;
    multiple_choice_answer: string;
  }[];
  const byId = new Map(questions.map((q) => [q.question_id, q]));
  const ds = await VqaDataset.fromParquet(out);
  assert.equal(ds.size, 250);
  annotations.forEach((a, i) => {
    const q = byId.get(a.question_id)!;
    const s = ds.get(i);
    const answers = a.answers.map((x) => x.answer);
    assert.deepEqual(s, {
      id: String(a.question_id),
      imagePath: path.join(f.imgDir, `COCO_val2014_${String(q.image_id).padStart(12, '0')}.jpg`),
      question: q.question,
      answer: mostCommonAnswer(answers),
      answers,
      row: i,
      multipleChoiceAnswer: a.multiple_choice_answer,
      answerType: a.answer_type,
      questionType: a.question_type,
      imageId: q.image_id,
    });
  });
  assert.ok(existsSync(ds.get(0).imagePath));
  // The converted file verifies clean, images decoded.
  const v = cli('verify', out, '--quiet');
  assert.equal(v.status, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /verify: ok, no problems found/);
  rmSync(f.dir, { recursive: true, force: true });
});

test('test-dev without annotations, --limit, missing images skipped or kept', async () => {
  const f = await fixture(40, 'test-dev2015', false);
  const out = path.join(f.dir, 'testdev.parquet');
  const r = await convertVqav2({ questions: f.q, imageDir: f.imgDir, output: out, quiet: true });
  assert.equal(r.rows, 40);
  const ds = await VqaDataset.fromParquet(out);
  const s = ds.get(0);
  assert.deepEqual([s.answer, s.answers, s.answerType], ['', [], undefined]);
  assert.match(s.imagePath, /test2015\/COCO_test2015_\d{12}\.jpg$/);
  assert.equal(
    (await convertVqav2({ questions: f.q, imageDir: f.imgDir, output: out, limit: 7, quiet: true })).rows,
    7,
  );
  rmSync(path.join(f.imgDir, cocoFileName('test-dev2015', f.images[0]!)));
  const skipped = await convertVqav2({ questions: f.q, imageDir: f.imgDir, output: out, quiet: true });
  assert.ok(skipped.missingImages > 0);
  assert.equal(skipped.rows + skipped.missingImages, 40);
  assert.match(skipped.missingExamples[0]!, /^question_id \d+: .*COCO_test2015_\d{12}\.jpg$/);
  const kept = await convertVqav2({
    questions: f.q,
    imageDir: f.imgDir,
    output: out,
    keepMissingImages: true,
    quiet: true,
  });
  assert.equal(kept.rows, 40);
  rmSync(f.dir, { recursive: true, force: true });
});

test('wrong JSON shapes name the file, the element, the question_id and the field', async () => {
  const f = await fixture(20, 'val2014');
  const out = path.join(f.dir, 'x.parquet');
  const write = (name: string, doc: unknown) => {
    const p = path.join(f.dir, name);
    writeFileSync(p, JSON.stringify(doc));
    return p;
  };
  const qs = JSON.parse(readFileSync(f.q, 'utf8'));
  const as = JSON.parse(readFileSync(f.a!, 'utf8'));
  const base = { imageDir: f.imgDir, output: out, quiet: true };
  // Files swapped.
  await assert.rejects(
    convertVqav2({ ...base, questions: f.a!, annotations: f.q }),
    new RegExp(
      `${f.a}: no "questions" array at the top level \\(keys: "info", "license", "data_subtype", "annotations"\\)`,
    ),
  );
  // A question without text.
  const q2 = structuredClone(qs);
  delete q2.questions[3].question;
  await assert.rejects(convertVqav2({ ...base, questions: write('q2.json', q2), annotations: f.a }), {
    message: `${path.join(f.dir, 'q2.json')}: questions[3] (question_id ${qs.questions[3].question_id}): field "question": expected a string, got nothing`,
  });
  const q3 = structuredClone(qs);
  q3.questions[1].question_id = '12';
  await assert.rejects(
    convertVqav2({ ...base, questions: write('q3.json', q3), annotations: f.a }),
    /questions\[1\]: field "question_id": expected an integer, got "12"/,
  );
  // Answers that are not a list; an answer that is not a string; an unknown question.
  const a2 = structuredClone(as);
  a2.annotations[5].answers = 'yes';
  await assert.rejects(convertVqav2({ ...base, questions: f.q, annotations: write('a2.json', a2) }), {
    message: `${path.join(f.dir, 'a2.json')}: annotations[5] (question_id ${as.annotations[5].question_id}): field "answers": expected a non-empty list of {answer, ...}, got "yes"`,
  });
  const a3 = structuredClone(as);
  a3.annotations[2].answers[4].answer = 4;
  await assert.rejects(
    convertVqav2({ ...base, questions: f.q, annotations: write('a3.json', a3) }),
    /annotations\[2\] \(question_id \d+\): field "answers\[4\]\.answer": expected a string, got 4/,
  );
  const a4 = structuredClone(as);
  a4.annotations[0].question_id = 1;
  await assert.rejects(
    convertVqav2({ ...base, questions: f.q, annotations: write('a4.json', a4) }),
    /annotations\[0\] \(question_id 1\): no question with this question_id in .*questions\.json/,
  );
  const a5 = { annotations: { not: 'a list' } };
  await assert.rejects(
    convertVqav2({ ...base, questions: f.q, annotations: write('a5.json', a5) }),
    /a5\.json: byte 15: "annotations" must be an array, found '\{'/,
  );
  writeFileSync(path.join(f.dir, 'trunc.json'), readFileSync(f.a!).subarray(0, 3000));
  await assert.rejects(
    convertVqav2({ ...base, questions: f.q, annotations: path.join(f.dir, 'trunc.json') }),
    /trunc\.json: unexpected end of file at byte 3000 inside "annotations"/,
  );
  await assert.rejects(
    convertVqav2({ ...base, questions: f.q, annotations: f.a, imageDir: path.join(f.dir, 'nope') }),
    /--image-dir .*nope: no such folder/,
  );
  // None of the failures left an output or a temp file.
  assert.deepEqual(
    readdirSync(f.dir).filter((n) => n.includes('x.parquet')),
    [],
  );
  // CLI: a bad input is exit 1 with the message; a missing flag is a usage error.
  const r = cli('convert', '--questions', f.a!, '--annotations', f.q, '--image-dir', f.imgDir, '--output', out);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^vqalab data: convert: .*no "questions" array/m);
  assert.equal(cli('convert', '--questions', f.q).status, 2);
  assert.equal(cli('convert', '--help').status, 0);
  rmSync(f.dir, { recursive: true, force: true });
});

test('a conversion that fails late or is interrupted leaves no partial output', async () => {
  const f = await fixture(3000, 'train2014');
  const out = path.join(f.dir, 'train.parquet');
  // A bad annotation after several row groups were already written.
  const as = JSON.parse(readFileSync(f.a!, 'utf8'));
  as.annotations[2900].answers = [];
  const bad = path.join(f.dir, 'bad.json');
  writeFileSync(bad, JSON.stringify(as));
  await assert.rejects(
    convertVqav2({ questions: f.q, annotations: bad, imageDir: f.imgDir, output: out, rowGroupSize: 200, quiet: true }),
    /annotations\[2900\]/,
  );
  assert.deepEqual(
    readdirSync(f.dir).filter((n) => n.includes('train.parquet')),
    [],
  );
  // SIGINT while rows are being written. The annotations come through a named pipe that we fill
  // only partly, so the conversion is surely mid-way when the signal arrives.
  const fifo = path.join(f.dir, 'annotations.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const child = spawn(
    process.execPath,
    [
      BIN,
      'data',
      'convert',
      '--questions',
      f.q,
      '--annotations',
      fifo,
      '--image-dir',
      f.imgDir,
      '--output',
      out,
      '--row-group-size',
      '10',
    ],
    { env: { ...process.env, CI: '1' } },
  );
  const writer = createWriteStream(fifo);
  writer.on('error', () => {
    /* the reader went away: expected */
  });
  const bytes = readFileSync(f.a!);
  writer.write(bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d;
  });
  // Rows are being written once the temporary output exists beside the target.
  let sent = false;
  for (let i = 0; i < 600 && !sent; i++) {
    await new Promise((r) => setTimeout(r, 50));
    if (readdirSync(f.dir).some((n) => n.startsWith('.train.parquet.tmp-'))) {
      sent = true;
      child.kill('SIGINT');
    }
  }
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  writer.destroy();
  assert.ok(sent, `the conversion never started writing: ${stderr}`);
  assert.equal(code, 130, stderr);
  assert.match(stderr, /interrupted \(SIGINT\); no output written/);
  assert.deepEqual(
    readdirSync(f.dir).filter((n) => n.includes('train.parquet')),
    [],
  );
  rmSync(f.dir, { recursive: true, force: true });
});
