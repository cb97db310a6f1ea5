/**
 * The recipe of each rank of `vqalab train --gpus N` (src/distributed/worker.ts loads it by path): the
 * same model, data, rewards and config as the one-process run (src/cli/train-setup.ts), on the rank's
 * device. `ctx.args` is the command's TrainOptions.
 */
import type { Recipe, RecipeContext } from '../distributed/worker.js';
import { resolveModelFolder } from '../engine/folder.js';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { DEMO_DEFAULTS } from './demo.js';
import type { TrainOptions } from './train-run.js';
import { trainSetup } from './train-setup.js';

export async function recipe(ctx: RecipeContext): Promise<Recipe> {
  const o = ctx.args as TrainOptions;
  const modelArg = o.model ?? DEFAULT_MODEL_DIR;
  const embeddedData = o.dataPath === undefined;
  const s = await trainSetup(o, {
    modelArg,
    resolved: resolveModelFolder(modelArg),
    device: ctx.device,
    out: o.out ?? 'out/train',
    maxSteps: o.maxSteps ?? (embeddedData ? DEMO_DEFAULTS.grpoSteps : 100),
    seed: o.seed ?? 0,
    embeddedData,
    // one rank speaks for all (they see the same)
    log: ctx.rank === 0 && !o.quiet ? (l) => process.stderr.write(`${l}\n`) : undefined,
  });
  const { outputDir: _rank0Only, ...common } = s.common;
  return {
    modelDir: modelArg,
    load: (dir, { loadOptimizer }) => s.load(dir, { loadOptimizer }),
    options: { ...common, tokenizer: s.tokenizer, config: s.config },
  };
}
