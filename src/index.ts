/**
 * The vqalab runtime: what a notebook cell or a script imports (docs/api.md lists every name).
 * Knows nothing about Jupyter.
 *
 * The top level holds the everyday names; everything else is in a namespace named after its
 * folder (`vqalab.reward.exactMatch` is src/reward). Each capability is exported once: a name at
 * the top level is not repeated in its folder's namespace.
 */

// ── Everyday names ────────────────────────────────────────────────────────────────────────────
export { VqaDataset } from './data/dataset.js';
export { defineReward } from './reward/core.js';
export { vqaAccuracy } from './reward/basic.js';
export { LocalPolicy } from './rollout/local.js';
export { OpenAIPolicy } from './rollout/openai.js';
export { evaluatePolicies } from './rollout/compare.js';
export { Trainer } from './grpo/trainer.js';
export { grpoConfig } from './grpo/config.js';
export { show, plot, browse } from './display/show.js';
export { dashboard } from './display/dashboard.js';
export { rewardLab } from './display/reward-lab.js';
export { serve } from './serve/server.js';

// ── Namespaces, one per folder (src/<name>/index.ts), lowest layer first (docs/architecture.md) ─
export * as util from './util/index.js';
export * as engine from './engine/index.js';
export * as vision from './vision/index.js';
export * as text from './text/index.js';
export * as eval from './eval/index.js';
export * as data from './data/index.js';
export * as model from './model/index.js';
export * as reward from './reward/index.js';
export * as parity from './parity/index.js';
export * as rollout from './rollout/index.js';
export * as grpo from './grpo/index.js';
export * as export from './export/index.js';
export * as distributed from './distributed/index.js';
export * as display from './display/index.js';
// The light facts API only (recordFacts, stamp …); the report runner is src/report/index.ts, not loaded here.
export * as report from './report/facts.js';
export * as gateway from './gateway/index.js';

// The trainer's subscribers (src/grpo/events.ts): report facts here, the run dashboard in src/display/training.ts.
import './report/trainer-facts.js';
