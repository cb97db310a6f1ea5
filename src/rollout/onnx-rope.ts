/**
 * M-RoPE positions of a prompt for the exported decoder: transformers' get_rope_index, as the engine
 * computes it (native/src/model.cc `visual_runs` and `rope_index`), as of transformers 5. Text runs
 * count up from where the previous run ended; a visual run's tokens take (t, h, w) grid positions
 * (after merging) offset by the position where it starts, and the next run starts max(h, w) after
 * that start (the time axis does not move it). Videos: Qwen2-VL's time position is the temporal
 * patch index, Qwen2.5-VL's index · tokens_per_second · int(second_per_grid) (the seconds truncated
 * to whole ones, as transformers 5 does), and Qwen3-VL splits a video into one run of one temporal
 * patch per frame group (each after its timestamp text), all at time 0. Generation goes on at the
 * largest position + 1.
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
    // second_per_grid_ts is a float32 tensor in transformers, truncated there to whole seconds
    if (im.video && cfg.modelType === 'qwen2_5_vl')
      run.tscale = Math.trunc(Math.fround(im.secondPerGrid ?? 1)) * (cfg.vision.tokensPerSecond ?? 1);
    runs.push(run);
  }
  return runs;
}

/** [3, L] positions of a prompt (axis-major) and the next position after it (the largest + 1). */
export function ropeIndex(
  ids: Int32Array,
  images: readonly ImageInput[],
  cfg: RopeConfig,
): { pos: BigInt64Array; next: number } {
  const L = ids.length;
  const pos = new BigInt64Array(3 * L);
  let st = 0,
    cur = 0,
    top = -1;
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
    top = Math.max(top, base + Math.max(tmax, r.gh - 1, r.gw - 1));
    cur = base + Math.max(r.gh, r.gw);
    st = idx;
  }
  for (let i = st; i < L; i++) set(i, cur + i - st, cur + i - st, cur + i - st);
  if (st < L) top = Math.max(top, cur + L - st - 1);
  return { pos, next: top + 1 };
}
