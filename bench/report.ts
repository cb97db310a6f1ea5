/**
 * Report benchmark: time to run a notebook into a report and to export an executed notebook, and
 * the report's size, against the Python baseline measured in the same run on the same notebook
 * (Debian's nbconvert: `--execute --to html` and `--to html`).
 *
 *   npm run build && node dist/bench/report.js [--notebook NB.ipynb] [--repeat N]
 *
 * Default notebook: the ipykernel demo of test/report (parameters, facts, a live metrics display,
 * a plotly plot, a sample card). Pass the quickstart notebook once the vqalab kernel runs it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { exportNotebook, runNotebook, writeReport } from '../src/report/runner.js';
import { demoNotebook } from '../test/report/notebooks.js';

const { values } = parseArgs({ options: { notebook: { type: 'string' }, repeat: { type: 'string', default: '3' } } });
const repeat = Math.max(1, Number(values.repeat));
const dir = mkdtempSync(path.join(os.tmpdir(), 'vq-bench-report-'));
const nbPath = path.join(dir, 'bench.ipynb');
writeFileSync(nbPath, values.notebook ? readFileSync(values.notebook) : JSON.stringify(demoNotebook()));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function time<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await fn();
  return [(performance.now() - t0) / 1000, r];
}

try {
  const runs: number[] = [],
    exports: number[] = [],
    baseRuns: number[] = [],
    baseExports: number[] = [];
  let size = 0,
    baseSize = 0,
    plotly = false;
  for (let i = 0; i < repeat; i++) {
    const out = path.join(dir, `out${i}`);
    const [tRun, written] = await time(async () => writeReport(await runNotebook({ notebook: nbPath }), nbPath, out));
    runs.push(tRun);
    size = written.htmlBytes;
    plotly = written.rendered.plotlyInlined;
    const [tExport] = await time(() => exportNotebook(written.ipynb));
    exports.push(tExport);
    const [tBase] = await time(() =>
      execFileSync(
        '/usr/bin/python3',
        ['-m', 'nbconvert', '--execute', '--to', 'html', '--output', `base${i}.html`, '--output-dir', dir, nbPath],
        { stdio: 'pipe' },
      ),
    );
    baseRuns.push(tBase);
    const [tBaseExport] = await time(() =>
      execFileSync(
        '/usr/bin/python3',
        ['-m', 'nbconvert', '--to', 'html', '--output', `basex${i}.html`, '--output-dir', dir, written.ipynb],
        { stdio: 'pipe' },
      ),
    );
    baseExports.push(tBaseExport);
    baseSize = statSync(path.join(dir, `base${i}.html`)).size;
  }
  const row = (label: string, ours: number, base: number, unit: string, fmt: (n: number) => string) =>
    `${label.padEnd(34)} ${fmt(ours).padStart(10)} ${unit}   nbconvert ${fmt(base).padStart(10)} ${unit}   ratio ${(ours / base).toFixed(2)}×`;
  const s = (n: number) => n.toFixed(2);
  console.log(
    `report benchmark: ${values.notebook ?? 'test/report demo notebook (ipykernel)'}, median of ${repeat}, ${os.cpus().length} cores`,
  );
  console.log(row('run + write .ipynb + report.html', median(runs), median(baseRuns), 's', s));
  console.log(row('export an executed notebook', median(exports), median(baseExports), 's', s));
  console.log(
    row(`report size${plotly ? ' (plotly.js inlined)' : ''}`, size / 1024, baseSize / 1024, 'KiB', (n) => n.toFixed(0)),
  );
  const plotlyKiB = statSync(new URL(import.meta.resolve('plotly.js-basic-dist-min')).pathname).size / 1024;
  if (plotly)
    console.log(
      `${'report size without plotly.js'.padEnd(34)} ${(size / 1024 - plotlyKiB).toFixed(0).padStart(10)} KiB`,
    );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
