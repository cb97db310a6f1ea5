/**
 * Our CPU engine against onnxruntime-node on the same model, threads and machine, in one run:
 * prefill tokens/s, decode tokens/s (1 row and 8 rows sharing a prompt, KV cache) and a greedy
 * evaluation of the synthetic set (official VQA metric, questions one at a time), for the tiny
 * model and a ~100 M-parameter random-weight Qwen2-VL (9 layers of hidden 1024, the tiny model's
 * tokenizer and vision tower). Each model is exported with `exportOnnx` (fp32) into a temp folder.
 *
 * Timings are the best of --reps (the machine is shared: the best run is the least disturbed);
 * the engine and onnxruntime alternate within each repetition.
 *
 *     npm run build && node dist/bench/onnx.js [--threads 2] [--questions 300] [--tokens 32] [--reps 3]
 *       [--models tiny,100m] [--image 224] [--out bench/results/onnx.md]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { synthSamples } from '../src/data/synth.js';
import type { VqaSample } from '../src/data/types.js';
import type { Prompt } from '../src/engine/types.js';
import { exportOnnx } from '../src/export/index.js';
import { DEFAULT_MODEL_DIR } from '../src/model/default.js';
import { randomMidsizeModel } from './random-model.js';
import { evaluatePolicies } from '../src/rollout/compare.js';
import { LocalPolicy } from '../src/rollout/local.js';
import { OnnxPolicy } from '../src/rollout/onnx.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    questions: { type: 'string', default: '300' },
    tokens: { type: 'string', default: '32' },
    reps: { type: 'string', default: '3' },
    models: { type: 'string', default: 'tiny,100m' },
    image: { type: 'string', default: '224' },
    out: { type: 'string' },
  },
});
const THREADS = Number(values.threads),
  QUESTIONS = Number(values.questions),
  TOKENS = Number(values.tokens),
  REPS = Number(values.reps);
const IMAGE = Number(values.image);

/** ~100 M parameters: the serve bench's medium model with 9 layers. */
const model100m = () => randomMidsizeModel('vqalab-bench-100m-v1', 9);

async function ms(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** CPU time of the whole process (every thread: the engine's pool, onnxruntime's intra-op threads), ms. */
async function cpuMs(fn: () => Promise<unknown>): Promise<number> {
  const c0 = process.cpuUsage();
  await fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

interface Row {
  model: string;
  params: number;
  metric: string;
  engine: number;
  onnx: number;
  unit: string;
}

const work = mkdtempSync(path.join(tmpdir(), 'vqalab-bench-onnx-'));
const rows: Row[] = [];
const notes: string[] = [];
try {
  // the synthetic questions (one per image), PNGs on disk
  mkdirSync(path.join(work, 'images'));
  const samples: VqaSample[] = [];
  for await (const { sample, png } of synthSamples({ images: QUESTIONS, questionsPerImage: 1, seed: 5 })) {
    const file = path.join(work, sample.imagePath);
    if (png) writeFileSync(file, png);
    samples.push({ ...sample, imagePath: file });
  }
  const bigImage = await sharp(readFileSync(samples[0]!.imagePath)).resize(IMAGE, IMAGE).png().toBuffer();

  for (const name of String(values.models).split(',')) {
    const dir = name === 'tiny' ? DEFAULT_MODEL_DIR : name === '100m' ? await model100m() : name;
    const out = path.join(work, `onnx-${path.basename(dir)}`);
    const ex = await exportOnnx({ model: dir, out, threads: THREADS });
    process.stderr.write(`${name}: exported in ${ex.seconds.toFixed(1)}s\n`);
    const local = await LocalPolicy.load(dir, { threads: THREADS, name: `local:${name}` });
    const onnx = await OnnxPolicy.load(out, { threads: THREADS, name: `onnx:${name}` });
    const params = local.model.numParameters.total;
    const prompt: Prompt = local.prompt(VlmTokenizer.vqaMessages('What color is the largest shape?', 1), [
      await local.image(bigImage),
    ]);
    const L = prompt.ids.length;
    // engine: prefill = until the first token arrives; decode = first to last token (streamed)
    const engineRun = async (n: number, maxTokens: number) => {
      const t0 = performance.now();
      let first = 0,
        last = 0;
      await local.model.sample({
        prompt,
        n,
        temperature: 0,
        maxTokens,
        stopTokenIds: [],
        seed: 0,
        onToken: () => {
          last = performance.now();
          if (!first) first = last;
        },
      });
      return { prefillMs: first - t0, decodeMs: last - first };
    };
    // onnxruntime: prefill = vision + embeddings + decoder over the prompt; decode = the steps after
    const onnxRun = async (n: number, maxTokens: number) =>
      onnx.model.generate(prompt, { n, maxTokens, temperature: 0, seed: 0, stop: new Set() });
    await engineRun(1, 2);
    await onnxRun(1, 2); // warm-up
    const best = { ep: Infinity, op: Infinity, e1: Infinity, o1: Infinity, e8: Infinity, o8: Infinity, ef: Infinity };
    // CPU time (all threads) of a 1-token run (prefill + first token) and of the 1-row and 8-row runs:
    // less moved by other work on a shared machine than wall time (neither backend spins idle threads)
    const cpu = { ep: Infinity, op: Infinity, e1: Infinity, o1: Infinity, e8: Infinity, o8: Infinity };
    for (let r = 0; r < REPS; r++) {
      cpu.ep = Math.min(cpu.ep, await cpuMs(() => engineRun(1, 1)));
      cpu.op = Math.min(cpu.op, await cpuMs(() => onnxRun(1, 1)));
      cpu.e1 = Math.min(cpu.e1, await cpuMs(() => engineRun(1, TOKENS)));
      cpu.o1 = Math.min(cpu.o1, await cpuMs(() => onnxRun(1, TOKENS)));
      cpu.e8 = Math.min(cpu.e8, await cpuMs(() => engineRun(8, TOKENS)));
      cpu.o8 = Math.min(cpu.o8, await cpuMs(() => onnxRun(8, TOKENS)));
      // the engine's forward over the same prompt (+1 token): prefill without a sampling run's set-up
      best.ef = Math.min(
        best.ef,
        await ms(() => local.model.forward([{ prompt, completions: [Int32Array.from([5])] }])),
      );
      const e = await engineRun(1, TOKENS),
        o = await onnxRun(1, TOKENS);
      best.ep = Math.min(best.ep, e.prefillMs);
      best.op = Math.min(best.op, o.prefillMs);
      best.e1 = Math.min(best.e1, e.decodeMs);
      best.o1 = Math.min(best.o1, o.decodeMs);
      const e8 = await engineRun(8, TOKENS),
        o8 = await onnxRun(8, TOKENS);
      best.e8 = Math.min(best.e8, e8.decodeMs);
      best.o8 = Math.min(best.o8, o8.decodeMs);
    }
    rows.push({
      model: name,
      params,
      metric: `prefill (${L}-token prompt, ${IMAGE}px image, vision included)`,
      engine: L / (best.ep / 1000),
      onnx: L / (best.op / 1000),
      unit: 'tokens/s',
    });
    rows.push({
      model: name,
      params,
      metric: 'prefill, engine forward() instead of a sampling run',
      engine: (L + 1) / (best.ef / 1000),
      onnx: L / (best.op / 1000),
      unit: 'tokens/s',
    });
    rows.push({
      model: name,
      params,
      metric: `decode, 1 row (${TOKENS - 1} steps after the first token)`,
      engine: (TOKENS - 1) / (best.e1 / 1000),
      onnx: (TOKENS - 1) / (best.o1 / 1000),
      unit: 'tokens/s',
    });
    rows.push({
      model: name,
      params,
      metric: `decode, 8 rows sharing the prompt (${TOKENS - 1} steps)`,
      engine: (8 * (TOKENS - 1)) / (best.e8 / 1000),
      onnx: (8 * (TOKENS - 1)) / (best.o8 / 1000),
      unit: 'tokens/s',
    });
    rows.push({
      model: name,
      params,
      metric: `prefill + first token, per CPU second (all threads)`,
      engine: L / (cpu.ep / 1000),
      onnx: L / (cpu.op / 1000),
      unit: 'tokens/CPU-s',
    });
    rows.push({
      model: name,
      params,
      metric: `decode, 1 row, per CPU second (${TOKENS}-token run less the 1-token run)`,
      engine: (TOKENS - 1) / ((cpu.e1 - cpu.ep) / 1000),
      onnx: (TOKENS - 1) / ((cpu.o1 - cpu.op) / 1000),
      unit: 'tokens/CPU-s',
    });
    rows.push({
      model: name,
      params,
      metric: `decode, 8 rows, per CPU second (the same difference)`,
      engine: (8 * (TOKENS - 1)) / ((cpu.e8 - cpu.ep) / 1000),
      onnx: (8 * (TOKENS - 1)) / ((cpu.o8 - cpu.op) / 1000),
      unit: 'tokens/CPU-s',
    });
    // greedy evaluation, one question at a time on each backend
    const cmp = await evaluatePolicies([local, onnx], samples, { maxTokens: 8, nRunners: 1 });
    const [le, oe] = cmp.policies;
    const same = le!.rows.filter((x, i) => x.prediction === oe!.rows[i]!.prediction).length;
    rows.push({
      model: name,
      params,
      metric: `greedy eval, ${samples.length} questions (max 8 tokens), wall`,
      engine: le!.seconds,
      onnx: oe!.seconds,
      unit: 's',
    });
    rows.push({
      model: name,
      params,
      metric: 'greedy eval accuracy (official VQA metric)',
      engine: le!.overall,
      onnx: oe!.overall,
      unit: '%',
    });
    notes.push(`${name}: ${same}/${samples.length} greedy answers identical between the engine and onnxruntime`);
    local.dispose();
    await onnx.dispose();
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const cmd = `node dist/bench/onnx.js ${process.argv.slice(2).join(' ')}`.trim();
const ortVersion = JSON.parse(
  readFileSync(new URL('../../node_modules/onnxruntime-node/package.json', import.meta.url), 'utf8'),
).version as string;
const lines = [
  `# Our CPU engine vs onnxruntime-node ${ortVersion} (CPU provider)`,
  '',
  `Command: \`${cmd}\``,
  '',
  `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}, ${THREADS} thread(s) for both (engine pool; onnxruntime intra-op, inter-op 1); ` +
    `load average after the run ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} (shared machine). Best of ${REPS} repetitions; higher tokens/s is better, lower seconds is better.`,
  '',
  '| model | parameters | measure | engine | onnxruntime | engine / onnxruntime |',
  '|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.model} | ${(r.params / 1e6).toFixed(2)} M | ${r.metric} | ${fmt(r.engine)} ${r.unit} | ${fmt(r.onnx)} ${r.unit} | ${r.unit === 's' ? (r.onnx / r.engine).toFixed(2) : r.unit === '%' ? '' : (r.engine / r.onnx).toFixed(2)}${r.unit === 's' ? ' (speed)' : ''} |`,
  ),
  '',
  ...notes.map((n) => `- ${n}`),
  '- The engine keeps its packed language-model weights between sampling runs (native/src/model.h `packed_`, dropped when the',
  '  weights change), as onnxruntime keeps its pre-packed initializers; the warm-up run packs them, so every timed run is steady state.',
  '- Rows "per CPU second" divide by the process\'s CPU time (user + system, every thread) instead of wall time: the same work',
  "  whatever else the shared machine runs, as long as neither side spins (neither does: the engine's pool waits on a condition",
  '  variable, onnxruntime runs with allow_spinning 0). Wall-time ratios also include how well each side keeps its threads busy.',
  '',
];
process.stdout.write(lines.join('\n'));
if (values.out) writeFileSync(values.out, lines.join('\n'));
