/** The registry of top-level subcommands, in the order `vqalab --help` lists them. One per line, for clean merges. */
import type { Command } from './command.js';
import { dataCommand } from './data.js';
import { evalCommand } from './eval.js';
import { checkParityCommand } from './check-parity.js';
import { kernelCommand } from './kernel.js';
import { labCommand } from './lab.js';
import { reportCommand } from './report.js';
import { serveCommand } from './serve.js';
import { evalPolicyCommand } from './eval-policy.js';
import { demoCommand } from './demo.js';
import { modelCommand } from './model.js';
import { trainCommand } from './train.js';
import { exportCommand } from './export.js';
import { trainAgentCommand } from './train-agent.js';

export const commands: Command[] = [
  dataCommand,
  evalCommand,
  checkParityCommand,
  kernelCommand,
  labCommand,
  reportCommand,
  serveCommand,
  evalPolicyCommand,
  demoCommand,
  trainCommand,
  modelCommand,
  exportCommand,
  trainAgentCommand,
];
