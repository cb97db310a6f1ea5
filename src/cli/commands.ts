/** The registry of top-level subcommands, in the order `vqalab --help` lists them. */
import type { Command } from './command.js';
import { kernelCommand } from './kernel.js';

export const commands: Command[] = [
  kernelCommand,
];
