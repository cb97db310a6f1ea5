/**
 * The subscribers of one Trainer.run(): each registered layer's (the dashboard, report facts) made
 * for this run from the run options it reads, after checking that every option given is one the
 * trainer or a loaded layer reads.
 */
import { trainerPlugins, type RunState, type TrainerCallback, type TrainerView } from './events.js';
import type { RunOptions, RunResult } from './options.js';

/** The registered layers' callbacks for this run; what they attach (e.g. the dashboard) goes onto `result`. */
export function runCallbacks(
  trainer: TrainerView,
  options: RunOptions,
  run: RunState,
  result: RunResult,
): TrainerCallback[] {
  const plugins = trainerPlugins();
  const known = new Set([
    'steps',
    'evalEvery',
    'evalSplit',
    'checkpointEvery',
    'onStep',
    'onEval',
    'signal',
    'handleSigint',
    'callbacks',
    ...plugins.flatMap((p) => p.runOptions ?? []),
  ]);
  for (const [k, v] of Object.entries(options)) {
    if (!known.has(k) && v !== undefined && !(k === 'dashboard' && (v === 'auto' || v === false))) {
      throw new Error(
        `run({ ${k} }) needs the layer that reads it: import "vqalab" (the package entry loads the dashboard and report layers) before running`,
      );
    }
  }
  const runCbs: TrainerCallback[] = [];
  for (const p of plugins) {
    const made = p.forRun?.(trainer, options as unknown as Record<string, unknown>, run);
    if (made) {
      runCbs.push(made.callback);
      Object.assign(result, made.attach ?? {});
    }
  }
  return runCbs;
}
