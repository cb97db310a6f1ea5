/**
 * Runs every benchmark, one after another, each in its own process (so one's memory and threads
 * don't disturb the next):   npm run bench [-- NAME ...]
 * Each benchmark prints its own figures with the baseline it measured in the same run; this only
 * sequences them and reports which failed. Names: the files in bench/ (gemm, engine, convert, ...).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** In the order a reader wants them: engine first, the slow full-size conversion last. */
const ALL = ['gemm', 'engine', 'reward', 'serve', 'kernel', 'report', 'demo', 'convert'];

const here = path.dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !ALL.includes(w));
if (unknown.length > 0) {
  console.error(`bench: unknown benchmark ${unknown.join(', ')}; known: ${ALL.join(', ')}`);
  process.exit(2);
}
const failed: string[] = [];
for (const name of wanted.length > 0 ? wanted : ALL) {
  const file = path.join(here, `${name}.js`);
  if (!existsSync(file)) {
    console.log(`\n=== ${name}: not built (${path.relative(process.cwd(), file)} missing)`);
    continue;
  }
  console.log(`\n=== ${name}`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [file], { stdio: 'inherit' });
  console.log(
    `=== ${name}: ${r.status === 0 ? 'ok' : `failed (exit ${r.status ?? r.signal})`} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  if (r.status !== 0) failed.push(name);
}
if (failed.length > 0) {
  console.error(`\nbench: failed: ${failed.join(', ')}`);
  process.exit(1);
}
