/** The registry of top-level subcommands, in the order `vqalab --help` lists them. */
import type { Command } from './command.js';
import { labCommand } from './lab.js';

export const commands: Command[] = [labCommand];
