/** Entry point of the `vqalab` CLI: finds the subcommand, handles --help and --version, maps errors to exit codes. */
import { vqalabVersion } from '../util/package.js';
import { wantsHelp } from './command.js';
import { UsageError } from '../util/errors.js';
import { commands } from './commands.js';

function topUsage(): string {
  const width = Math.max(...commands.map((c) => c.name.length), 8);
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    'Usage: vqalab <command> [options]',
    '',
    'GRPO reinforcement learning of vision-language models on VQA, from TypeScript.',
    '',
    'Commands:',
    ...lines,
    '',
    'Run "vqalab <command> --help" for the options of one command.',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(topUsage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${vqalabVersion()}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`vqalab: unknown command "${name}"\n\n${topUsage()}`);
    return 2;
  }
  // Nested commands (data convert, kernel install, ...) handle their own --help, so that
  // `vqalab data convert --help` shows the nested usage rather than the group's.
  if (wantsHelp(rest) && !/^\s*Commands:/m.test(command.usage)) {
    process.stdout.write(command.usage);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vqalab ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    throw err;
  }
}
