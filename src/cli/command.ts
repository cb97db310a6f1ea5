import { UsageError } from '../util/errors.js';

/**
 * One CLI subcommand. Each lives in its own module under src/cli/ and is listed in commands.ts.
 * `run` receives the arguments after the subcommand name and returns the process exit code.
 * Every command prints `usage` for `--help` / `-h` (handled in main.ts before `run` is called).
 */
export interface Command {
  /** The word after `vqalab`, e.g. `data`. Nested commands (`data convert`) dispatch themselves. */
  name: string;
  /** One line for `vqalab --help`. */
  summary: string;
  /** The full help text, printed by `vqalab NAME --help`. */
  usage: string;
  run(argv: string[]): Promise<number>;
}

/** True when argv asks for help at this level (`-h`/`--help` before any `--`). */
export function wantsHelp(argv: string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '-h' || a === '--help') return true;
  }
  return false;
}

/**
 * Dispatch `argv[0]` among nested subcommands (for `vqalab data convert ...`), printing `usage`
 * when no or an unknown subcommand is given.
 */
export async function dispatchSubcommand(
  group: string,
  usage: string,
  subs: Command[],
  argv: string[],
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help') {
    process.stdout.write(usage);
    return name === undefined ? 2 : 0;
  }
  const sub = subs.find((s) => s.name === name);
  if (!sub) throw new UsageError(`unknown command "${group} ${name}"; run "vqalab ${group} --help" for the list`);
  if (wantsHelp(rest)) {
    process.stdout.write(sub.usage);
    return 0;
  }
  return sub.run(rest);
}
