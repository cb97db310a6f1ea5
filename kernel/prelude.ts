/// <reference types="node" preserve="true" />
/**
 * What a notebook has in scope from its first cell: the runtime as the `vqalab` namespace, plus
 * the everyday entry points by name. The kernel imports every export of this module into the
 * notebook before the first cell (kernel/preload.ts), fully typed, so completion and inspection
 * work on them; adding an export here adds a name to every notebook.
 *
 * The reference to Node's types (kept in the emitted .d.ts) gives notebooks Node's globals
 * (Buffer, process, timers) from this package's copy of @types/node when the notebook's directory
 * has none nearby.
 */
export * as vqalab from '../src/index.js';
// Showing things (IPython's `display` is in scope too).
export { display, clearOutput, newDisplayId } from '../src/display/sink.js';
export { show, plot, browse, dashboard } from '../src/index.js';
// Training and rewards.
export { Trainer, grpoConfig } from '../src/index.js';
export { vqaAccuracy, defineReward, rewardLab } from '../src/index.js';
export { exactMatch, similarity, numeric, brevity, weighted, gate } from '../src/reward/index.js';
// Long loops written in a cell can stop at the interrupt button.
export { interruptSignal } from '../src/util/interrupt.js';
