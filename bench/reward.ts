/**
 * Rewards per second of the official VQA metric on 100k predictions, beside baselines measured in
 * the same run:
 * - exactMatch (a trivial string reward),
 * - a naive port of the official metric (every answer normalised again for every prediction, the
 *   leave-one-out done with filtered arrays, as the Python does),
 * - the reward runner's overhead (scoreGroups with vqaAccuracy),
 * - whole-file evaluation (evaluateVqa) of 100k questions, and — when VQALAB_OFFICIAL_VQA and
 *   VQALAB_PYTHON2 point at the official code and a Python 2.7 — the official evaluator on the first
 *   --official-questions of them (default 20000; it is slow).
 *
 * Each line gives the best wall time of --repeat runs and the CPU time of that run; ratios use CPU
 * time, which stays meaningful on a machine shared with other work.
 *
 *   npm run build && node dist/bench/reward.js [--predictions 100000] [--group 8] [--repeat 5]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { VqaSample } from '../src/data/types.js';
import { cleanWhitespace, normalizeAnswer } from '../src/eval/vqa-metric.js';
import { evaluateVqa, type VqaAnnotationsFile, type VqaResult } from '../src/eval/vqa-eval.js';
import { exactMatch, vqaAccuracy } from '../src/reward/basic.js';
import { scoreGroups } from '../src/reward/runner.js';
import type { BreakdownReward } from '../src/reward/types.js';

const { values: args } = parseArgs({
  options: {
    predictions: { type: 'string', default: '100000' },
    group: { type: 'string', default: '8' },
    repeat: { type: 'string', default: '5' },
    'official-questions': { type: 'string', default: '20000' },
  },
});
const N = Number(args.predictions),
  G = Number(args.group),
  REPEAT = Number(args.repeat),
  OFFICIAL_Q = Number(args['official-questions']);

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
const BASES = [
  'yes',
  'no',
  '2',
  'two',
  'red',
  'white',
  'frisbee',
  'tennis racket',
  'the man',
  'on the table',
  '1,000',
  '3.5',
  "don't know",
  'kitchen',
  'black and white',
  'giraffe',
];
const STYLES = [
  (b: string) => b,
  (b: string) => b[0]!.toUpperCase() + b.slice(1),
  (b: string) => `${b}.`,
  (b: string) => `The answer is ${b}.`,
  (b: string) => `<answer>${b}</answer>`,
  (b: string) => ` ${b}\n`,
];
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

interface Timing {
  label: string;
  items: number;
  seconds: number;
  cpuSeconds: number;
  check: number;
}

async function timeIt(label: string, fn: () => number | Promise<number>, items = total): Promise<Timing> {
  let best: Timing | undefined;
  for (let k = 0; k < REPEAT; k++) {
    const c0 = process.cpuUsage();
    const t = performance.now();
    const check = await fn();
    const seconds = (performance.now() - t) / 1000;
    const c = process.cpuUsage(c0);
    if (!best || seconds < best.seconds) best = { label, items, seconds, cpuSeconds: (c.user + c.system) / 1e6, check };
  }
  return best!;
}

function loop(reward: BreakdownReward): number {
  let s = 0;
  for (let i = 0; i < samples.length; i++) {
    const sample = samples[i]!,
      cs = completions[i]!;
    for (let j = 0; j < cs.length; j++) s += reward(sample, cs[j]!).score;
  }
  return s;
}

const exact = exactMatch();
const vqa = vqaAccuracy();
const results: Timing[] = [];
results.push(await timeIt('exactMatch reward (baseline)', () => loop(exact)));
results.push(
  await timeIt('naive port of the official metric (baseline)', () => {
    let s = 0;
    for (let i = 0; i < samples.length; i++)
      for (const c of completions[i]!)
        s += naiveVqaAccuracy(
          c.replace(/^[\s\S]*<answer>([\s\S]*?)<\/answer>[\s\S]*$/, '$1').trim(),
          samples[i]!.answers,
        );
    return s;
  }),
);
results.push(await timeIt('vqaAccuracy reward', () => loop(vqaAccuracy())));
results.push(await timeIt('vqaAccuracy reward, answers prepared (warm)', () => loop(vqa)));
results.push(
  await timeIt('scoreGroups([vqaAccuracy]) (runner)', async () => {
    const batch = await scoreGroups(
      samples.map((sample, i) => ({ sample, completions: completions[i]! })),
      [vqa],
    );
    return batch.groups.reduce((s, g) => s + g.totals.reduce<number>((a, b) => a + (b ?? 0), 0), 0);
  }),
);

// Whole-file evaluation: N questions, one prediction each.
const anns: VqaAnnotationsFile = {
  annotations: Array.from({ length: total }, (_, q) => ({
    question_id: q,
    image_id: q,
    question_type: pick(['what color is the', 'how many', 'is the', 'what']),
    answer_type: pick(['yes/no', 'number', 'other']),
    answers: samples[q % samples.length]!.answers.map((answer, j) => ({
      answer,
      answer_id: j + 1,
      answer_confidence: 'yes',
    })),
  })),
};
const res: VqaResult[] = anns.annotations.map((a, q) => ({
  question_id: a.question_id,
  answer: completions[q % samples.length]![Math.floor(q / samples.length) % G]!,
}));
results.push(await timeIt(`evaluateVqa on ${total} questions`, () => evaluateVqa(anns, res).overall.value));

const official = process.env.VQALAB_OFFICIAL_VQA && process.env.VQALAB_PYTHON2;
let officialLine = '';
if (official) {
  const { prepareOfficial } = await import('../test/eval/official.js');
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'vqalab-bench-'));
  try {
    const nq = Math.min(OFFICIAL_Q, total);
    const sub: VqaAnnotationsFile = { annotations: anns.annotations.slice(0, nq) };
    const subRes = res.slice(0, nq);
    const code = prepareOfficial(process.env.VQALAB_OFFICIAL_VQA!, false, tmp);
    const dir = path.join(tmp, 'case');
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, 'ann.json'),
      JSON.stringify({ annotations: sub.annotations.map((a) => ({ ...a, image_id: a.question_id })) }),
    );
    writeFileSync(
      path.join(dir, 'ques.json'),
      JSON.stringify({
        info: {},
        task_type: 'Open-Ended',
        data_type: 'mscoco',
        data_subtype: 'bench',
        license: {},
        questions: sub.annotations.map((a) => ({ question_id: a.question_id })),
      }),
    );
    writeFileSync(path.join(dir, 'res.json'), JSON.stringify(subRes));
    const t = performance.now();
    const out = JSON.parse(
      execFileSync(process.env.VQALAB_PYTHON2!, [path.join(code, 'harness.py'), code, dir], {
        encoding: 'utf8',
        maxBuffer: 1 << 30,
      }).trim(),
    ) as { overall: string; cpuSeconds: number };
    const seconds = (performance.now() - t) / 1000;
    results.push({
      label: `official vqaEval.py, Python 2.7, ${nq} questions`,
      items: nq,
      seconds,
      cpuSeconds: out.cpuSeconds,
      check: Number(out.overall),
    });
    const mine = await timeIt(
      `evaluateVqa on the same ${nq} questions`,
      () => evaluateVqa(sub, subRes).overall.value,
      nq,
    );
    results.push(mine);
    officialLine = `same ${nq} questions: official overall ${out.overall}, ours ${mine.check.toFixed(2)}`;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const base = results[0]!,
  naive = results[1]!;
const rate = (x: Timing) => x.items / x.cpuSeconds;
console.log(
  `reward bench: ${total} predictions (${samples.length} samples × ${G}), best of ${REPEAT}, node ${process.version}, ${os.cpus().length} CPUs, load ${os.loadavg()[0]!.toFixed(1)}`,
);
console.log(
  `${'what'.padEnd(58)} ${'wall ms'.padStart(9)} ${'CPU ms'.padStart(9)} ${'per CPU-s'.padStart(11)}  vs exactMatch  vs naive`,
);
for (const x of results) {
  console.log(
    `${x.label.padEnd(58)} ${(x.seconds * 1000).toFixed(0).padStart(9)} ${(x.cpuSeconds * 1000).toFixed(0).padStart(9)} ${Math.round(rate(x)).toLocaleString('en-US').padStart(11)}  ${(rate(x) / rate(base)).toFixed(3).padStart(11)}×  ${(rate(x) / rate(naive)).toFixed(2).padStart(7)}×`,
  );
}
if (officialLine) console.log(officialLine);
