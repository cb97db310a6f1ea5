/**
 * Export + parity for Qwen2.5-VL and Qwen3-VL folders made by `vqalab model init` from the released
 * presets (qwen2.5-vl-3b, qwen3-vl-2b) with the language model and vision tower narrowed so that a
 * 2-core machine runs it in a minute or two, but keeping what the tiny test models do not have: the
 * published config forms (flat Qwen2.5-VL, nested Qwen3-VL with transformers 5's tensor names), the
 * real tokenizer and its ids, head_dim 128 with the released mrope_section, Qwen2.5-VL's 112-pixel
 * windows and Qwen3-VL's 48 × 48 position grid, a vocabulary of 151,936 and the processor's own image
 * sizes. For each: every position's logits of a text-only prompt, one image and two images (+ 5
 * continuation tokens) from the engine's forward() and from onnxruntime-node on the export.
 *
 *     npm run build && node dist/bench/onnx-families.js [--threads 2]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { exportOnnx } from '../src/export/index.js';
import { initModelFolder } from '../src/model/init-folder.js';
import { LocalPolicy } from '../src/rollout/local.js';
import { OnnxModel } from '../src/rollout/onnx.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';

const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' } } });
const threads = Number(values.threads);
const log = (s: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);

async function png(width: number, height: number, rgb: [number, number, number]): Promise<Buffer> {
  const svg =
    `<svg width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg"><rect width="${width}" height="${height}" fill="white"/>` +
    `<circle cx="${width / 2}" cy="${height / 2}" r="${Math.min(width, height) / 3}" fill="rgb(${rgb.join(',')})"/></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

const PRESETS = {
  'qwen2.5-vl-3b': {
    hidden: 256,
    heads: 2,
    kvHeads: 1,
    layers: 3,
    intermediate: 512,
    visionDim: 256,
    visionHeads: 4,
    visionDepth: 8,
  },
  'qwen3-vl-2b': {
    hidden: 256,
    heads: 2,
    kvHeads: 1,
    headDim: 128,
    layers: 4,
    intermediate: 512,
    visionDim: 256,
    visionHeads: 4,
    visionDepth: 6,
  },
} as const;

const work = mkdtempSync(path.join(tmpdir(), 'vqalab-onnx-families-'));
const rows: string[] = [];
try {
  for (const [preset, overrides] of Object.entries(PRESETS)) {
    const dir = path.join(work, preset);
    const init = await initModelFolder(dir, { preset, overrides, seed: 1, dtype: 'F32', threads });
    log(`${preset}: ${(init.parameters / 1e6).toFixed(1)} M parameters`);
    const out = path.join(work, `${preset}-onnx`);
    const t0 = performance.now();
    await exportOnnx({ model: dir, out, threads });
    log(`${preset}: exported in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // prompts as LocalPolicy builds them (the family's processor and chat template)
    const policy = await LocalPolicy.load(dir, { threads });
    const images = [
      await policy.image(await png(448, 336, [200, 30, 30])),
      await policy.image(await png(252, 504, [30, 30, 200])),
    ];
    const prompts = [0, 1, 2].map((k) =>
      policy.prompt(VlmTokenizer.vqaMessages('what color is the circle?', k), images.slice(0, k)),
    );
    const continuation = Int32Array.from([5, 17, 99, 3, 250]);
    const refs: Float32Array[] = [];
    for (const p of prompts)
      refs.push(
        (await policy.model.forward([{ prompt: p, completions: [continuation], returnLogits: true }]))[0]!.logits![0]!,
      );
    policy.dispose();
    const om = await OnnxModel.load(out, { threads });
    const cells: string[] = [];
    for (const [k, p] of prompts.entries()) {
      const got = await om.logits(p, continuation);
      let diff = 0,
        scale = 0;
      for (let i = 0; i < got.length; i++) {
        diff = Math.max(diff, Math.abs(got[i]! - refs[k]![i]!));
        scale = Math.max(scale, Math.abs(refs[k]![i]!));
      }
      cells.push(`${(diff / scale).toExponential(1)} (${p.ids.length} tokens)`);
      log(`${preset} ${k} image(s): max |Δlogit| ${diff.toExponential(2)} of scale ${scale.toFixed(3)}`);
    }
    await om.dispose();
    rows.push(`| ${preset} | ${(init.parameters / 1e6).toFixed(1)} M | ${cells.join(' | ')} |`);
  }
  console.log('| preset (narrowed) | parameters | text only | one image | two images |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) console.log(r);
} finally {
  rmSync(work, { recursive: true, force: true });
}
