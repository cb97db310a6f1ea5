/**
 * Export + parity at Qwen2-VL-2B dimensions on the CPU: a random-weight folder with the 2B model's
 * shapes (hidden 1536, 28 layers, 12/2 heads, intermediate 8960, vocabulary 151936, tied embeddings;
 * vision tower 32 blocks of 1280, 2.2 G parameters; the tiny model's tokenizer, whose ids all fit),
 * exported to ONNX fp32 (its decoder and vision encoder keep their weights in external data files,
 * over 2 GB each), then every position's logits of three prompts (text only, one image, two images of
 * different grids, each with 5 continuation tokens) from our engine's forward() and from
 * onnxruntime-node on the exported files. The two run one after the other (the engine is disposed
 * first), so that a 24 GiB machine holds one fp32 copy at a time.
 *
 *     npm run build && node dist/bench/onnx-2b.js [--work DIR] [--threads 2] [--keep] [--out bench/results/onnx-2b.md]
 *
 * The random folder is written tensor by tensor (BF16 on disk: 4.4 GB; the engine reads it as fp32)
 * and reused from --work when present; the export is reused too unless missing. --keep leaves both.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
  copyFileSync,
  readdirSync,
} from 'node:fs';
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { loadModel } from '../src/engine/model.js';
import type { Prompt } from '../src/engine/types.js';
import { exportOnnx } from '../src/export/index.js';
import { Rng } from '../src/util/rng.js';
import { DEFAULT_MODEL_DIR } from '../src/model/default.js';
import { MODEL_PRESETS } from '../src/model/presets.js';
import { numelOf, qwen2vlConfigJson, qwen2vlTensorSpecs, type Qwen2VLDims } from '../src/model/qwen2vl.js';
import { OnnxModel } from '../src/rollout/onnx.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../src/vision/qwen2vl.js';
import { processorOptionsFrom } from '../src/vision/processor-config.js';

const { values } = parseArgs({
  options: {
    work: { type: 'string', default: path.join(tmpdir(), 'vqalab-onnx-2b') },
    threads: { type: 'string', default: '2' },
    keep: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const THREADS = Number(values.threads);
const work = values.work!;
const modelDir = path.join(work, 'model'),
  onnxDir = path.join(work, 'onnx');
const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
/** Largest resident set size of this process since the last resetPeak() (VmHWM), bytes. */
const peakRss = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;
/** Resets VmHWM to the current size (Linux: "5" to /proc/self/clear_refs), so each phase reports its own peak. */
const resetPeak = () => {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    /* not Linux: peaks accumulate */
  }
};

const tiny = JSON.parse(readFileSync(path.join(DEFAULT_MODEL_DIR, 'config.json'), 'utf8')) as Record<string, number>;
// Qwen2-VL-2B's dims, as `vqalab model init --preset qwen2-vl-2b` writes them.
const dims: Qwen2VLDims = MODEL_PRESETS['qwen2-vl-2b']!.dims;

/** The random folder, one tensor in memory at a time: safetensors header first, then each tensor as BF16. */
function writeRandomFolder(): void {
  if (existsSync(path.join(modelDir, 'model.safetensors'))) return;
  mkdirSync(modelDir, { recursive: true });
  const specs = qwen2vlTensorSpecs(dims);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const s of specs) {
    const bytes = numelOf(s.shape) * 2;
    header[s.name] = { dtype: 'BF16', shape: s.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const tmp = path.join(modelDir, 'model.safetensors.tmp');
  const fd = openSync(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json, 'latin1'));
    // xorshift32 uniforms of standard deviation 0.02 (the init's N(0, 0.02²) drawn with Box–Muller costs 100× more here)
    let x = 7 >>> 0;
    const a = (dims.initializerRange * Math.sqrt(3)) / 2 ** 31;
    let done = 0;
    for (const s of specs) {
      const n = numelOf(s.shape);
      const f = new Float32Array(n);
      if (s.init === 'ones') f.fill(1);
      else if (s.init === 'normal') {
        for (let i = 0; i < n; i++) {
          x ^= x << 13;
          x >>>= 0;
          x ^= x >>> 17;
          x ^= x << 5;
          x >>>= 0;
          f[i] = (x - 2 ** 31) * a;
        }
      }
      const u = new Uint32Array(f.buffer);
      const bf = new Uint16Array(n);
      for (let i = 0; i < n; i++) bf[i] = u[i]! >>> 16; // truncation: the engine reads back exactly these values
      for (let at = 0; at < bf.byteLength; at += 1 << 30)
        writeSync(fd, new Uint8Array(bf.buffer, at, Math.min(1 << 30, bf.byteLength - at)));
      done += n;
      if (n > 50e6) log(`  ${s.name} ${s.shape.join('x')} (${(done / 1e9).toFixed(2)} G written)`);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const config = qwen2vlConfigJson(dims, {
    bos: tiny.bos_token_id!,
    eos: tiny.eos_token_id!,
    pad: tiny.pad_token_id!,
    visionStart: tiny.vision_start_token_id!,
    visionEnd: tiny.vision_end_token_id!,
    visionPad: tiny.vision_token_id!,
    imagePad: tiny.image_token_id!,
    videoPad: tiny.video_token_id!,
  });
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'preprocessor_config.json'])
    copyFileSync(path.join(DEFAULT_MODEL_DIR, f), path.join(modelDir, f));
  writeFileSync(path.join(modelDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  renameSync(tmp, path.join(modelDir, 'model.safetensors')); // last: its presence marks a complete folder
}

function maxDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let diff = 0,
    scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return { diff, scale };
}

const t0 = performance.now();
const secs = (t: number) => ((performance.now() - t) / 1000).toFixed(0);
let t = performance.now();
log(`random 2B-dims folder in ${modelDir}`);
writeRandomFolder();
const sourceBytes = statSync(path.join(modelDir, 'model.safetensors')).size;
const writeS = secs(t);
log(`  ${gib(sourceBytes)} (${writeS}s)`);

t = performance.now();
let exportS = 'reused';
resetPeak();
if (!existsSync(path.join(onnxDir, 'config.json'))) {
  log('export (fp32)');
  const ex = await exportOnnx({ model: modelDir, out: onnxDir, threads: THREADS, log: (l) => log(`  ${l}`) });
  exportS = ex.seconds.toFixed(0);
}
const files = readdirSync(path.join(onnxDir, 'onnx')).map((f) => ({
  name: `onnx/${f}`,
  bytes: statSync(path.join(onnxDir, 'onnx', f)).size,
}));
log(`  ${files.map((f) => `${f.name} ${gib(f.bytes)}`).join(', ')}`);
const rssAfterExport = peakRss();

// the prompts: text only, one image (grid 6x8), two images (6x8 and 10x12); 5 continuation tokens each
const tok = VlmTokenizer.load(modelDir);
const proc = new Qwen2VLImageProcessor(processorOptionsFrom(modelDir));
const img = async (w: number, h: number, seed: number) => {
  const raw = Buffer.alloc(w * h * 3);
  const r = new Rng(seed);
  for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(r.uniform() * 256);
  const p = await proc.process(
    await sharp(raw, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toBuffer(),
  );
  return { pixels: p.pixels, gridThw: p.gridThw };
};
const one = await img(112, 84, 1),
  two = await img(168, 140, 2);
const prompts: { name: string; prompt: Prompt }[] = [
  {
    name: 'text only',
    prompt: tok.buildPrompt(VlmTokenizer.vqaMessages('What is shown here?', 0), [], { mergeSize: 2 }),
  },
  {
    name: '1 image',
    prompt: tok.buildPrompt(VlmTokenizer.vqaMessages('What color is the largest shape?', 1), [one], { mergeSize: 2 }),
  },
  {
    name: '2 images',
    prompt: tok.buildPrompt(VlmTokenizer.vqaMessages('Which image has more shapes?', 2), [one, two], { mergeSize: 2 }),
  },
];
const cont = Int32Array.from([5, 17, 42, 99, 300]);

t = performance.now();
log('engine: load + forward(returnLogits)');
resetPeak();
const engine = await loadModel(modelDir, { threads: THREADS });
const loadEngineS = secs(t);
const params = engine.numParameters.total;
const engineLogits: Float32Array[] = [];
const engineMs: number[] = [];
for (const p of prompts) {
  const tf = performance.now();
  const [r] = await engine.forward([{ prompt: p.prompt, completions: [cont], returnLogits: true }]);
  engineMs.push(performance.now() - tf);
  engineLogits.push(r!.logits![0]!);
  log(`  ${p.name}: ${p.prompt.ids.length} + ${cont.length} tokens, ${(engineMs.at(-1)! / 1000).toFixed(1)}s`);
}
engine.dispose();
const rssEngine = peakRss();

t = performance.now();
log('onnxruntime: load + one pass per prompt');
resetPeak();
// one copy of the weights: no pre-packed duplicates, no arena
const ort = await OnnxModel.load(onnxDir, {
  threads: THREADS,
  sessionOptions: { enableCpuMemArena: false, extra: { session: { disable_prepacking: '1' } } },
});
const loadOrtS = secs(t);
const rows: string[] = [];
const V = dims.vocabSize;
for (let k = 0; k < prompts.length; k++) {
  const p = prompts[k]!;
  const tf = performance.now();
  const logits = await ort.logits(p.prompt, cont);
  const ms = performance.now() - tf;
  const { diff, scale } = maxDiff(engineLogits[k]!, logits);
  // log-probs of the continuation under each
  const Lp = p.prompt.ids.length;
  let lpDiff = 0;
  for (let i = 0; i < cont.length; i++) {
    const lp = (x: Float32Array) => {
      const row = x.subarray((Lp - 1 + i) * V, (Lp + i) * V);
      let mx = -Infinity;
      for (const v of row) mx = Math.max(mx, v);
      let s = 0;
      for (const v of row) s += Math.exp(v - mx);
      return row[cont[i]!]! - mx - Math.log(s);
    };
    lpDiff = Math.max(lpDiff, Math.abs(lp(engineLogits[k]!) - lp(logits)));
  }
  log(
    `  ${p.name}: max |diff| ${diff.toExponential(2)} of scale ${scale.toFixed(3)} (${(diff / scale).toExponential(2)}), log-prob diff ${lpDiff.toExponential(2)}, ${(ms / 1000).toFixed(1)}s`,
  );
  rows.push(
    `| ${p.name} | ${Lp} + ${cont.length} | ${diff.toExponential(2)} | ${scale.toFixed(3)} | ${(diff / scale).toExponential(2)} | ${lpDiff.toExponential(2)} | ${diff / scale <= 1e-4 ? 'yes' : 'NO'} | ${(engineMs[k]! / 1000).toFixed(1)} s | ${(ms / 1000).toFixed(1)} s |`,
  );
}
await ort.dispose();
const rssOrt = peakRss();
if (!values.keep) rmSync(work, { recursive: true, force: true });

const ortVersion = JSON.parse(
  readFileSync(new URL('../../node_modules/onnxruntime-node/package.json', import.meta.url), 'utf8'),
).version as string;
const lines = [
  `# Export + parity at Qwen2-VL-2B dimensions (CPU): our engine vs onnxruntime-node ${ortVersion}`,
  '',
  `Command: \`node dist/bench/onnx-2b.js ${process.argv.slice(2).join(' ')}\``.replace(/ `$/, '`'),
  '',
  `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${gib(totalmem())} memory (${gib(freemem())} free at the end), Node ${process.version}, ` +
    `${THREADS} threads; load average at the end ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} (shared machine).`,
  '',
  `Model: random weights (xorshift32 uniforms of standard deviation 0.02, stored as BF16) with Qwen2-VL-2B's shapes: hidden 1536, 28 layers, 12 heads / 2 kv heads,`,
  `intermediate 8960, vocabulary 151936 (tied), vision 32 blocks of 1280; ${(params / 1e9).toFixed(3)} G parameters (${gib(sourceBytes)} of safetensors).`,
  `Export fp32: ${files.map((f) => `${f.name} ${gib(f.bytes)}`).join(', ')}.`,
  `Time: random folder ${writeS === '0' ? 'reused' : `${writeS} s`}, export ${exportS === 'reused' ? 'reused' : `${exportS} s`}, engine load ${loadEngineS} s, onnxruntime load ${loadOrtS} s; all ${secs(t0)} s.`,
  `Peak resident memory of the process, per phase: export ${gib(rssAfterExport)}, engine load + forwards ${gib(rssEngine)}, onnxruntime load + passes ${gib(rssOrt)} ` +
    '(the engine is disposed before onnxruntime loads; onnxruntime runs without pre-packing or its memory arena, so it holds the weights once).',
  '',
  "Every position's logits (prompt + continuation, vocabulary 151936) of the engine's `forward(returnLogits)` against onnxruntime on the",
  'exported files (vision encoder → embeddings → decoder without cache); tolerance 1e-4 of max |logit| (fp32):',
  '',
  '| prompt | tokens | max \\|diff\\| | max \\|logit\\| | diff / scale | continuation log-prob diff | ≤ 1e-4 | engine forward | onnxruntime pass |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows,
  '',
];
process.stdout.write(lines.join('\n'));
if (values.out) writeFileSync(values.out, lines.join('\n'));
