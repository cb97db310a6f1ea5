/**
 * `vqalab demo --video`: the demo's data on the synthetic video set (src/data/synth-video.ts),
 * made in memory — clips rendered, processed by Qwen2-VL's video processor at the frames' own size
 * (min_pixels of one frame, so a 56² frame stays 2 × 2 merged tokens a temporal patch instead of
 * being scaled up to the processor's default minimum of 336²) — so the demo's recipe and its
 * wrong-input control run unchanged on video questions.
 */
import type { VqaSample } from '../data/types.js';
import type { ImageInput } from '../engine/types.js';
import { renderFrame, synthClips, type SynthVideoOptions } from '../data/synth-video.js';
import { VideoProcessor } from '../vision/video.js';

/** Clips of the set as samples (one question each), their processed videos put in `into` by sample id. */
export function synthVideoSet(
  options: SynthVideoOptions & { idPrefix: string },
  into: Map<string, ImageInput[]>,
): VqaSample[] {
  const size = options.frameSize ?? 56;
  const fps = options.fps ?? 2;
  const processor = new VideoProcessor({ family: 'qwen2_vl', minPixels: size * size, fps });
  return synthClips(options).map((clip, i) => {
    const id = `${options.idPrefix}_${String(i).padStart(6, '0')}`;
    const frames = clip.centres.map((_, f) => ({ data: renderFrame(clip, f, size), width: size, height: size }));
    const v = processor.processFrames(frames, fps);
    into.set(id, [{ pixels: v.pixels, gridThw: v.gridThw, video: true, secondPerGrid: v.secondPerGrid }]);
    return {
      id,
      // no file: the trainer takes the processed clip from `into`
      imagePath: `${id}.video`,
      question: clip.question,
      answer: clip.answer,
      answers: Array.from({ length: 10 }, () => clip.answer),
      answerType: clip.family === 'blink' ? 'number' : 'other',
      extra: { family: clip.family },
    } as VqaSample;
  });
}
