/** The registry of top-level subcommands, in the order `vqalab --help` lists them. */
import type { Command } from './command.js';
import { checkParityCommand } from './check-parity.js';

export const commands: Command[] = [checkParityCommand];
