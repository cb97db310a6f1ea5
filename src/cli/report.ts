/** `vqalab report run|export|verify`: reproducible notebook reports (see docs/report.md). */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../util/fs.js';
import { formatDiffs } from '../report/metrics.js';
import { parseParamArg, type Params } from '../report/params.js';
import { runNotebook, writeReport, exportNotebook } from '../report/runner.js';
import { verifyReport } from '../report/verify.js';
import { dispatchSubcommand, type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const RUN_USAGE = `Usage: vqalab report run NOTEBOOK --out DIR [options]

Execute NOTEBOOK headless (no browser, no Python in the runner) and write DIR/NOTEBOOK (executed)
and DIR/report.html (self-contained). A failing cell stops the run; its error is in the report.

Options:
  --param KEY=VALUE    set a parameter (repeatable); values are typed: 3, 0.5, true, null,
                       [1,2], {"a":1}, "quoted"; anything else is a string. Injected after the
                       cell tagged "parameters" in a cell tagged "injected-parameters".
  --out DIR            output directory (required)
  --kernel NAME        kernelspec to use (default: the notebook's metadata.kernelspec.name)
  --prefix P           also look for kernelspecs in P/share/jupyter (repeatable)
  --allow-errors       keep running after a failing cell and exit 0
  --timeout SEC        interrupt a cell running longer than SEC seconds (default: none)
  --startup-timeout SEC  give up when the kernel is not ready after SEC seconds (default 60)
  -q, --quiet          no progress lines
`;

const EXPORT_USAGE = `Usage: vqalab report export NOTEBOOK.ipynb [--out FILE]

Turn an already executed notebook into the same self-contained HTML report, without running it.
Default output: NOTEBOOK.html next to the notebook.
`;

const VERIFY_USAGE = `Usage: vqalab report verify REPORT.html [options]

Re-run the notebook embedded in REPORT.html with its recorded parameters and compare the recorded
metrics: exactly for CPU runs, within tolerances for GPU runs. Exit 0 when they match, 1 with a
table of differences when not.

Options:
  --kernel NAME        kernelspec for the re-run (default: the one the report recorded)
  --prefix P           also look for kernelspecs in P/share/jupyter (repeatable)
  --param KEY=VALUE    supply a parameter the report redacted (a secret), or override one
  --rtol X, --atol X   tolerance for GPU runs (default rtol 1e-3, atol 1e-5; per-metric
                       tolerances recorded by the run take precedence)
  --out DIR            keep the re-run's notebook and report in DIR
  --timeout SEC        per-cell limit for the re-run
  -q, --quiet          no progress lines
`;

function seconds(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`${name} expects a positive number of seconds, got ${JSON.stringify(v)}`);
  return n * 1000;
}

function paramsOf(list: string[] | undefined): Params {
  const params: Params = {};
  for (const p of list ?? []) {
    const [k, v] = parseParamArg(p);
    params[k] = v;
  }
  return params;
}

/** Ctrl-C: the first interrupts the running cell and ends the run (partial report kept); a second exits. */
function interruptible(): { signal: AbortSignal; dispose(): void } {
  const ac = new AbortController();
  const onSig = () => {
    if (ac.signal.aborted) process.exit(130);
    process.stderr.write('\ninterrupting the running cell (Ctrl-C again to quit at once)\n');
    ac.abort();
  };
  process.on('SIGINT', onSig);
  return { signal: ac.signal, dispose: () => process.off('SIGINT', onSig) };
}

const run: Command = {
  name: 'run',
  summary: 'execute a notebook with parameters into an .ipynb and a self-contained report.html',
  usage: RUN_USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        param: { type: 'string', multiple: true },
        out: { type: 'string' },
        kernel: { type: 'string' },
        prefix: { type: 'string', multiple: true },
        'allow-errors': { type: 'boolean' },
        timeout: { type: 'string' },
        'startup-timeout': { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
      },
    });
    if (positionals.length !== 1)
      throw new UsageError(`expected one NOTEBOOK, got ${positionals.length}\n\n${RUN_USAGE}`);
    if (!values.out) throw new UsageError(`--out DIR is required\n\n${RUN_USAGE}`);
    const notebook = positionals[0]!;
    const log = values.quiet ? undefined : (l: string) => process.stderr.write(`report: ${l}\n`);
    const sig = interruptible();
    try {
      const result = await runNotebook({
        notebook,
        params: paramsOf(values.param),
        kernel: values.kernel,
        search: { prefixes: values.prefix },
        allowErrors: values['allow-errors'],
        cellTimeoutMs: seconds('--timeout', values.timeout),
        startupTimeoutMs: seconds('--startup-timeout', values['startup-timeout']),
        signal: sig.signal,
        log,
      });
      const written = await writeReport(result, notebook, values.out);
      log?.(
        `wrote ${written.ipynb} and ${written.html} (${(written.htmlBytes / 1024).toFixed(0)} KiB${written.rendered.plotlyInlined ? ', plotly inlined' : ''}${result.redactions ? `, ${result.redactions} secret(s) redacted` : ''}) in ${result.stamp.time.durationSeconds.toFixed(1)} s`,
      );
      if (result.status === 'interrupted') return 130;
      if (result.status === 'error') {
        process.stderr.write(`vqalab report run: cell ${result.failedCell} failed: ${result.stamp.run.error}\n`);
        return 1;
      }
      return 0;
    } finally {
      sig.dispose();
    }
  },
};

const exportCmd: Command = {
  name: 'export',
  summary: 'turn an executed notebook into the same self-contained HTML, without running it',
  usage: EXPORT_USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { out: { type: 'string' } },
    });
    if (positionals.length !== 1) throw new UsageError(`expected one NOTEBOOK.ipynb\n\n${EXPORT_USAGE}`);
    const nb = positionals[0]!;
    const out = values.out ?? path.join(path.dirname(nb), `${path.basename(nb, '.ipynb')}.html`);
    const { html, redactions } = await exportNotebook(nb);
    await writeFileAtomic(out, html);
    process.stderr.write(
      `report: wrote ${out} (${(Buffer.byteLength(html) / 1024).toFixed(0)} KiB${redactions ? `, ${redactions} secret(s) redacted` : ''})\n`,
    );
    return 0;
  },
};

const verify: Command = {
  name: 'verify',
  summary: 're-run a report and compare its recorded metrics',
  usage: VERIFY_USAGE,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        kernel: { type: 'string' },
        prefix: { type: 'string', multiple: true },
        param: { type: 'string', multiple: true },
        rtol: { type: 'string' },
        atol: { type: 'string' },
        out: { type: 'string' },
        timeout: { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
      },
    });
    if (positionals.length !== 1) throw new UsageError(`expected one REPORT.html\n\n${VERIFY_USAGE}`);
    const tol = (name: string, v: string | undefined) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0)
        throw new UsageError(`--${name} expects a non-negative number, got ${JSON.stringify(v)}`);
      return n;
    };
    const tolerance = {
      ...(values.rtol !== undefined ? { rtol: tol('rtol', values.rtol) } : {}),
      ...(values.atol !== undefined ? { atol: tol('atol', values.atol) } : {}),
    };
    const log = values.quiet ? undefined : (l: string) => process.stderr.write(`verify: ${l}\n`);
    const sig = interruptible();
    try {
      const r = await verifyReport(positionals[0]!, {
        kernel: values.kernel,
        search: { prefixes: values.prefix },
        params: paramsOf(values.param),
        tolerance,
        outDir: values.out,
        cellTimeoutMs: seconds('--timeout', values.timeout),
        signal: sig.signal,
        log,
      });
      const mode = r.gpu ? 'within GPU tolerances' : 'exactly (CPU run)';
      if (r.ok) {
        process.stdout.write(`verified: ${r.compared} metrics match ${mode}\n`);
        return 0;
      }
      if (r.problem) process.stdout.write(`NOT verified: ${r.problem}\n`);
      if (r.diffs.length)
        process.stdout.write(
          `NOT verified: ${r.diffs.length} of ${r.compared + r.diffs.filter((d) => d.reason !== 'differs' && d.reason !== 'outside tolerance').length} metrics differ (compared ${mode})\n\n${formatDiffs(r.diffs)}\n`,
        );
      return 1;
    } finally {
      sig.dispose();
    }
  },
};

const GROUP_USAGE = `Usage: vqalab report <command> [options]

Reproducible reports: run a notebook headless with parameters into a self-contained HTML report,
export an executed notebook, and verify that a report re-runs to the same metrics.

Commands:
  run      ${run.summary}
  export   ${exportCmd.summary}
  verify   ${verify.summary}
`;

export const reportCommand: Command = {
  name: 'report',
  summary: 'run notebooks into self-contained, verifiable HTML reports',
  usage: GROUP_USAGE,
  run: (argv) => dispatchSubcommand('report', GROUP_USAGE, [run, exportCmd, verify], argv),
};
