/** `vqalab eval`: the official VQA accuracy of a results file, overall and per answer/question type. */
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../util/fs.js';
import { PYTHON_DIALECTS, type PythonDialect } from '../eval/python.js';
import { evaluateVqaFiles, VqaInputError, vqaEvalToJson, vqaEvalToText } from '../eval/vqa-eval.js';
import { type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const usage = `Usage: vqalab eval --annotations A.json --predictions P.json [--questions Q.json] [options]

The official VQA accuracy (GT-Vision-Lab/VQA vqaEval.py, final version), reproduced to the last
printed decimal: overall, per answer type and per question type, rounded to 2 decimals.

Files (official formats):
  --annotations FILE   VQAv2 annotations JSON ({"annotations": [{question_id, question_type,
                       answer_type, answers: [{answer, answer_id, ...}]}]})
  --predictions FILE   results JSON ([{"question_id": ..., "answer": "..."}]); must cover exactly the
                       annotated question ids
  --questions FILE     VQAv2 questions JSON; optional, checked against the annotations (and needed
                       for a "Multiple Choice" task, whose answers must be among the choices)

Options:
  --json               print JSON instead of text
  --per-question       with --json, include each question's accuracy (the official evalQA)
  --output FILE        also write the JSON result to FILE (atomically)
  --dialect NAME       whose behaviour to reproduce: python2 (default: the official file as
                       published, run by CPython 2.7), python3 (the file under CPython 3.0-3.11),
                       python3.12 (CPython 3.12+). They differ in round() of exact halves, float
                       sum(), and Unicode handling; see docs/vqa-metric.md
  -h, --help           show this help
`;

export const evalCommand: Command = {
  name: 'eval',
  summary: 'official VQA accuracy of a results file (overall, per answer type, per question type)',
  usage,
  async run(argv) {
    let values;
    try {
      ({ values } = parseArgs({
        args: argv,
        options: {
          annotations: { type: 'string' },
          predictions: { type: 'string' },
          results: { type: 'string' },
          questions: { type: 'string' },
          json: { type: 'boolean', default: false },
          'per-question': { type: 'boolean', default: false },
          output: { type: 'string' },
          dialect: { type: 'string', default: 'python2' },
        },
        strict: true,
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError(`${(err as Error).message}\n\n${usage}`);
    }
    const predictions = values.predictions ?? values.results;
    if (!values.annotations) throw new UsageError('missing --annotations FILE (run "vqalab eval --help")');
    if (!predictions) throw new UsageError('missing --predictions FILE (run "vqalab eval --help")');
    const dialect = values.dialect as PythonDialect;
    if (!PYTHON_DIALECTS.includes(dialect)) {
      throw new UsageError(`--dialect must be one of ${PYTHON_DIALECTS.join(', ')}; got "${values.dialect}"`);
    }
    let result;
    try {
      result = await evaluateVqaFiles(
        { annotations: values.annotations, predictions, questions: values.questions },
        { dialect },
      );
    } catch (err) {
      if (err instanceof VqaInputError) throw new UsageError(err.message, 1);
      throw err;
    }
    for (const w of result.warnings) process.stderr.write(`vqalab eval: warning: ${w}\n`);
    const json = vqaEvalToJson(result, { perQuestion: values['per-question'] });
    if (values.output) await writeFileAtomic(values.output, JSON.stringify(json, null, 2) + '\n');
    if (values.json) process.stdout.write(JSON.stringify(json, null, 2) + '\n');
    else process.stdout.write(vqaEvalToText(result));
    return 0;
  },
};
