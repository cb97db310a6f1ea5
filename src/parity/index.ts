/** Parity checks of the engine and the processor against recorded references (`vqalab check-parity`). */
export { findCases, runParity, formatParityReport } from './run.js';
export type { ParityChecker, ParityOptions, ParityResult } from './types.js';
