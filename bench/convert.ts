/**
 * Benchmark: `vqalab data convert` on a generated VQAv2-shaped JSON of the full train size
 * (443,757 questions, 10 answers each, ~45 MB + ~330 MB), against a baseline measured in the same
 * run: plain JSON.parse of the same two files (what a non-streaming converter does first).
 * Each side runs in its own process, so peak RSS is its own.
 *
 *   npm run build && node dist/bench/convert.js [--questions N] [--dir DIR] [--keep]
 *
 * Goals on the 2-core dev machine: ≤ 60 s and ≤ 3 GB peak RSS for the conversion.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, closeSync, openSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cocoFileName, writeFakeVqa } from './convert-fixture.js';

const GOAL_SECONDS = 60;
const GOAL_RSS_MB = 3 * 1024;
const TRAIN_QUESTIONS = 443_757;

interface ChildResult {
  seconds: number;
  cpuSeconds: number;
  maxRssMb: number;
  detail: string;
}

async function child(mode: string, args: string[]): Promise<void> {
  const t0 = performance.now();
  let detail = '';
  if (mode === 'baseline') {
    const q = JSON.parse(readFileSync(args[0]!, 'utf8')) as { questions: unknown[] };
    const a = JSON.parse(readFileSync(args[1]!, 'utf8')) as { annotations: { answers: unknown[] }[] };
    let answers = 0;
    for (const x of a.annotations) answers += x.answers.length;
    detail = `${q.questions.length} questions, ${answers} answers parsed`;
  } else {
    const { convertVqav2 } = await import('../src/data/vqav2.js');
    const r = await convertVqav2({
      questions: args[0]!,
      annotations: args[1]!,
      imageDir: args[2]!,
      output: args[3]!,
      quiet: true,
    });
    detail = `${r.rows} rows, ${r.rowGroups} row groups, ${(r.bytes / 1e6).toFixed(1)} MB Parquet, ${r.missingImages} missing images`;
  }
  const seconds = (performance.now() - t0) / 1000;
  const ru = process.resourceUsage();
  const result: ChildResult = {
    seconds,
    cpuSeconds: (ru.userCPUTime + ru.systemCPUTime) / 1e6,
    maxRssMb: ru.maxRSS / 1024,
    detail,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

function runChild(mode: string, args: string[]): ChildResult {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [self, '--child', mode, ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`${mode} failed (exit ${r.status}):\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1]!, argv.slice(2));
  const opt = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const n = Number(opt('--questions') ?? TRAIN_QUESTIONS);
  const keep = argv.includes('--keep');
  const parent = opt('--dir') ?? (existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(path.join(parent, 'vqalab-bench-convert-'));
  try {
    const q = path.join(dir, 'v2_OpenEnded_mscoco_train2014_questions.json');
    const a = path.join(dir, 'v2_mscoco_train2014_annotations.json');
    const imgDir = path.join(dir, 'train2014');
    const out = path.join(dir, 'vqav2_train.parquet');
    let t = performance.now();
    const { images } = writeFakeVqa(q, a, { questions: n, subtype: 'train2014', seed: 42 });
    mkdirSync(imgDir);
    for (const id of images) closeSync(openSync(path.join(imgDir, cocoFileName('train2014', id)), 'w'));
    const qMb = statSync(q).size / 1e6,
      aMb = statSync(a).size / 1e6;
    console.log(
      `bench/convert: ${n.toLocaleString('en-US')} questions, ${(n * 10).toLocaleString('en-US')} answers, ${images.length.toLocaleString('en-US')} images; ` +
        `questions ${qMb.toFixed(1)} MB + annotations ${aMb.toFixed(1)} MB JSON in ${dir} (generated in ${((performance.now() - t) / 1000).toFixed(1)} s)`,
    );
    console.log(
      `machine: ${os.cpus().length} cores, load average ${os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}, node ${process.version}`,
    );
    t = performance.now();
    const base = runChild('baseline', [q, a]);
    const ours = runChild('convert', [q, a, imgDir, out]);
    const pad = (s: string, w: number) => s.padEnd(w);
    console.log('');
    console.log(`${pad('', 38)}${pad('wall s', 9)}${pad('CPU s', 9)}${pad('peak RSS', 11)}`);
    const line = (name: string, r: ChildResult) =>
      console.log(
        `${pad(name, 38)}${pad(r.seconds.toFixed(1), 9)}${pad(r.cpuSeconds.toFixed(1), 9)}${pad(`${r.maxRssMb.toFixed(0)} MB`, 11)}${r.detail}`,
      );
    line('baseline: JSON.parse of both files', base);
    line('vqalab data convert (streaming)', ours);
    console.log('');
    console.log(
      `convert / baseline: wall ${(ours.seconds / base.seconds).toFixed(2)}x, CPU ${(ours.cpuSeconds / base.cpuSeconds).toFixed(2)}x, peak RSS ${(ours.maxRssMb / base.maxRssMb).toFixed(2)}x`,
    );
    const ok = ours.seconds <= GOAL_SECONDS && ours.maxRssMb <= GOAL_RSS_MB;
    console.log(
      `goals: <= ${GOAL_SECONDS} s and <= ${GOAL_RSS_MB / 1024} GB peak RSS: ${ok ? 'met' : 'NOT met'} ` +
        `(${ours.seconds.toFixed(1)} s, ${(ours.maxRssMb / 1024).toFixed(2)} GB); load average after: ${os.loadavg()[0]!.toFixed(1)}`,
    );
  } finally {
    if (keep) console.log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
