/**
 * Argument checks for the engine API, run before any native call (the native side trusts its
 * input). Shape and type problems use invalidParameterError's exact form; content problems (token ids,
 * image tokens, lengths) say what the model needs.
 */
import { expectBoolean, expectInteger, expectNumber, invalidParameterError } from '../util/validate.js';
import type { EngineConfig } from './config.js';
import type { ForwardRequest, ImageInput, Prompt, SampleRequest, AdamWOptions, LoraConfig } from './types.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function checkTokens(name: string, ids: unknown, cfg: EngineConfig, allowEmpty: boolean): Int32Array {
  if (!(ids instanceof Int32Array)) throw invalidParameterError(name, 'Int32Array', ids);
  if (!allowEmpty && ids.length === 0) throw invalidParameterError(name, 'non-empty Int32Array', ids);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= cfg.vocabSize) {
      throw new RangeError(`${name}[${i}]: token id ${id} is outside the vocabulary [0, ${cfg.vocabSize})`);
    }
  }
  return ids;
}

function checkImage(name: string, im: unknown, cfg: EngineConfig): ImageInput {
  if (!isObject(im)) throw invalidParameterError(name, 'object with pixels and gridThw', im);
  const g = im.gridThw;
  if (!Array.isArray(g) || g.length !== 3)
    throw invalidParameterError(`${name}.gridThw`, 'array of 3 positive integers', g);
  g.forEach((v, i) => expectInteger(`${name}.gridThw[${i}]`, v, 1));
  const [t, h, w] = g as [number, number, number];
  const m = cfg.vision.spatialMergeSize;
  if (h % m !== 0 || w % m !== 0) {
    throw new RangeError(
      `${name}.gridThw [${t}, ${h}, ${w}]: h and w must be multiples of the spatial merge size ${m}`,
    );
  }
  const patchDim = cfg.vision.inChannels * cfg.vision.temporalPatchSize * cfg.vision.patchSize ** 2;
  if (!(im.pixels instanceof Float32Array)) throw invalidParameterError(`${name}.pixels`, 'Float32Array', im.pixels);
  if (im.pixels.length !== t * h * w * patchDim) {
    throw new RangeError(
      `${name}.pixels has ${im.pixels.length} values; gridThw [${t}, ${h}, ${w}] needs ${t * h * w} patches x ${patchDim} = ${t * h * w * patchDim}`,
    );
  }
  const out: ImageInput = { pixels: im.pixels, gridThw: [t, h, w] };
  if (im.video !== undefined) {
    if (typeof im.video !== 'boolean') throw invalidParameterError(`${name}.video`, 'boolean', im.video);
    if (im.video && cfg.videoTokenId === undefined)
      throw new RangeError(`${name} is a video but the model's config.json has no video_token_id`);
    if (im.video) out.video = true;
  }
  if (im.secondPerGrid !== undefined) {
    if (typeof im.secondPerGrid !== 'number' || !Number.isFinite(im.secondPerGrid) || im.secondPerGrid <= 0) {
      throw invalidParameterError(
        `${name}.secondPerGrid`,
        'positive number (seconds per temporal patch)',
        im.secondPerGrid,
      );
    }
    out.secondPerGrid = im.secondPerGrid;
  }
  return out;
}

/** The runs of visual tokens a prompt's images and videos take, in order (native/src/model.cc visual_runs). */
function visualRuns(images: readonly ImageInput[], cfg: EngineConfig): { token: number; n: number; what: string }[] {
  const m2 = cfg.vision.spatialMergeSize ** 2;
  const runs: { token: number; n: number; what: string }[] = [];
  images.forEach((im, k) => {
    const [t, h, w] = im.gridThw;
    if (!im.video) runs.push({ token: cfg.imageTokenId, n: (t * h * w) / m2, what: `image ${k}` });
    else if (cfg.modelType === 'qwen3_vl')
      for (let i = 0; i < t; i++)
        runs.push({ token: cfg.videoTokenId!, n: (h * w) / m2, what: `video ${k} frame ${i}` });
    else runs.push({ token: cfg.videoTokenId!, n: (t * h * w) / m2, what: `video ${k}` });
  });
  return runs;
}

/** Checks a prompt: ids in range, images well formed, one run of image tokens per image of the right length. */
export function checkPrompt(name: string, p: unknown, cfg: EngineConfig): Prompt {
  if (!isObject(p)) throw invalidParameterError(name, 'object with ids and images', p);
  const ids = checkTokens(`${name}.ids`, p.ids, cfg, false);
  const imagesRaw = p.images ?? [];
  if (!Array.isArray(imagesRaw)) throw invalidParameterError(`${name}.images`, 'array', imagesRaw);
  const images = imagesRaw.map((im, i) => checkImage(`${name}.images[${i}]`, im, cfg));
  const m2 = cfg.vision.spatialMergeSize ** 2;
  for (const [kind, token, isVideo] of [
    ['image', cfg.imageTokenId, false],
    ['video', cfg.videoTokenId ?? -1, true],
  ] as const) {
    const mine = images.filter((im) => Boolean(im.video) === isVideo);
    const total = mine.reduce((a, im) => a + (im.gridThw[0] * im.gridThw[1] * im.gridThw[2]) / m2, 0);
    let count = 0;
    for (let i = 0; i < ids.length; i++) if (ids[i] === token) count++;
    if (count !== total) {
      const grids = mine.map((im) => `[${im.gridThw.join(', ')}]`).join(', ');
      throw new RangeError(
        `${name}.ids has ${count} ${kind} tokens (id ${token}) but its ${mine.length} ${kind}(s)` +
          `${mine.length ? ` of grid ${grids}` : ''} need ${total} (t·h·w / ${m2} each)`,
      );
    }
  }
  const visual = (id: number) => id === cfg.imageTokenId || (cfg.videoTokenId !== undefined && id === cfg.videoTokenId);
  let st = 0;
  for (const r of visualRuns(images, cfg)) {
    while (st < ids.length && !visual(ids[st]!)) st++;
    let run = 0;
    while (st + run < ids.length && ids[st + run] === r.token && run < r.n) run++;
    if (run !== r.n) {
      throw new RangeError(
        `${name}.ids: ${r.what} needs ${r.n} consecutive ${r.token === cfg.imageTokenId ? 'image' : 'video'} tokens from position ${st}, found a run of ${run}${images.some((im) => im.video) ? ' (images and videos in prompt order)' : ''}`,
      );
    }
    st += run;
  }
  return { ids, images };
}

export function checkForwardRequests(reqs: unknown, cfg: EngineConfig, maxSeq: number): ForwardRequest[] {
  if (!Array.isArray(reqs)) throw invalidParameterError('requests', 'array of forward requests', reqs);
  return reqs.map((r, i) => {
    const name = `requests[${i}]`;
    if (!isObject(r)) throw invalidParameterError(name, 'object with prompt and completions', r);
    const prompt = checkPrompt(`${name}.prompt`, r.prompt, cfg);
    if (!Array.isArray(r.completions))
      throw invalidParameterError(`${name}.completions`, 'array of Int32Array', r.completions);
    const completions = r.completions.map((c, g) => checkTokens(`${name}.completions[${g}]`, c, cfg, true));
    completions.forEach((c, g) => {
      if (prompt.ids.length + c.length > maxSeq) {
        throw new RangeError(
          `${name}: prompt (${prompt.ids.length} tokens) + completions[${g}] (${c.length} tokens) = ` +
            `${prompt.ids.length + c.length} tokens exceeds maxSequenceLength ${maxSeq}`,
        );
      }
    });
    if (prompt.ids.length > maxSeq) {
      throw new RangeError(`${name}: prompt (${prompt.ids.length} tokens) exceeds maxSequenceLength ${maxSeq}`);
    }
    const keep = r.keepForBackward === undefined ? false : expectBoolean(`${name}.keepForBackward`, r.keepForBackward);
    const logits = r.returnLogits === undefined ? false : expectBoolean(`${name}.returnLogits`, r.returnLogits);
    return { prompt, completions, keepForBackward: keep, returnLogits: logits };
  });
}

export function checkGradients(grads: unknown, shape: number[][]): Float32Array[][] {
  if (!Array.isArray(grads) || grads.length !== shape.length) {
    throw invalidParameterError(
      'gradLogprobs',
      `array of ${shape.length} per-request arrays (one per request of the last forward)`,
      grads,
    );
  }
  return grads.map((per, i) => {
    if (!Array.isArray(per) || per.length !== shape[i]!.length) {
      throw invalidParameterError(
        `gradLogprobs[${i}]`,
        `array of ${shape[i]!.length} Float32Array (one per completion)`,
        per,
      );
    }
    return per.map((g, c) => {
      if (!(g instanceof Float32Array) || g.length !== shape[i]![c]) {
        throw invalidParameterError(`gradLogprobs[${i}][${c}]`, `Float32Array of length ${shape[i]![c]}`, g);
      }
      return g;
    });
  });
}

export type CheckedSampleRequest = Required<Omit<SampleRequest, 'signal' | 'onToken'>> &
  Pick<SampleRequest, 'signal' | 'onToken'>;

/** Checks one sampling request; `name` prefixes the messages ("request", "requests[2]"). */
export function checkSampleRequest(
  r: unknown,
  cfg: EngineConfig,
  maxSeq: number,
  name = 'request',
): CheckedSampleRequest {
  if (!isObject(r)) throw invalidParameterError(name, 'object', r);
  const prompt = checkPrompt(`${name}.prompt`, r.prompt, cfg);
  const n = expectInteger(`${name}.n`, r.n, 1, 4096);
  const temperature = expectNumber(`${name}.temperature`, r.temperature, 0);
  const topP = r.topP === undefined ? 1 : expectNumber(`${name}.topP`, r.topP, 0, 1);
  if (topP === 0) throw invalidParameterError(`${name}.topP`, 'number between 0 (exclusive) and 1', topP);
  const topK = r.topK === undefined ? 0 : expectInteger(`${name}.topK`, r.topK, 0);
  const maxTokens = expectInteger(`${name}.maxTokens`, r.maxTokens, 1);
  if (prompt.ids.length + maxTokens > maxSeq) {
    throw new RangeError(
      `${name}: prompt (${prompt.ids.length} tokens) + maxTokens ${maxTokens} = ` +
        `${prompt.ids.length + maxTokens} tokens exceeds maxSequenceLength ${maxSeq}`,
    );
  }
  const stopRaw = r.stopTokenIds ?? [];
  if (!Array.isArray(stopRaw)) throw invalidParameterError(`${name}.stopTokenIds`, 'array of token ids', stopRaw);
  const stopTokenIds = stopRaw.map((s, i) => expectInteger(`${name}.stopTokenIds[${i}]`, s, 0, cfg.vocabSize - 1));
  const seed = expectInteger(`${name}.seed`, r.seed, 0, Number.MAX_SAFE_INTEGER);
  if (r.signal !== undefined && !(r.signal instanceof AbortSignal))
    throw invalidParameterError(`${name}.signal`, 'AbortSignal', r.signal);
  if (r.onToken !== undefined && typeof r.onToken !== 'function')
    throw invalidParameterError(`${name}.onToken`, 'function', r.onToken);
  return {
    prompt,
    n,
    temperature,
    topP,
    topK,
    maxTokens,
    stopTokenIds,
    seed,
    ...(r.signal ? { signal: r.signal as AbortSignal } : {}),
    ...(r.onToken ? { onToken: r.onToken as SampleRequest['onToken'] } : {}),
  };
}

export function checkAdamW(o: unknown): AdamWOptions {
  if (!isObject(o)) throw invalidParameterError('options', 'object', o);
  return {
    lr: expectNumber('options.lr', o.lr, 0),
    beta1: expectNumber('options.beta1', o.beta1, 0, 1),
    beta2: expectNumber('options.beta2', o.beta2, 0, 1),
    eps: expectNumber('options.eps', o.eps, 0),
    weightDecay: expectNumber('options.weightDecay', o.weightDecay, 0),
    maxGradNorm: expectNumber('options.maxGradNorm', o.maxGradNorm, 0),
  };
}

export const LM_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
// Qwen2-VL fc1/fc2, Qwen3-VL linear_fc1/linear_fc2; Qwen2.5-VL's vision MLP is gate_proj/up_proj/down_proj (LM_MODULES' names)
export const VISION_MODULES = ['qkv', 'proj', 'fc1', 'fc2', 'linear_fc1', 'linear_fc2'] as const;

export function checkLora(l: unknown): Required<LoraConfig> {
  if (!isObject(l)) throw invalidParameterError('options.lora', 'object', l);
  const rank = expectInteger('options.lora.rank', l.rank, 1, 4096);
  const alpha = expectNumber('options.lora.alpha', l.alpha, 0);
  const vision = expectBoolean('options.lora.vision', l.vision);
  if (!Array.isArray(l.targetModules) || l.targetModules.length === 0) {
    throw invalidParameterError('options.lora.targetModules', 'non-empty array of module names', l.targetModules);
  }
  const known: readonly string[] = vision ? [...LM_MODULES, ...VISION_MODULES] : LM_MODULES;
  const targetModules = l.targetModules.map((t, i) => {
    if (typeof t !== 'string' || !known.includes(t)) {
      throw invalidParameterError(
        `options.lora.targetModules[${i}]`,
        `one of ${known.map((k) => JSON.stringify(k)).join(', ')}`,
        t,
      );
    }
    return t;
  });
  const seed = l.seed === undefined ? 0 : expectInteger('options.lora.seed', l.seed, 0, Number.MAX_SAFE_INTEGER);
  return { rank, alpha, vision, targetModules, seed };
}
