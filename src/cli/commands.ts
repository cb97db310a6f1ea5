/** The registry of top-level subcommands, in the order `vqalab --help` lists them. */
import type { Command } from './command.js';
import { reportCommand } from './report.js';

export const commands: Command[] = [
  reportCommand,
];
