/** Data-parallel training over several GPUs and hosts (docs/multi-gpu.md). */
export {
  DistributedTrainer,
  type DistributedOptions,
  type DistributedRunOptions,
  type DistributedRunResult,
} from './driver.js';
export { DistributedError, type RankInfo } from './rendezvous.js';
export { runNodeAgent, type LaunchOptions } from './launcher.js';
export { shardOf } from './sharded-model.js';
export type { Recipe, RecipeContext, RecipeFn, RecipeRef } from './worker.js';
