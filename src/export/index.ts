/**
 * `exportOnnx`: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint (optionally with a PEFT LoRA adapter, merged) as an ONNX folder
 * in the transformers.js layout:
 *
 *   OUT/config.json                 the model's config.json (+ "transformers.js_config")
 *   OUT/generation_config.json, preprocessor_config.json, tokenizer.json, tokenizer_config.json, ...
 *   OUT/onnx/vision_encoder{S}.onnx, embed_tokens{S}.onnx, decoder_model_merged{S}.onnx
 *
 * where {S} is transformers.js's dtype suffix ('' fp32, '_fp16', '_int8'). A graph whose weights
 * exceed `externalDataThreshold` bytes (default 1.8 GB; protobuf caps a file at 2 GB) keeps them in
 * `onnx/<name>{S}.onnx_data` (ONNX external data). The weights come from the engine (loadModel with
 * the adapter), so a folder the engine cannot load is refused with the engine's error. Everything is
 * written into a temporary sibling folder that is renamed onto OUT only when complete.
 */
import {
  closeSync,
  existsSync,
  openSync,
  promises as fsp,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { parseConfig, type EngineConfig } from '../engine/config.js';
import { loadModel } from '../engine/model.js';
import type { NativeModel } from '../engine/native.js';
import type { EngineModel } from '../engine/types.js';
import { resolveModelFolder } from '../engine/folder.js';
import { preprocessorConfig } from '../model/default.js';
import { tempPathFor } from '../util/fs.js';
import type { ExternalSink, Graph } from './graph.js';
import { writeWebDemo } from './web.js';
import type { ExportDtype, WeightSource } from './builder.js';
import { buildDecoder, buildEmbedTokens } from './decoder.js';
import { buildVisionEncoder } from './vision.js';

export type { ExportDtype } from './builder.js';

export const EXPORT_DTYPES: readonly ExportDtype[] = ['fp32', 'fp16', 'int8'];
/** transformers.js's file suffix per dtype (DEFAULT_DTYPE_SUFFIX_MAPPING). */
export const DTYPE_SUFFIX: Record<ExportDtype, string> = { fp32: '', fp16: '_fp16', int8: '_int8' };
/** Architectures `exportOnnx` writes (config.json model_type). */
export const EXPORT_MODEL_TYPES = ['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl'] as const;

const AUX_FILES = [
  'generation_config.json',
  'preprocessor_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'merges.txt',
  'chat_template.json',
  'chat_template.jinja',
  'added_tokens.json',
];

export interface ExportOptions {
  /** Hugging Face model folder (config.json + safetensors). */
  model: string;
  /** PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), merged into the weights. */
  adapter?: string;
  /** Output folder; must not exist unless `overwrite`. */
  out: string;
  dtype?: ExportDtype;
  overwrite?: boolean;
  /** Graphs with more weight bytes than this keep them in external data (default 1.8e9). */
  externalDataThreshold?: number;
  threads?: number;
  /** Progress lines (default none). */
  log?: (line: string) => void;
  /** Also write a one-page browser demo (OUT/index.html + OUT/web/, src/export/web.ts). */
  web?: boolean;
}

export interface ExportResult {
  out: string;
  dtype: ExportDtype;
  files: { name: string; bytes: number }[];
  externalData: boolean;
  adapterMerged: boolean;
  seconds: number;
}

function readJson(file: string, what: string): Record<string, any> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(
      `${file}: cannot read the ${what} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Record<string, any>;
  } catch (err) {
    throw new Error(`${file}: invalid ${what} (${(err as Error).message})`);
  }
}

/** The model's config, refusing architectures the exporter does not write. */
export function exportableConfig(modelDir: string): { raw: Record<string, any>; cfg: EngineConfig } {
  const file = path.join(modelDir, 'config.json');
  if (!existsSync(modelDir)) throw new Error(`${modelDir}: no such folder`);
  if (!existsSync(file)) throw new Error(`${modelDir}: not a model folder (no config.json)`);
  const raw = readJson(file, 'model config');
  if (!(EXPORT_MODEL_TYPES as readonly string[]).includes(raw.model_type)) {
    throw new Error(
      `${file}: ONNX export does not support model_type ${JSON.stringify(raw.model_type)} yet; supported: ${EXPORT_MODEL_TYPES.map((t) => JSON.stringify(t)).join(', ')}`,
    );
  }
  return { raw, cfg: parseConfig(raw, file) };
}

/** Checks an adapter folder against the base; returns its LoRA settings. */
export function checkAdapter(adapterDir: string, modelDir: string, baseCfg: EngineConfig) {
  const file = path.join(adapterDir, 'adapter_config.json');
  if (!existsSync(file)) throw new Error(`${adapterDir}: not a PEFT adapter folder (no adapter_config.json)`);
  const a = readJson(file, 'adapter config');
  if (a.peft_type !== undefined && a.peft_type !== 'LORA')
    throw new Error(`${file}: peft_type ${JSON.stringify(a.peft_type)} is not supported; expected "LORA"`);
  const targets = a.vqalab?.targetModules ?? a.target_modules;
  if (!Array.isArray(targets) || typeof a.r !== 'number' || typeof a.lora_alpha !== 'number') {
    throw new Error(`${file}: expected r, lora_alpha and target_modules (a list) of a PEFT LoRA adapter`);
  }
  if (a.use_dora === true) throw new Error(`${file}: DoRA adapters (use_dora: true) are not supported`);
  if (!existsSync(path.join(adapterDir, 'adapter_model.safetensors')))
    throw new Error(`${adapterDir}: no adapter_model.safetensors`);
  // The base it was trained on, when that folder is here: its config must be this model's.
  const base = a.base_model_name_or_path;
  if (
    typeof base === 'string' &&
    existsSync(path.join(base, 'config.json')) &&
    realpathSync(base) !== realpathSync(modelDir)
  ) {
    let baseOf: EngineConfig | undefined;
    try {
      baseOf = parseConfig(readJson(path.join(base, 'config.json'), 'model config'), path.join(base, 'config.json'));
    } catch {
      baseOf = undefined;
    }
    const strip = (c: EngineConfig) => JSON.stringify({ ...c, form: undefined });
    if (!baseOf || strip(baseOf) !== strip(baseCfg)) {
      throw new Error(
        `${file}: this adapter was trained on ${base}, whose config differs from ${modelDir}'s; export it with --model ${base}`,
      );
    }
  }
  return {
    rank: a.r as number,
    alpha: a.lora_alpha as number,
    targetModules: targets as string[],
    vision: Boolean(a.vqalab?.vision),
  };
}

/** Weights of a loaded engine model by published name, LoRA adapters merged (W + α/r · B·A). */
export function engineWeights(model: EngineModel, lora?: { rank: number; alpha: number }): WeightSource {
  const nm = (model as unknown as { _native: NativeModel })._native;
  if (!nm || typeof nm._get !== 'function')
    throw new Error('export needs a model loaded by the native engine (loadModel)');
  const names = new Set(nm._names());
  return {
    get(name: string): Float32Array {
      if (!names.has(name)) throw new Error(`internal error: the engine has no tensor ${name}`);
      const w = Float32Array.from(nm._get(name));
      const module = name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : undefined;
      if (lora && module && names.has(`${module}.lora_A.weight`)) {
        const A = nm._get(`${module}.lora_A.weight`); // [r, in]
        const B = nm._get(`${module}.lora_B.weight`); // [out, r]
        const [r, inDim] = nm._shape(`${module}.lora_A.weight`) as [number, number];
        const outDim = nm._shape(`${module}.lora_B.weight`)[0]!;
        const s = lora.alpha / lora.rank;
        for (let o = 0; o < outDim; o++) {
          for (let k = 0; k < r; k++) {
            const bk = s * B[o * r + k]!;
            if (bk === 0) continue;
            const row = o * inDim,
              arow = k * inDim;
            for (let i = 0; i < inDim; i++) w[row + i] += bk * A[arow + i]!;
          }
        }
      }
      return w;
    },
  };
}

/** Weight count of each graph (for the external data decision, before anything is built). */
export function graphParameters(
  cfg: EngineConfig,
): Record<'vision_encoder' | 'embed_tokens' | 'decoder_model_merged', number> {
  const v = cfg.vision,
    E = v.embedDim,
    F = v.mlpHidden,
    M = E * v.spatialMergeSize ** 2;
  const PD = v.inChannels * v.temporalPatchSize * v.patchSize ** 2;
  const q3 = cfg.modelType === 'qwen3_vl';
  const norm = (n: number) => (v.rmsNorm ? n : 2 * n); // RMSNorm: weight; LayerNorm: weight and bias
  const mlp = v.hiddenAct === 'silu' ? 3 * E * F + 2 * F + E : 2 * E * F + F + E; // gated: gate, up, down
  const block = 2 * norm(E) + 3 * E * E + 3 * E + E * E + E + mlp;
  const merger = (normParams: number) => normParams + M * M + M + M * v.hiddenSize + v.hiddenSize;
  const deepstack = (v.deepstackVisualIndexes ?? []).length;
  const vision =
    v.depth === 0
      ? 0
      : PD * E +
        (q3 ? E + (v.numPositionEmbeddings ?? 0) * E : 0) +
        v.depth * block +
        merger(norm(E)) +
        deepstack * merger(2 * M);
  const H = cfg.hiddenSize,
    D = cfg.headDim,
    NH = cfg.numHeads,
    KV = cfg.numKvHeads,
    I = cfg.intermediateSize,
    V = cfg.vocabSize;
  const bias = cfg.attentionBias !== false ? 1 : 0;
  const layer =
    H * NH * D +
    bias * NH * D +
    2 * (H * KV * D + bias * KV * D) +
    NH * D * H +
    3 * H * I +
    2 * H +
    (cfg.qkNorm ? 2 * D : 0);
  return { vision_encoder: vision, embed_tokens: V * H, decoder_model_merged: cfg.numLayers * layer + H + V * H };
}

const BYTES_PER_WEIGHT: Record<ExportDtype, number> = { fp32: 4, fp16: 2, int8: 1 };

/** Build a graph and write it under dir (its weights to `<base>.onnx_data` when `external`). */
async function writeGraph(
  build: (sink?: ExternalSink) => Graph,
  dir: string,
  base: string,
  external: boolean,
): Promise<{ name: string; bytes: number }[]> {
  const meta = { producer: 'vqalab', version: '0.1.0', doc: 'exported by vqalab export onnx' };
  const onnxFile = path.join(dir, `${base}.onnx`);
  if (!external) {
    const bytes = build().serialize(meta);
    await fsp.writeFile(onnxFile, bytes);
    return [{ name: `onnx/${base}.onnx`, bytes: bytes.byteLength }];
  }
  const dataName = `${base}.onnx_data`;
  const fd = openSync(path.join(dir, dataName), 'w');
  let offset = 0;
  let bytes: Uint8Array;
  try {
    bytes = build({
      location: dataName,
      minBytes: 1024,
      write: (b) => {
        // keep each tensor 64-byte aligned (onnxruntime may map the file)
        const pad = (64 - (offset % 64)) % 64;
        if (pad) {
          writeSync(fd, new Uint8Array(pad));
          offset += pad;
        }
        const at = offset;
        let done = 0;
        while (done < b.byteLength) done += writeSync(fd, b, done, b.byteLength - done);
        offset += b.byteLength;
        return at;
      },
    }).serialize(meta);
  } finally {
    closeSync(fd);
  }
  await fsp.writeFile(onnxFile, bytes);
  return [
    { name: `onnx/${base}.onnx`, bytes: bytes.byteLength },
    { name: `onnx/${dataName}`, bytes: statSync(path.join(dir, dataName)).size },
  ];
}

/**
 * Export `o.model` (a model folder; or a vqalab trainer checkpoint, run folder or PEFT adapter
 * folder, resolved as LocalPolicy.load does) to `o.out`.
 */
export async function exportOnnx(o: ExportOptions): Promise<ExportResult> {
  const t0 = performance.now();
  const dtype = o.dtype ?? 'fp32';
  if (!EXPORT_DTYPES.includes(dtype))
    throw new Error(`unknown dtype ${JSON.stringify(dtype)}; expected one of ${EXPORT_DTYPES.join(', ')}`);
  if (typeof o.out !== 'string' || o.out === '') throw new Error('export needs an output folder (--out DIR)');
  const log = o.log ?? (() => {});
  // a trainer checkpoint, a run folder or a PEFT adapter folder resolve to their model (and adapter)
  if (existsSync(o.model) && !existsSync(path.join(o.model, 'config.json'))) {
    const r = resolveModelFolder(o.model);
    if (r.adapterDir && o.adapter)
      throw new Error(`${o.model} is an adapter folder; pass its base as --model and one --adapter`);
    o = { ...o, model: r.modelDir, ...(r.adapterDir ? { adapter: r.adapterDir } : {}) };
    log(`${o.model}${o.adapter ? ` with adapter ${o.adapter}` : ''}`);
  }
  const { raw, cfg } = exportableConfig(o.model);
  const lora = o.adapter ? checkAdapter(o.adapter, o.model, cfg) : undefined;
  if (existsSync(o.out) && !o.overwrite)
    throw new Error(`${o.out} already exists; remove it, choose another --out, or pass --overwrite`);
  const threshold = o.externalDataThreshold ?? 1.8e9;

  log(`loading ${o.model}${o.adapter ? ` with adapter ${o.adapter}` : ''}`);
  let model: EngineModel;
  try {
    model = await loadModel(o.model, {
      ...(lora ? { lora, adapter: o.adapter } : {}),
      ...(o.threads ? { threads: o.threads } : {}),
    });
  } catch (err) {
    if (o.adapter) throw new Error(`${o.adapter}: the adapter does not fit ${o.model} (${(err as Error).message})`);
    throw err;
  }
  const weights = engineWeights(model, lora);
  const suffix = DTYPE_SUFFIX[dtype];
  const tmp = tempPathFor(path.resolve(o.out));
  const cleanup = () => {
    try {
      rmSync(tmp, { recursive: true, force: true });
    } catch {
      /* exiting */
    }
  };
  const onExit = () => cleanup();
  process.once('exit', onExit);
  const files: { name: string; bytes: number }[] = [];
  let external = false;
  try {
    await fsp.mkdir(path.join(tmp, 'onnx'), { recursive: true });
    const graphs: [keyof ReturnType<typeof graphParameters>, (sink?: ExternalSink) => Graph][] = [
      ['vision_encoder', (sink) => buildVisionEncoder(cfg, weights, dtype, sink)],
      ['embed_tokens', (sink) => buildEmbedTokens(cfg, weights, dtype, sink)],
      ['decoder_model_merged', (sink) => buildDecoder(cfg, weights, dtype, sink)],
    ];
    const counts = graphParameters(cfg);
    for (const [name, build] of graphs) {
      if (name === 'vision_encoder' && cfg.vision.depth === 0) continue;
      const ext = counts[name] * BYTES_PER_WEIGHT[dtype] > threshold;
      log(`building onnx/${name}${suffix}.onnx${ext ? ' (external data)' : ''}`);
      files.push(...(await writeGraph(build, path.join(tmp, 'onnx'), `${name}${suffix}`, ext)));
      external ||= ext;
    }
    const config = withTextConfig(raw);
    config['transformers.js_config'] = {
      ...(typeof raw['transformers.js_config'] === 'object' ? raw['transformers.js_config'] : {}),
      dtype,
      ...(external ? { use_external_data_format: true } : {}),
    };
    if (lora)
      config.vqalab_export = { adapter_merged: path.resolve(o.adapter!), lora_rank: lora.rank, lora_alpha: lora.alpha };
    const configText = JSON.stringify(config, null, 2) + '\n';
    await fsp.writeFile(path.join(tmp, 'config.json'), configText);
    files.push({ name: 'config.json', bytes: Buffer.byteLength(configText) });
    const tokDir = o.adapter && existsSync(path.join(o.adapter, 'tokenizer.json')) ? o.adapter : o.model;
    for (const f of AUX_FILES) {
      const src = existsSync(path.join(tokDir, f)) ? path.join(tokDir, f) : path.join(o.model, f);
      if (!existsSync(src)) continue;
      await fsp.copyFile(src, path.join(tmp, f));
      files.push({ name: f, bytes: statSync(src).size });
    }
    if (!existsSync(path.join(tmp, 'tokenizer.json')))
      throw new Error(`${o.model}: no tokenizer.json to ship with the export`);
    if (!existsSync(path.join(tmp, 'preprocessor_config.json'))) {
      const pre = defaultPreprocessorConfig(cfg);
      await fsp.writeFile(path.join(tmp, 'preprocessor_config.json'), pre);
      files.push({ name: 'preprocessor_config.json', bytes: Buffer.byteLength(pre) });
    }
    if (o.web) {
      log('writing the browser demo (index.html, web/)');
      files.push(...(await writeWebDemo(tmp)));
    }
    if (o.overwrite && existsSync(o.out)) {
      const old = tempPathFor(path.resolve(o.out));
      await fsp.rename(o.out, old);
      await fsp.rename(tmp, o.out);
      await fsp.rm(old, { recursive: true, force: true });
    } else {
      await fsp.rename(tmp, o.out);
    }
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true });
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOSPC')
      throw new Error(`${o.out}: no space left on the device while exporting; nothing was written (${e.message})`);
    throw err;
  } finally {
    process.removeListener('exit', onExit);
    model.dispose();
  }
  return {
    out: o.out,
    dtype,
    files,
    externalData: external,
    adapterMerged: Boolean(lora),
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * The config.json written beside the graphs. transformers.js reads a Qwen2.5-VL's (and Qwen3-VL's)
 * language-model settings from `text_config` only; a flat Qwen2.5-VL config (the published files'
 * form) gets one with the same text fields (model_type "qwen2_5_vl_text"), which the engine's parser
 * reads the same way.
 */
function withTextConfig(raw: Record<string, any>): Record<string, any> {
  if (raw.model_type !== 'qwen2_5_vl' || (typeof raw.text_config === 'object' && raw.text_config !== null))
    return { ...raw };
  const { vision_config: _v, 'transformers.js_config': _t, architectures: _a, ...text } = raw;
  return { ...raw, text_config: { ...text, model_type: 'qwen2_5_vl_text' } };
}

/** The image processor settings, for a model folder that has no preprocessor_config.json. */
function defaultPreprocessorConfig(cfg: EngineConfig): string {
  // Qwen2-VL's processor settings (the same file model init writes), at this model's patch sizes;
  // Qwen3-VL normalises with mean and std 0.5 (src/model/processor-files.ts familyPreprocessorConfig)
  const config = {
    ...preprocessorConfig(),
    ...(cfg.modelType === 'qwen3_vl' ? { image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] } : {}),
    patch_size: cfg.vision.patchSize,
    temporal_patch_size: cfg.vision.temporalPatchSize,
    merge_size: cfg.vision.spatialMergeSize,
  };
  return JSON.stringify(config, null, 2) + '\n';
}
