/**
 * Whole-dataset VQA evaluation in the official file formats: VQAv2 questions and annotations JSON
 * and results `[{question_id, answer}]`. Numbers agree with the official evaluator
 * (vqaEval.py + vqa.py of GT-Vision-Lab/VQA) to the last printed decimal; see docs/vqa-metric.md.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describeValue } from '../util/validate.js';
import { formatFixed, pySum, pythonDialect, PYTHON_DIALECTS, type PythonDialect } from './python.js';
import { prepareAnswers, preparePrediction, scorePrepared } from './vqa-metric.js';

export type QuestionId = number | string;

export interface VqaAnswerRecord {
  answer: string;
  answer_id?: number;
  answer_confidence?: string;
  [key: string]: unknown;
}

export interface VqaAnnotation {
  question_id: QuestionId;
  image_id?: number;
  question_type: string;
  answer_type: string;
  multiple_choice_answer?: string;
  answers: VqaAnswerRecord[];
  [key: string]: unknown;
}

export interface VqaAnnotationsFile {
  annotations: VqaAnnotation[];
  [key: string]: unknown;
}

export interface VqaQuestion {
  question_id: QuestionId;
  image_id?: number;
  question?: string;
  multiple_choices?: string[];
  [key: string]: unknown;
}

export interface VqaQuestionsFile {
  questions: VqaQuestion[];
  task_type?: string;
  [key: string]: unknown;
}

export interface VqaResult {
  question_id: QuestionId;
  answer: string;
}

export interface VqaEvalOptions {
  /** Which interpreter's behaviour to reproduce; default 'python2' (see docs/vqa-metric.md). */
  dialect?: PythonDialect;
  /** Decimals of the reported accuracies (the official `n`); default 2. */
  ndigits?: number;
  /** File names used in error messages. */
  names?: { questions?: string; annotations?: string; predictions?: string };
}

/** One accuracy as the official code holds it (`value`, a rounded float) and prints it (`text`, `%.02f`). */
export interface Accuracy {
  value: number;
  text: string;
  /** Questions this accuracy averages over (duplicated question ids count each time, as officially). */
  count: number;
}

export interface VqaEvalResult {
  dialect: PythonDialect;
  ndigits: number;
  /** Questions evaluated (entries of the annotations, duplicates included). */
  questions: number;
  overall: Accuracy;
  /** In order of first appearance in the annotations. */
  perAnswerType: Map<string, Accuracy>;
  perQuestionType: Map<string, Accuracy>;
  /** The official evalQA: question id → round(100 × accuracy, ndigits). */
  perQuestion: Map<QuestionId, number>;
  /** Every question's unrounded accuracy in [0, 1], in evaluation order (duplicates included). */
  accuracies: number[];
  /** Notes about the input that did not stop evaluation (duplicate ids, questions file mismatches). */
  warnings: string[];
}

/** An input problem, naming the file and the question_id or entry. Printed without a stack trace. */
export class VqaInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VqaInputError';
  }
}

function idText(id: unknown): string {
  return typeof id === 'string' ? JSON.stringify(id) : String(id);
}

/**
 * Python dict/set semantics for question ids: 1 and 1.0 are one key, "1" another — exactly a JS
 * Map's SameValueZero on the parsed JSON values (0 and -0 are one key in both).
 */
function idKey(id: QuestionId): QuestionId {
  return id;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A canonical text of a JSON value under Python's == (True == 1 == 1.0, key order irrelevant), so
 * that two answer records compare equal exactly when Python's dicts would.
 */
export function pythonEqualityKey(v: unknown): string {
  if (v === null) return 'N';
  if (typeof v === 'boolean') return `#${v ? 1 : 0}`;
  if (typeof v === 'number') return `#${v === 0 ? 0 : v}`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(pythonEqualityKey).join(',')}]`;
  if (isRecord(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${pythonEqualityKey(v[k])}`)
      .join(',')}}`;
  }
  return String(v);
}

/**
 * Keys for the official dict-inequality leave-one-out, or undefined when no two answer records can
 * be equal (then plain leave-one-out by position is exact). VQAv2 records have distinct numeric
 * answer_ids, which settles it without building keys.
 */
function recordKeys(answers: readonly VqaAnswerRecord[]): string[] | undefined {
  const ids = new Set<number>();
  for (const a of answers) {
    if (typeof a.answer_id !== 'number') break;
    ids.add(a.answer_id === 0 ? 0 : a.answer_id);
  }
  if (ids.size === answers.length) return undefined;
  const keys = answers.map((a) => {
    const { answer: _answer, ...rest } = a;
    return pythonEqualityKey(rest);
  });
  return new Set(keys).size === keys.length ? undefined : keys;
}

/** Read and parse a JSON file, failing with the file name and a hint. */
export async function readJsonFile(file: string): Promise<unknown> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new VqaInputError(e.code === 'ENOENT' ? `${file}: no such file` : `${file}: cannot read (${e.message})`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new VqaInputError(`${file}: not valid UTF-8`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new VqaInputError(`${file}: not valid JSON (${(err as Error).message})`);
  }
}

function checkId(file: string, where: string, id: unknown): QuestionId {
  if (typeof id === 'number' && Number.isFinite(id)) return id;
  if (typeof id === 'string') return id;
  if (id === undefined) throw new VqaInputError(`${file}: ${where} has no "question_id"`);
  throw new VqaInputError(
    `${file}: ${where}: expected a number or string for question_id but received ${describeValue(id)}`,
  );
}

/** Validate the shape of an annotations file (VQAv2 `{annotations: [...]}`). */
export function checkAnnotations(data: unknown, file = 'annotations'): VqaAnnotationsFile {
  if (!isRecord(data) || !Array.isArray(data.annotations)) {
    throw new VqaInputError(
      `${file}: expected an object with an "annotations" array (VQAv2 annotations format) but received ${describeValue(data)}${isRecord(data) ? ` with keys ${Object.keys(data).slice(0, 8).join(', ') || '(none)'}` : ''}`,
    );
  }
  const anns = data.annotations as unknown[];
  anns.forEach((ann, i) => {
    if (!isRecord(ann))
      throw new VqaInputError(`${file}: annotations[${i}]: expected an object but received ${describeValue(ann)}`);
    const id = checkId(file, `annotations[${i}]`, ann.question_id);
    const where = `annotations[${i}] (question_id ${idText(id)})`;
    for (const field of ['question_type', 'answer_type'] as const) {
      if (typeof ann[field] !== 'string')
        throw new VqaInputError(
          `${file}: ${where}: expected a string for "${field}" but received ${describeValue(ann[field])}`,
        );
    }
    const answers = ann.answers;
    if (!Array.isArray(answers) || answers.length === 0) {
      throw new VqaInputError(
        `${file}: ${where}: expected a non-empty array of {answer} objects for "answers" but received ${describeValue(answers)}`,
      );
    }
    answers.forEach((a: unknown, j: number) => {
      if (!isRecord(a))
        throw new VqaInputError(
          `${file}: ${where}: answers[${j}]: expected an object but received ${describeValue(a)}`,
        );
      if (typeof a.answer !== 'string')
        throw new VqaInputError(
          `${file}: ${where}: answers[${j}]: expected a string for "answer" but received ${describeValue(a.answer)}`,
        );
    });
  });
  return data as unknown as VqaAnnotationsFile;
}

/** Validate the shape of a questions file (VQAv2 `{questions: [...]}`). */
export function checkQuestions(data: unknown, file = 'questions'): VqaQuestionsFile {
  if (!isRecord(data) || !Array.isArray(data.questions)) {
    throw new VqaInputError(
      `${file}: expected an object with a "questions" array (VQAv2 questions format) but received ${describeValue(data)}`,
    );
  }
  (data.questions as unknown[]).forEach((q, i) => {
    if (!isRecord(q))
      throw new VqaInputError(`${file}: questions[${i}]: expected an object but received ${describeValue(q)}`);
    checkId(file, `questions[${i}]`, q.question_id);
  });
  return data as unknown as VqaQuestionsFile;
}

/** Validate the shape of a results file (`[{question_id, answer}]`). */
export function checkResults(data: unknown, file = 'predictions'): VqaResult[] {
  if (!Array.isArray(data)) {
    throw new VqaInputError(
      `${file}: expected an array of {question_id, answer} objects (the official results format) but received ${describeValue(data)}`,
    );
  }
  data.forEach((r: unknown, i: number) => {
    if (!isRecord(r))
      throw new VqaInputError(
        `${file}: [${i}]: expected an object {question_id, answer} but received ${describeValue(r)}`,
      );
    const id = checkId(file, `[${i}]`, r.question_id);
    if (typeof r.answer !== 'string') {
      throw new VqaInputError(
        `${file}: [${i}] (question_id ${idText(id)}): expected a string for "answer" but received ${describeValue(r.answer)}`,
      );
    }
  });
  return data as VqaResult[];
}

function listIds(ids: QuestionId[], max = 5): string {
  const shown = ids.slice(0, max).map(idText).join(', ');
  return ids.length > max ? `${shown}, … (${ids.length} in all)` : shown;
}

function accuracy(values: number[], dialect: PythonDialect, ndigits: number): Accuracy {
  const d = pythonDialect(dialect);
  // round(100*float(sum(acc))/len(acc), n): 100*sum first, then the division, as in the official code.
  const value = d.round((100 * pySum(values, d.compensatedSum)) / values.length, ndigits);
  return { value, text: formatFixed(value, ndigits), count: values.length };
}

/**
 * Evaluate results against annotations exactly as the official VQAEval.evaluate() does.
 *
 * Reproduced behaviour beyond the metric itself: questions are taken in the annotations' order,
 * duplicates included (a question_id listed twice is scored twice, both times with its *last*
 * annotation, and the second time on the answers the first pass already normalised); a
 * question_id predicted twice uses the last prediction. The set of predicted question_ids must equal
 * the annotations' (the official assertion), reported here with the ids that differ.
 */
export function evaluateVqa(
  annotationsData: VqaAnnotationsFile,
  results: readonly VqaResult[],
  options: VqaEvalOptions & { questions?: VqaQuestionsFile } = {},
): VqaEvalResult {
  const dialect = options.dialect ?? 'python2';
  if (!PYTHON_DIALECTS.includes(dialect)) {
    throw new TypeError(
      `Expected one of ${PYTHON_DIALECTS.map((x) => JSON.stringify(x)).join(', ')} for dialect but received ${describeValue(dialect)}`,
    );
  }
  const ndigits = options.ndigits ?? 2;
  const names = { questions: 'questions', annotations: 'annotations', predictions: 'predictions', ...options.names };
  const warnings: string[] = [];
  const anns = annotationsData.annotations;
  if (anns.length === 0)
    throw new VqaInputError(
      `${names.annotations}: no annotations to evaluate (the official code divides by their number)`,
    );

  // The official index: qa[question_id] = the last annotation with that id.
  const byId = new Map<QuestionId, VqaAnnotation>();
  let duplicates = 0;
  for (const ann of anns) {
    const k = idKey(ann.question_id);
    if (byId.has(k)) duplicates++;
    byId.set(k, ann);
  }
  if (duplicates)
    warnings.push(
      `${names.annotations}: ${duplicates} annotation(s) repeat a question_id; as in the official code each repeat is scored again with the last annotation of that id`,
    );

  const predicted = new Map<QuestionId, VqaResult>();
  let dupPred = 0;
  for (const r of results) {
    const k = idKey(r.question_id);
    if (predicted.has(k)) dupPred++;
    predicted.set(k, r);
  }
  if (dupPred)
    warnings.push(
      `${names.predictions}: ${dupPred} prediction(s) repeat a question_id; as in the official code the last one is used`,
    );

  const missing: QuestionId[] = [];
  for (const [k, ann] of byId) if (!predicted.has(k)) missing.push(ann.question_id);
  const extra: QuestionId[] = [];
  for (const [k, r] of predicted) if (!byId.has(k)) extra.push(r.question_id);
  if (missing.length || extra.length) {
    const parts: string[] = [];
    if (missing.length)
      parts.push(`${missing.length} question_id(s) of ${names.annotations} have no prediction: ${listIds(missing)}`);
    if (extra.length)
      parts.push(`${extra.length} predicted question_id(s) are not in ${names.annotations}: ${listIds(extra)}`);
    const typeHint =
      missing.length && extra.length && typeof missing[0] !== typeof extra[0]
        ? ` (the annotations use ${typeof missing[0]} ids, the predictions ${typeof extra[0]} ids: 1 and "1" differ, as in the official code)`
        : '';
    throw new VqaInputError(
      `${names.predictions}: results do not match the annotations: ${parts.join('; ')}${typeHint}`,
    );
  }

  const questions = options.questions;
  if (questions) {
    const qIds = new Map<QuestionId, VqaQuestion>();
    for (const q of questions.questions) qIds.set(idKey(q.question_id), q);
    const notInQuestions = [...byId.values()].filter((a) => !qIds.has(idKey(a.question_id))).map((a) => a.question_id);
    if (notInQuestions.length)
      warnings.push(
        `${names.questions}: ${notInQuestions.length} annotated question_id(s) are not in the questions file: ${listIds(notInQuestions)}`,
      );
    if (questions.task_type === 'Multiple Choice') {
      // The official loadRes asserts each answer is one of the question's multiple_choices.
      for (const r of predicted.values()) {
        const q = qIds.get(idKey(r.question_id));
        if (!q || !Array.isArray(q.multiple_choices))
          throw new VqaInputError(
            `${names.questions}: question_id ${idText(r.question_id)} has no "multiple_choices" (task_type is "Multiple Choice")`,
          );
        if (!q.multiple_choices.includes(r.answer))
          throw new VqaInputError(
            `${names.predictions}: question_id ${idText(r.question_id)}: predicted answer ${JSON.stringify(r.answer)} is not one of the multiple choices`,
          );
      }
    }
  }

  // The official code mutates the annotation records' answers in place; keep that state per id.
  const state = new Map<QuestionId, { answers: string[]; entryKeys: string[] | undefined }>();
  const accAll: number[] = [];
  const byAnsType = new Map<string, number[]>();
  const byQuesType = new Map<string, number[]>();
  const perQuestion = new Map<QuestionId, number>();
  const d = pythonDialect(dialect);

  for (const first of anns) {
    const k = idKey(first.question_id);
    const ann = byId.get(k)!;
    let st = state.get(k);
    if (!st) {
      st = { answers: ann.answers.map((a) => a.answer), entryKeys: recordKeys(ann.answers) };
      state.set(k, st);
    }
    const prepared = prepareAnswers(st.answers, { dialect, entryKeys: st.entryKeys });
    st.answers = prepared.answers as string[];
    const prediction = preparePrediction(predicted.get(k)!.answer, prepared);
    const { accuracy: acc } = scorePrepared(prediction, prepared);
    accAll.push(acc);
    let list = byQuesType.get(ann.question_type);
    if (!list) byQuesType.set(ann.question_type, (list = []));
    list.push(acc);
    list = byAnsType.get(ann.answer_type);
    if (!list) byAnsType.set(ann.answer_type, (list = []));
    list.push(acc);
    perQuestion.set(ann.question_id, d.round(100 * acc, ndigits));
  }

  const mapAcc = (m: Map<string, number[]>) =>
    new Map([...m].map(([t, v]) => [t, accuracy(v, dialect, ndigits)] as const));
  return {
    dialect,
    ndigits,
    questions: accAll.length,
    overall: accuracy(accAll, dialect, ndigits),
    perAnswerType: mapAcc(byAnsType),
    perQuestionType: mapAcc(byQuesType),
    perQuestion,
    accuracies: accAll,
    warnings,
  };
}

export interface VqaEvalFiles {
  annotations: string;
  predictions: string;
  questions?: string;
}

/** Read, validate and evaluate the three official files. Errors name the file and question_id. */
export async function evaluateVqaFiles(files: VqaEvalFiles, options: VqaEvalOptions = {}): Promise<VqaEvalResult> {
  const names = {
    annotations: path.basename(files.annotations),
    predictions: path.basename(files.predictions),
    questions: files.questions ? path.basename(files.questions) : 'questions',
  };
  const [annData, resData, qData] = await Promise.all([
    readJsonFile(files.annotations),
    readJsonFile(files.predictions),
    files.questions ? readJsonFile(files.questions) : Promise.resolve(undefined),
  ]);
  const annotations = checkAnnotations(annData, names.annotations);
  const results = checkResults(resData, names.predictions);
  const questions = qData === undefined ? undefined : checkQuestions(qData, names.questions);
  return evaluateVqa(annotations, results, { ...options, names, questions });
}

/** The result as plain JSON: accuracies as the official code holds them (rounded floats). */
export function vqaEvalToJson(r: VqaEvalResult, { perQuestion = false } = {}): Record<string, unknown> {
  const obj = (m: Map<string, Accuracy>) => Object.fromEntries([...m].map(([k, a]) => [k, a.value]));
  const out: Record<string, unknown> = {
    dialect: r.dialect,
    questions: r.questions,
    overall: r.overall.value,
    perAnswerType: obj(r.perAnswerType),
    perQuestionType: obj(r.perQuestionType),
  };
  if (perQuestion) out.perQuestion = Object.fromEntries([...r.perQuestion].map(([k, v]) => [String(k), v]));
  if (r.warnings.length) out.warnings = r.warnings;
  return out;
}

/** The result as text, in the official demo's line format ("name : 12.34"). */
export function vqaEvalToText(r: VqaEvalResult): string {
  const lines = [
    `Overall Accuracy is: ${r.overall.text}`,
    '',
    'Per Answer Type Accuracy is the following:',
    ...[...r.perAnswerType].map(([t, a]) => `${t} : ${a.text}`),
    '',
    'Per Question Type Accuracy is the following:',
    ...[...r.perQuestionType].map(([t, a]) => `${t} : ${a.text}`),
    '',
  ];
  return lines.join('\n');
}
