/**
 * Runs the official VQA evaluator (a checkout of GT-Vision-Lab/VQA, never part of this repository)
 * on cases written to a temporary directory, under a given Python interpreter, and returns exactly
 * what it computed. For Python 3 the two official files get the minimal syntax edits (print
 * statements, tabs) in the temporary directory. No side effects on import.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { VqaCase } from './vqa-fuzz.js';

export interface OfficialOutcome {
  error?: string;
  overall?: string;
  perQuestionType?: Record<string, string>;
  perAnswerType?: Record<string, string>;
  /** question id (as str()) → repr of the rounded per-question accuracy (evalQA). */
  evalQA?: Record<string, string>;
  /** repr of every unrounded per-question accuracy, in evaluation order. */
  raw?: string[];
  /** CPU time the official code spent on the case (loading the files included). */
  cpuSeconds?: number;
}

// Our harness around the official classes: loads the files through the official VQA/loadRes, runs
// VQAEval.evaluate(), records each unrounded accuracy by wrapping setEvalQA, prints JSON lines.
const HARNESS = String.raw`
import sys, json, io, os, resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
sys.path.insert(0, sys.argv[1])
from vqa import VQA
from vqaEval import VQAEval
raw = []
orig = VQAEval.setEvalQA
def record(self, quesId, acc):
    raw.append(repr(acc))
    return orig(self, quesId, acc)
VQAEval.setEvalQA = record
for case in sys.argv[2:]:
    del raw[:]
    ann, ques, res = [os.path.join(case, f) for f in ('ann.json', 'ques.json', 'res.json')]
    old = sys.stdout
    sys.stdout = io.BytesIO() if sys.version_info[0] == 2 else io.StringIO()
    t0 = cpu()
    try:
        vqa = VQA(ann, ques)
        vqaRes = vqa.loadRes(res, ques)
        ev = VQAEval(vqa, vqaRes, n=2)
        ev.evaluate()
        out = {
            'overall': '%.02f' % ev.accuracy['overall'],
            'perQuestionType': dict((k, '%.02f' % v) for k, v in ev.accuracy['perQuestionType'].items()),
            'perAnswerType': dict((k, '%.02f' % v) for k, v in ev.accuracy['perAnswerType'].items()),
            'evalQA': dict((str(k), repr(v)) for k, v in ev.evalQA.items()),
            'raw': list(raw),
            'cpuSeconds': cpu() - t0,
        }
    except Exception as e:
        out = {'error': '%s: %s' % (type(e).__name__, e)}
    sys.stdout = old
    sys.stdout.write(json.dumps(out) + '\n')
`;

/** Where the official code and interpreters are, from the environment (all optional). */
export function officialSetup(): { dir: string; pythons: Record<string, string> } | null {
  const dir = process.env.VQALAB_OFFICIAL_VQA;
  if (!dir || !existsSync(path.join(dir, 'PythonEvaluationTools', 'vqaEvaluation', 'vqaEval.py'))) return null;
  const pythons: Record<string, string> = {};
  if (process.env.VQALAB_PYTHON2) pythons.python2 = process.env.VQALAB_PYTHON2;
  if (process.env.VQALAB_PYTHON3) pythons.python3 = process.env.VQALAB_PYTHON3;
  if (process.env.VQALAB_PYTHON312) pythons['python3.12'] = process.env.VQALAB_PYTHON312;
  return { dir, pythons };
}

function port(source: string): string {
  // Python 2 reads a tab as "to the next multiple of 8"; make that explicit, then print → print().
  return source
    .split('\n')
    .map((line) => {
      let col = 0,
        out = '';
      let i = 0;
      for (; i < line.length && (line[i] === ' ' || line[i] === '\t'); i++) {
        const w = line[i] === '\t' ? 8 - (col % 8) : 1;
        out += ' '.repeat(w);
        col += w;
      }
      const rest = line.slice(i);
      const m = /^print (.*)$/.exec(rest);
      return out + (m ? `print(${m[1]})` : rest);
    })
    .join('\n');
}

/** Prepare a directory holding vqa.py and vqaEval.py for the given interpreter major version. */
export function prepareOfficial(officialDir: string, python3: boolean, into: string): string {
  const dir = path.join(into, python3 ? 'official-py3' : 'official-py2');
  mkdirSync(dir, { recursive: true });
  for (const [from, to] of [
    ['PythonHelperTools/vqaTools/vqa.py', 'vqa.py'],
    ['PythonEvaluationTools/vqaEvaluation/vqaEval.py', 'vqaEval.py'],
  ] as const) {
    const src = readFileSync(path.join(officialDir, from), 'utf8');
    writeFileSync(path.join(dir, to), python3 ? port(src) : src);
  }
  writeFileSync(path.join(dir, 'harness.py'), HARNESS);
  return dir;
}

/** Run the official evaluator on each case; returns one outcome per case. */
export function runOfficial(
  cases: VqaCase[],
  officialDir: string,
  python: string,
  python3: boolean,
): OfficialOutcome[] {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vqalab-official-'));
  try {
    const code = prepareOfficial(officialDir, python3, tmp);
    const dirs = cases.map((c, i) => {
      const d = path.join(tmp, `case${i}`);
      mkdirSync(d);
      writeFileSync(path.join(d, 'ann.json'), JSON.stringify(c.annotations));
      writeFileSync(path.join(d, 'ques.json'), JSON.stringify(c.questions));
      writeFileSync(path.join(d, 'res.json'), JSON.stringify(c.results));
      return d;
    });
    const out = execFileSync(python, [path.join(code, 'harness.py'), code, ...dirs], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
      env: { ...process.env, PYTHONIOENCODING: 'utf-8', PYTHONWARNINGS: 'ignore' },
    });
    return out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as OfficialOutcome);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Write a case as the three official files (for the CLI). */
export function writeCase(c: VqaCase, dir: string): { annotations: string; questions: string; predictions: string } {
  mkdirSync(dir, { recursive: true });
  const files = {
    annotations: path.join(dir, 'ann.json'),
    questions: path.join(dir, 'ques.json'),
    predictions: path.join(dir, 'res.json'),
  };
  writeFileSync(files.annotations, JSON.stringify(c.annotations));
  writeFileSync(files.questions, JSON.stringify(c.questions));
  writeFileSync(files.predictions, JSON.stringify(c.results));
  return files;
}
