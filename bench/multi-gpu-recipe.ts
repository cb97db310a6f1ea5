/**
 * The ranks' recipe of bench/multi-gpu.ts: the issue 13 workload (bench/trainer.ts) — Qwen2-VL-2B
 * dimensions, random weights, full fine-tune, 448² random images, 16-token completions, rewards that
 * never tie — with `prompts` prompts per step (16·N at N ranks) in one minibatch (one optimizer step).
 * `crash` / `hang` make one rank fail for real (the fault check), as test/distributed/fixtures/recipe.ts.
 */
import { loadModel } from '../src/engine/model.js';
import type { Recipe, RecipeContext } from '../src/distributed/worker.js';
import type { VqaSample } from '../src/data/types.js';
import type { ImageInput } from '../src/engine/types.js';
import type { RewardFn } from '../src/reward/types.js';
import { VlmTokenizer } from '../src/text/tokenizer.js';
import { Rng } from '../src/util/rng.js';
import { Qwen2VLImageProcessor } from '../src/vision/qwen2vl.js';

export interface BenchArgs {
  modelDir: string;
  prompts: number;
  g: number;
  maxTokens: number;
  side: number;
  steps: number;
  learningRate?: number;
  /** The fault check: this rank exits, or blocks for good, in its reward function during this step (0-based). */
  crash?: { rank: number; step: number };
  hang?: { rank: number; step: number };
}

export function recipe(ctx: RecipeContext): Recipe {
  const a = ctx.args as BenchArgs;
  const processor = new Qwen2VLImageProcessor();
  const samples = Array.from(
    { length: a.prompts * (a.steps + 2) },
    (_, i): VqaSample => ({
      id: `b-${i}`,
      imagePath: `memory:${i}`,
      question: 'What is shown in the picture?',
      answer: 'a',
      answers: Array(10).fill('a'),
    }),
  );
  const loadImages = async (s: VqaSample): Promise<ImageInput[]> => {
    const rng = new Rng(Number(s.id.slice(2)));
    const data = new Uint8Array(a.side * a.side * 3);
    for (let i = 0; i < data.length; i++) data[i] = rng.nextU32() & 255;
    const img = await processor.process({ data, width: a.side, height: a.side });
    return [{ pixels: img.pixels, gridThw: img.gridThw }];
  };
  let stepsDone = 0;
  const spread: RewardFn = (_s, c, rc) => {
    if (a.crash?.rank === ctx.rank && a.crash.step === stepsDone) process.exit(3);
    if (a.hang?.rank === ctx.rank && a.hang.step === stepsDone)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    return (rc.index ?? 0) / a.g + 0.001 * c.length;
  };
  return {
    modelDir: a.modelDir,
    load: (dir, o) => loadModel(dir, { device: ctx.device, loadOptimizer: o.loadOptimizer }),
    options: {
      tokenizer: VlmTokenizer.load(a.modelDir),
      train: samples,
      rewards: [spread],
      loadImages,
      recordFacts: false,
      callbacks: [
        {
          onStepEnd: () => {
            stepsDone++;
          },
        },
      ],
      config: {
        promptsPerStep: a.prompts,
        miniBatchPrompts: a.prompts,
        numGenerations: a.g,
        maxCompletionLength: a.maxTokens,
        learningRate: a.learningRate ?? 1e-6,
        seed: 1,
      },
    },
  };
}
