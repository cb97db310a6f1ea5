/** The vqalab runtime: what a notebook cell or a script imports. Knows nothing about Jupyter. */
export * as validate from './util/validate.js';
export { interruptSignal, interruptible, onInterrupt, isInterrupted, throwIfInterrupted, InterruptedError } from './util/interrupt.js';
