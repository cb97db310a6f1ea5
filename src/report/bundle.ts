/**
 * The browser script of a report, bundled with esbuild when a report is exported: our hydration
 * code plus the display renderers (the same code the JupyterLab extension draws with) when they
 * are installed. plotly.js is never bundled here: the page inlines it once, only when a plot is
 * present, and imports of it resolve to that global.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/src/report
const DIST_SRC = path.resolve(HERE, '..');

/**
 * Where the display renderers' browser entry is looked for, in order. Its module must export
 * `renderers: Record<mime, (host, payload, ctx) => void>` (see docs/report.md).
 */
export const DISPLAY_ENTRY_CANDIDATES = [
  'display/browser.js',
  'display/browser/index.js',
  'display/renderers/index.js',
];

export function displayEntry(): string | null {
  const override = process.env.VQALAB_REPORT_RENDERERS;
  if (override) return path.resolve(override);
  for (const rel of DISPLAY_ENTRY_CANDIDATES) {
    const p = path.join(DIST_SRC, rel);
    if (existsSync(p)) return p;
  }
  return null;
}

export interface BrowserBundle {
  code: string;
  /** The display renderers' entry that was bundled, or null (fallbacks only). */
  renderers: string | null;
}

let cached: Promise<BrowserBundle> | null = null;

export function browserBundle(): Promise<BrowserBundle> {
  cached ??= build();
  return cached;
}

async function build(): Promise<BrowserBundle> {
  const esbuild = await import('esbuild');
  const hydrate = path.join(HERE, 'browser', 'hydrate.js');
  const renderers = displayEntry();
  const contents = renderers
    ? `import { hydrate } from ${JSON.stringify(hydrate)};\nimport * as display from ${JSON.stringify(renderers)};\n` +
      `hydrate({ renderers: display.renderers ?? display.default?.renderers ?? {} }).catch((e) => console.error(e));\n`
    : `import { hydrate } from ${JSON.stringify(hydrate)};\nhydrate().catch((e) => console.error(e));\n`;
  const result = await esbuild.build({
    stdin: { contents, resolveDir: HERE, sourcefile: 'report-entry.js', loader: 'js' },
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    legalComments: 'none',
    logLevel: 'silent',
    plugins: [
      {
        name: 'plotly-global',
        setup(b) {
          b.onResolve({ filter: /^plotly\.js(-dist(-min)?)?(\/.*)?$/ }, (args) => ({
            path: args.path,
            namespace: 'plotly-global',
          }));
          b.onLoad({ filter: /.*/, namespace: 'plotly-global' }, () => ({
            contents: 'module.exports = window.Plotly;',
            loader: 'js',
          }));
        },
      },
    ],
  });
  return { code: result.outputFiles[0]!.text, renderers };
}
