/**
 * Our evaluator beside the official one on random and adversarial inputs. Needs a checkout of
 * GT-Vision-Lab/VQA and Python interpreters, so it runs only when told where they are:
 *
 *   VQALAB_OFFICIAL_VQA=/path/to/VQA VQALAB_PYTHON2=/path/to/python2.7 \
 *   VQALAB_PYTHON3=/path/to/python3.11 VQALAB_PYTHON312=/path/to/python3.12 \
 *   VQALAB_CROSSCHECK_CASES=2000 node --test dist/test/eval/official-crosscheck.test.js
 *
 * Every printed number (overall, per type), every per-question evalQA value and every unrounded
 * per-question accuracy must agree bit for bit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { evaluateVqa, VqaInputError, type VqaEvalResult } from '../../src/eval/vqa-eval.js';
import type { PythonDialect } from '../../src/eval/python.js';
import { officialSetup, runOfficial, type OfficialOutcome } from './official.js';
import { randomVqaCase, type VqaCase } from './vqa-fuzz.js';

const setup = officialSetup();
const cases = Number(process.env.VQALAB_CROSSCHECK_CASES ?? 300);
const seed0 = Number(process.env.VQALAB_CROSSCHECK_SEED ?? 1);

function ours(c: VqaCase, dialect: PythonDialect): VqaEvalResult | { error: string } {
  try {
    return evaluateVqa(c.annotations, c.results, { dialect, questions: c.questions });
  } catch (err) {
    if (err instanceof VqaInputError) return { error: err.message };
    throw err;
  }
}

/** The differences between the official outcome and ours, as readable lines (empty: identical). */
export function compare(official: OfficialOutcome, mine: VqaEvalResult | { error: string }): string[] {
  const diffs: string[] = [];
  if (official.error || 'error' in mine) {
    if (!(official.error && 'error' in mine))
      diffs.push(`official: ${official.error ?? 'ok'}; ours: ${'error' in mine ? mine.error : 'ok'}`);
    return diffs;
  }
  if (official.overall !== mine.overall.text)
    diffs.push(`overall: official ${official.overall}, ours ${mine.overall.text}`);
  for (const [name, off, ourMap] of [
    ['answer type', official.perAnswerType!, mine.perAnswerType],
    ['question type', official.perQuestionType!, mine.perQuestionType],
  ] as const) {
    const o = Object.fromEntries([...ourMap].map(([k, a]) => [k, a.text]));
    for (const k of new Set([...Object.keys(off), ...Object.keys(o)])) {
      if (off[k] !== o[k]) diffs.push(`${name} ${JSON.stringify(k)}: official ${off[k]}, ours ${o[k]}`);
    }
  }
  const evalQA = Object.fromEntries([...mine.perQuestion].map(([k, v]) => [String(k), v]));
  for (const k of new Set([...Object.keys(official.evalQA!), ...Object.keys(evalQA)])) {
    if (Number(official.evalQA![k]) !== evalQA[k])
      diffs.push(`evalQA[${k}]: official ${official.evalQA![k]}, ours ${evalQA[k]}`);
  }
  if (official.raw!.length !== mine.accuracies.length)
    diffs.push(`questions scored: official ${official.raw!.length}, ours ${mine.accuracies.length}`);
  official.raw!.forEach((r, i) => {
    if (Number(r) !== mine.accuracies[i]) diffs.push(`accuracy #${i}: official ${r}, ours ${mine.accuracies[i]}`);
  });
  return diffs;
}

for (const dialect of ['python2', 'python3', 'python3.12'] as const) {
  const python = setup?.pythons[dialect];
  test(`official evaluator (${dialect}) and ours agree on ${cases} random adversarial cases`, {
    skip: !python && 'set VQALAB_OFFICIAL_VQA and the interpreter variables to run',
  }, () => {
    const all: VqaCase[] = [];
    for (let i = 0; i < cases; i++)
      all.push(randomVqaCase(seed0 + i, i % 5 === 0 ? { binary: true, questions: 16 * (1 + (i % 13)) } : {}));
    const failures: string[] = [];
    const batch = 200;
    for (let start = 0; start < all.length; start += batch) {
      const chunk = all.slice(start, start + batch);
      const official = runOfficial(chunk, setup!.dir, python!, dialect !== 'python2');
      chunk.forEach((c, j) => {
        const d = compare(official[j]!, ours(c, dialect));
        if (d.length) failures.push(`seed ${seed0 + start + j}: ${d.slice(0, 5).join('; ')}`);
      });
    }
    assert.deepEqual(failures.slice(0, 20), [], `${failures.length} of ${cases} cases differ`);
  });
}
