/** The registry of top-level subcommands, in the order `vqalab --help` lists them. */
import type { Command } from './command.js';
import { checkParityCommand } from './check-parity.js';
import { dataCommand } from './data.js';

export const commands: Command[] = [dataCommand, checkParityCommand];
