// The hash of everything that goes into the prebuilt extension, so that a committed build that no
// longer matches its sources is caught (test/extension/build.test.ts) without rebuilding in CI.
// Line endings are normalised; the plotly.js version is part of the input.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

function walk(dir, out) {
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Files that feed the extension bundle, relative to the repository root, in a fixed order. */
export function sourceFiles(root) {
  const files = [
    ...walk(path.join(root, 'extension/src'), []),
    ...walk(path.join(root, 'src/display/render'), []),
    path.join(root, 'src/display/types.ts'),
    path.join(root, 'extension/package.json'),
    path.join(root, 'extension/build.mjs'),
    path.join(root, 'extension/webpack.config.cjs'),
  ];
  return files.map((f) => path.relative(root, f).split(path.sep).join('/'));
}

export function sourceHash(root) {
  const h = createHash('sha256');
  for (const rel of sourceFiles(root)) {
    h.update(`${rel}\0`);
    h.update(readFileSync(path.join(root, rel), 'utf8').replace(/\r\n/g, '\n'));
    h.update('\0');
  }
  const plotly = JSON.parse(
    readFileSync(path.join(root, 'node_modules/plotly.js-basic-dist-min/package.json'), 'utf8'),
  ).version;
  h.update(`plotly.js-basic-dist-min@${plotly}`);
  return h.digest('hex').slice(0, 32);
}
