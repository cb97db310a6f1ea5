/**
 * Rewards per second of the official VQA metric on 100k predictions, beside baselines measured in
 * the same run:
 * - exactMatch (a trivial string reward),
 * - a naive port of the official metric (every answer normalised again for every prediction, the
 *   leave-one-out done with filtered arrays, as the Python does),
 * - the reward runner's overhead (scoreGroups with vqaAccuracy),
 * - whole-file evaluation (evaluateVqa) of 100k questions, and — when VQALAB_OFFICIAL_VQA and
 *   VQALAB_PYTHON2 point at the official code and a Python 2.7 — the official evaluator on the same files.
 *
 *   npm run build && node dist/bench/reward.js [--predictions 100000] [--group 8] [--repeat 5]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { VqaSample } from '../src/data/types.js';
import { cleanWhitespace, normalizeAnswer } from '../src/eval/vqa-metric.js';
import { evaluateVqa, type VqaAnnotationsFile, type VqaResult } from '../src/eval/vqa-eval.js';
import { exactMatch, vqaAccuracy } from '../src/reward/basic.js';
import { scoreGroups } from '../src/reward/runner.js';
import type { BreakdownReward } from '../src/reward/types.js';

const { values: args } = parseArgs({ options: { predictions: { type: 'string', default: '100000' }, group: { type: 'string', default: '8' }, repeat: { type: 'string', default: '5' } } });
const N = Number(args.predictions), G = Number(args.group), REPEAT = Number(args.repeat);

function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// VQAv2-like data: short answers, mostly agreeing annotators, predictions in model-ish styles.
const r = rng(2026);
const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
const BASES = ['yes', 'no', '2', 'two', 'red', 'white', 'frisbee', 'tennis racket', 'the man', 'on the table', '1,000', '3.5', "don't know", 'kitchen', 'black and white', 'giraffe'];
const STYLES = [(b: string) => b, (b: string) => b[0]!.toUpperCase() + b.slice(1), (b: string) => `${b}.`, (b: string) => `The answer is ${b}.`, (b: string) => `<answer>${b}</answer>`, (b: string) => ` ${b}\n`];
const samples: VqaSample[] = [];
const completions: string[][] = [];
for (let i = 0; i < Math.ceil(N / G); i++) {
  const base = pick(BASES);
  const answers = Array.from({ length: 10 }, () => (r() < 0.7 ? base : pick(BASES)));
  samples.push({ id: String(i), imagePath: '', question: 'q?', answer: base, answers });
  completions.push(Array.from({ length: G }, () => pick(STYLES)(r() < 0.6 ? base : pick(BASES))));
}
const total = samples.length * G;

/** The official metric ported naively: no caching, arrays filtered per left-out answer. */
function naiveVqaAccuracy(prediction: string, rawAnswers: readonly string[]): number {
  let answers = rawAnswers.map((a) => cleanWhitespace(a));
  let pred = cleanWhitespace(prediction);
  if (new Set(answers).size > 1) {
    answers = answers.map((a) => normalizeAnswer(a));
    pred = normalizeAnswer(pred);
  }
  const records = answers.map((answer, id) => ({ answer, id }));
  const accs = records.map((gt) => {
    const others = records.filter((x) => x.id !== gt.id);
    return Math.min(1, others.filter((x) => x.answer === pred).length / 3);
  });
  return accs.reduce((s, x) => s + x, 0) / accs.length;
}

function timeIt(label: string, fn: () => number | Promise<number>): Promise<{ label: string; seconds: number; check: number }> {
  return (async () => {
    let best = Infinity, check = 0;
    for (let k = 0; k < REPEAT; k++) {
      const t = performance.now();
      check = await fn();
      best = Math.min(best, (performance.now() - t) / 1000);
    }
    return { label, seconds: best, check };
  })();
}

function loop(reward: BreakdownReward): number {
  let s = 0;
  for (let i = 0; i < samples.length; i++) {
    const sample = samples[i]!, cs = completions[i]!;
    for (let j = 0; j < cs.length; j++) s += reward(sample, cs[j]!).score;
  }
  return s;
}

const exact = exactMatch();
const vqa = vqaAccuracy();
const results = [];
results.push(await timeIt('exactMatch reward (baseline)', () => loop(exact)));
results.push(await timeIt('naive port of the official metric (baseline)', () => {
  let s = 0;
  for (let i = 0; i < samples.length; i++) for (const c of completions[i]!) s += naiveVqaAccuracy(c.replace(/^[\s\S]*<answer>([\s\S]*?)<\/answer>[\s\S]*$/, '$1').trim(), samples[i]!.answers);
  return s;
}));
results.push(await timeIt('vqaAccuracy reward', () => loop(vqaAccuracy())));
results.push(await timeIt('vqaAccuracy reward, answers prepared (warm)', () => loop(vqa)));
results.push(await timeIt('scoreGroups([vqaAccuracy]) (runner)', async () => {
  const batch = await scoreGroups(samples.map((sample, i) => ({ sample, completions: completions[i]! })), [vqa]);
  return batch.groups.reduce((s, g) => s + g.totals.reduce<number>((a, b) => a + (b ?? 0), 0), 0);
}));

// Whole-file evaluation: N questions, one prediction each.
const anns: VqaAnnotationsFile = {
  annotations: Array.from({ length: total }, (_, q) => ({
    question_id: q, image_id: q, question_type: pick(['what color is the', 'how many', 'is the', 'what']), answer_type: pick(['yes/no', 'number', 'other']),
    answers: samples[q % samples.length]!.answers.map((answer, j) => ({ answer, answer_id: j + 1, answer_confidence: 'yes' })),
  })),
};
const res: VqaResult[] = anns.annotations.map((a, q) => ({ question_id: a.question_id, answer: completions[q % samples.length]![Math.floor(q / samples.length) % G]! }));
let ours = 0;
results.push(await timeIt(`evaluateVqa on ${total} questions`, () => { const e = evaluateVqa(anns, res); ours = e.overall.value; return e.overall.value; }));

const official = process.env.VQALAB_OFFICIAL_VQA && process.env.VQALAB_PYTHON2;
let officialLine = '';
if (official) {
  const { prepareOfficial } = await import('../test/eval/official.js');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vqalab-bench-'));
  try {
    const code = prepareOfficial(process.env.VQALAB_OFFICIAL_VQA!, false, tmp);
    const dir = path.join(tmp, 'case');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'ann.json'), JSON.stringify(anns));
    writeFileSync(path.join(dir, 'ques.json'), JSON.stringify({ info: {}, task_type: 'Open-Ended', data_type: 'mscoco', data_subtype: 'bench', license: {}, questions: anns.annotations.map((a) => ({ question_id: a.question_id })) }));
    writeFileSync(path.join(dir, 'res.json'), JSON.stringify(res));
    const t = performance.now();
    const out = JSON.parse(execFileSync(process.env.VQALAB_PYTHON2!, [path.join(code, 'harness.py'), code, dir], { encoding: 'utf8', maxBuffer: 1 << 30 }).trim()) as { overall: string };
    const seconds = (performance.now() - t) / 1000;
    results.push({ label: `official vqaEval.py (Python 2.7) on ${total} questions, incl. loading`, seconds, check: Number(out.overall) });
    officialLine = `official overall ${out.overall} vs ours ${ours.toFixed(2)}`;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const base = results[0]!.seconds, naive = results[1]!.seconds;
console.log(`reward bench: ${total} predictions (${samples.length} samples × ${G}), best of ${REPEAT}, node ${process.version}`);
for (const x of results) {
  const perSec = total / x.seconds;
  console.log(`${x.label.padEnd(62)} ${(x.seconds * 1000).toFixed(1).padStart(9)} ms  ${Math.round(perSec).toLocaleString('en-US').padStart(12)} /s  ${(x.seconds / base).toFixed(2).padStart(6)}× exactMatch time  ${(naive / x.seconds).toFixed(2).padStart(6)}× faster than naive`);
}
if (officialLine) console.log(officialLine);
