/**
 * The entry of a rank's process (started by src/distributed/launcher.ts with VQALAB_DIST_* set): joins
 * the run and serves the driver's commands. A failure is printed and exits 1; the driver names the rank.
 */
import { Worker, workerEnv } from './worker.js';

// Ctrl-C in a terminal reaches the whole process group: the driver decides (it stops the run at the
// next step boundary and ends the ranks); a rank that died of it would be a fault.
process.on('SIGINT', () => undefined);

Worker.run(workerEnv()).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`vqalab distributed worker: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
