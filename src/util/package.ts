/** This package's root folder and version, found from wherever the compiled file sits (dist/src/util/). */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let found: { root: string; version: string } | undefined;

function find(): { root: string; version: string } {
  if (found) return found;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // dist/src/util → the root is three up; src/util (run from source) → two up.
  for (const up of [
    ['..', '..', '..'],
    ['..', '..'],
  ]) {
    const root = path.resolve(here, ...up);
    const file = path.join(root, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'vqalab' && pkg.version) return (found = { root, version: pkg.version });
  }
  return (found = { root: path.resolve(here, '..', '..', '..'), version: 'unknown' });
}

/** vqalab's version (package.json), or "unknown" when the package file is not where it should be. */
export function vqalabVersion(): string {
  return find().version;
}

/** The folder holding vqalab's package.json. */
export function packageRoot(): string {
  return find().root;
}
