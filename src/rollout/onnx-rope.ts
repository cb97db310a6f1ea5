/**
 * M-RoPE positions of a prompt for the exported decoder: transformers' get_rope_index, as the engine
 * computes it (native/src/model.cc `visual_runs` and `rope_index`). Text runs count up from where the
 * previous run ended; a visual run's tokens take (t, h, w) grid positions (after merging) offset by
 * the position where it starts; the next run starts at the largest position used so far + 1.
 * Videos: Qwen2-VL's time position is the temporal patch index, Qwen2.5-VL's
 * floor(index · second_per_grid · tokens_per_second), and Qwen3-VL splits a video into one run of
 * one temporal patch per frame group (each after its timestamp text), all at time 0.
 */
import type { EngineConfig } from '../engine/config.js';
import type { ImageInput } from '../engine/types.js';

type RopeConfig = Pick<EngineConfig, 'imageTokenId' | 'videoTokenId' | 'modelType'> & {
  vision: Pick<EngineConfig['vision'], 'spatialMergeSize' | 'tokensPerSecond'>;
};

interface VisualRun {
  token: number;
  t: number;
  gh: number;
  gw: number;
  tscale: number;
}

function visualRuns(images: readonly ImageInput[], cfg: RopeConfig): VisualRun[] {
  const m = cfg.vision.spatialMergeSize;
  const runs: VisualRun[] = [];
  for (const im of images) {
    const [t, h, w] = im.gridThw;
    if (im.video && cfg.videoTokenId === undefined) throw new Error('the prompt has a video but the model takes none');
    const token = im.video ? cfg.videoTokenId! : cfg.imageTokenId;
    const run = { token, t, gh: h / m, gw: w / m, tscale: 1 };
    if (im.video && cfg.modelType === 'qwen3_vl') {
      for (let i = 0; i < t; i++) runs.push({ ...run, t: 1 });
      continue;
    }
    if (im.video && cfg.modelType === 'qwen2_5_vl')
      run.tscale = (im.secondPerGrid ?? 1) * (cfg.vision.tokensPerSecond ?? 1);
    runs.push(run);
  }
  return runs;
}

/** [3, L] positions of a prompt (axis-major) and the next position after it. */
export function ropeIndex(
  ids: Int32Array,
  images: readonly ImageInput[],
  cfg: RopeConfig,
): { pos: BigInt64Array; next: number } {
  const L = ids.length;
  const pos = new BigInt64Array(3 * L);
  let st = 0,
    cur = 0;
  const set = (i: number, a: number, b: number, c: number) => {
    pos[i] = BigInt(a);
    pos[L + i] = BigInt(b);
    pos[2 * L + i] = BigInt(c);
  };
  for (const r of visualRuns(images, cfg)) {
    let ed = st;
    while (ed < L && ids[ed] !== r.token) ed++;
    for (let i = st; i < ed; i++) set(i, cur + i - st, cur + i - st, cur + i - st);
    const base = cur + ed - st;
    let idx = ed,
      tmax = 0;
    for (let ti = 0; ti < r.t; ti++) {
      const tp = r.tscale === 1 ? ti : Math.floor(ti * r.tscale);
      tmax = Math.max(tmax, tp);
      for (let hi = 0; hi < r.gh; hi++)
        for (let wi = 0; wi < r.gw; wi++, idx++) set(idx, base + tp, base + hi, base + wi);
    }
    cur = base + Math.max(tmax, r.gh - 1, r.gw - 1) + 1;
    st = idx;
  }
  for (let i = st; i < L; i++) set(i, cur + i - st, cur + i - st, cur + i - st);
  if (st < L) cur += L - st;
  return { pos, next: cur };
}
