#!/usr/bin/env node
/**
 * The kernel's launcher, named in the kernelspec's argv:
 *   node <package>/dist/kernel/main.js --connection-file {connection_file}
 */
import { startKernel } from './kernel.js';

const USAGE = `Usage: node dist/kernel/main.js --connection-file FILE [--interrupt-grace-ms MS]

Starts the "TypeScript (vqalab)" Jupyter kernel on the ports of FILE (written by Jupyter).
Install the kernelspec with "vqalab kernel install".
`;

function parse(argv: string[]): { connectionFile: string; graceMs?: number } | string {
  let connectionFile: string | undefined;
  let graceMs: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help') return USAGE;
    if (a === '--connection-file' || a === '-f') connectionFile = argv[++i];
    else if (a.startsWith('--connection-file=')) connectionFile = a.slice('--connection-file='.length);
    else if (a === '--interrupt-grace-ms') graceMs = Number(argv[++i]);
    else return `unknown argument "${a}"\n\n${USAGE}`;
  }
  if (!connectionFile) return `missing --connection-file\n\n${USAGE}`;
  if (graceMs !== undefined && !(Number.isFinite(graceMs) && graceMs >= 0))
    return `--interrupt-grace-ms must be a number of milliseconds >= 0\n`;
  return { connectionFile, graceMs };
}

/** Exit when the Jupyter server that started us is gone (it passes its pid), so no kernel is orphaned. */
function watchParent(): void {
  const parent = Number(process.env.JPY_PARENT_PID);
  if (!Number.isInteger(parent) || parent <= 1) return;
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      process.exit(0);
    }
  }, 2000).unref();
}

const args = parse(process.argv.slice(2));
if (typeof args === 'string') {
  process.stderr.write(args);
  process.exitCode = args === USAGE ? 0 : 2;
} else {
  watchParent();
  startKernel(args).catch((err: unknown) => {
    process.stderr.write(
      `vqalab kernel: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  });
}
