/** The registry of parity checkers, in the order reports list them. Add yours with one line. */
import type { ParityChecker } from './types.js';
import { visionChecker } from './vision.js';
import { engineChecker } from './engine.js';

export const checkers: ParityChecker[] = [visionChecker, engineChecker];
