/** `vqalab eval` end to end: real files, the real CLI process, official numbers and clear errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const bin = path.join(root, 'bin', 'vqalab.js');
const fixtures = path.join(root, 'test', 'eval', 'fixtures');

function vqalab(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function files(dir: string) {
  return [
    '--annotations',
    path.join(dir, 'ann.json'),
    '--questions',
    path.join(dir, 'ques.json'),
    '--predictions',
    path.join(dir, 'res.json'),
  ];
}

interface Expected {
  overall: string;
  perAnswerType: Record<string, string>;
  perQuestionType: Record<string, string>;
}

function parseText(stdout: string): Expected {
  const overall = /^Overall Accuracy is: (\S+)$/m.exec(stdout)![1]!;
  const section = (title: string) => {
    const start = stdout.indexOf(title);
    const body = stdout
      .slice(start + title.length)
      .split('\n\n')[0]!
      .trim();
    return Object.fromEntries(
      body.split('\n').map((l) => {
        const i = l.lastIndexOf(' : ');
        return [l.slice(0, i), l.slice(i + 3)];
      }),
    );
  };
  return {
    overall,
    perAnswerType: section('Per Answer Type Accuracy is the following:'),
    perQuestionType: section('Per Question Type Accuracy is the following:'),
  };
}

for (const fixture of ['halves', 'dialects']) {
  const expected = JSON.parse(readFileSync(path.join(fixtures, fixture, 'expected.json'), 'utf8')) as Record<
    string,
    Expected
  >;
  for (const dialect of ['python2', 'python3', 'python3.12']) {
    test(`vqalab eval prints the official numbers (${fixture}, ${dialect})`, () => {
      const r = vqalab('eval', ...files(path.join(fixtures, fixture)), '--dialect', dialect);
      assert.equal(r.code, 0, r.stderr);
      const e = expected[dialect]!;
      assert.deepEqual(parseText(r.stdout), {
        overall: e.overall,
        perAnswerType: e.perAnswerType,
        perQuestionType: e.perQuestionType,
      });
    });
  }
}

test('the default dialect is python2 (the official file as published): 3.125 prints as 3.13', () => {
  const r = vqalab('eval', ...files(path.join(fixtures, 'halves')));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^is the : 3\.13$/m);
  assert.match(r.stdout, /^Overall Accuracy is: 9\.38$/m);
});

test('--json gives the rounded values, per type, and per question with --per-question', () => {
  const r = vqalab('eval', ...files(path.join(fixtures, 'halves')), '--json', '--per-question');
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.dialect, 'python2');
  assert.equal(j.questions, 64);
  assert.equal(j.overall, 9.38);
  assert.deepEqual(j.perAnswerType, { 'yes/no': 3.13, number: 15.63 });
  assert.deepEqual(j.perQuestionType, { 'is the': 3.13, 'how many': 15.63 });
  assert.equal(Object.keys(j.perQuestion).length, 64);
  assert.equal(j.perQuestion['5003'], 100);
  assert.equal(j.perQuestion['5000'], 0);
});

test('--output writes the JSON result', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-eval-'));
  try {
    const out = path.join(dir, 'acc.json');
    const r = vqalab('eval', ...files(path.join(fixtures, 'halves')), '--output', out);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(readFileSync(out, 'utf8')).overall, 9.38);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function withFiles(ann: unknown, res: unknown, fn: (dir: string) => void, ques?: unknown) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vqalab-eval-'));
  try {
    const w = (name: string, v: unknown) =>
      writeFileSync(path.join(dir, name), typeof v === 'string' ? v : JSON.stringify(v));
    w('ann.json', ann);
    w('res.json', res);
    w('ques.json', ques ?? { questions: [{ question_id: 1 }, { question_id: 2 }] });
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ann2 = {
  annotations: [1, 2].map((id) => ({
    question_id: id,
    question_type: 'what',
    answer_type: 'other',
    answers: [
      { answer: 'red', answer_id: 1 },
      { answer: 'red', answer_id: 2 },
      { answer: 'red', answer_id: 3 },
      { answer: 'red', answer_id: 4 },
    ],
  })),
};

test('errors: missing and extra question ids are named, with the file', () => {
  withFiles(
    ann2,
    [
      { question_id: 1, answer: 'red' },
      { question_id: 3, answer: 'red' },
    ],
    (dir) => {
      const r = vqalab('eval', ...files(dir));
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(
        r.stderr,
        /res\.json: results do not match the annotations: 1 question_id\(s\) of ann\.json have no prediction: 2; 1 predicted question_id\(s\) are not in ann\.json: 3/,
      );
    },
  );
});

test('errors: string vs number ids get a hint', () => {
  withFiles(
    ann2,
    [
      { question_id: '1', answer: 'red' },
      { question_id: '2', answer: 'red' },
    ],
    (dir) => {
      const r = vqalab('eval', ...files(dir));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /the annotations use number ids, the predictions string ids/);
    },
  );
});

test('errors: bad shapes name the file, the entry and the question_id', () => {
  const bad: [unknown, unknown, RegExp][] = [
    [
      ann2,
      { question_id: 1, answer: 'red' },
      /res\.json: expected an array of \{question_id, answer\} objects \(the official results format\) but received an object of type Object/,
    ],
    [
      ann2,
      [
        { question_id: 1, answer: 'red' },
        { question_id: 2, answer: 7 },
      ],
      /res\.json: \[1\] \(question_id 2\): expected a string for "answer" but received 7 of type number/,
    ],
    [ann2, [{ answer: 'red' }], /res\.json: \[0\] has no "question_id"/],
    [
      [],
      [],
      /ann\.json: expected an object with an "annotations" array \(VQAv2 annotations format\) but received an array of length 0/,
    ],
    [
      {
        annotations: [
          {
            question_id: 9,
            question_type: 'what',
            answer_type: 'other',
            answers: [{ answer: 'red' }, { answer: null }],
          },
        ],
      },
      [{ question_id: 9, answer: 'red' }],
      /ann\.json: annotations\[0\] \(question_id 9\): answers\[1\]: expected a string for "answer" but received null/,
    ],
    [
      { annotations: [{ question_id: 9, question_type: 'what', answer_type: 'other', answers: [] }] },
      [{ question_id: 9, answer: 'red' }],
      /ann\.json: annotations\[0\] \(question_id 9\): expected a non-empty array of \{answer\} objects for "answers" but received an array of length 0/,
    ],
    [
      { annotations: [{ question_id: 9, answer_type: 'other', answers: [{ answer: 'x' }] }] },
      [{ question_id: 9, answer: 'red' }],
      /ann\.json: annotations\[0\] \(question_id 9\): expected a string for "question_type" but received undefined/,
    ],
    [{ annotations: [] }, [], /ann\.json: no annotations to evaluate/],
    ['{"annotations": [', [], /ann\.json: not valid JSON/],
  ];
  for (const [ann, res, message] of bad) {
    withFiles(ann, res, (dir) => {
      const r = vqalab('eval', ...files(dir));
      assert.equal(r.code, 1, `${message}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace for input errors');
    });
  }
});

test('duplicate predictions: the last wins, with a warning (as the official code does)', () => {
  withFiles(
    ann2,
    [
      { question_id: 1, answer: 'blue' },
      { question_id: 2, answer: 'red' },
      { question_id: 1, answer: 'red' },
    ],
    (dir) => {
      const r = vqalab('eval', ...files(dir));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Overall Accuracy is: 100\.00/);
      assert.match(r.stderr, /warning: res\.json: 1 prediction\(s\) repeat a question_id/);
    },
  );
});

test('multiple choice: an answer outside the choices is an error naming the question_id', () => {
  const ques = {
    task_type: 'Multiple Choice',
    questions: [1, 2].map((id) => ({ question_id: id, multiple_choices: ['red', 'blue'] })),
  };
  withFiles(
    ann2,
    [
      { question_id: 1, answer: 'red' },
      { question_id: 2, answer: 'green' },
    ],
    (dir) => {
      const r = vqalab('eval', ...files(dir));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /res\.json: question_id 2: predicted answer "green" is not one of the multiple choices/);
    },
    ques,
  );
});

test('usage errors and --help', () => {
  const help = vqalab('eval', '--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: vqalab eval --annotations A\.json --predictions P\.json/);
  const missing = vqalab('eval', '--annotations', 'a.json');
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /missing --predictions FILE/);
  const dialect = vqalab('eval', '--annotations', 'a.json', '--predictions', 'p.json', '--dialect', 'python4');
  assert.equal(dialect.code, 2);
  assert.match(dialect.stderr, /--dialect must be one of python2, python3, python3\.12; got "python4"/);
  const nofile = vqalab('eval', '--annotations', '/nonexistent/a.json', '--predictions', '/nonexistent/p.json');
  assert.equal(nofile.code, 1);
  assert.match(nofile.stderr, /\/nonexistent\/a\.json: no such file/);
  const unknown = vqalab('eval', '--bogus');
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Unknown option '--bogus'/);
});
