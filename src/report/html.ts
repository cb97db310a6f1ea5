/**
 * A notebook (executed, already redacted) → one self-contained report.html: the header stamp,
 * markdown cells rendered, code cells with their outputs, vendor outputs handed to the display
 * renderers (their text/html or image fallback shown until then, and for ever where none is
 * bundled), a partial plotly.js (the trace types we draw) inlined once only when a plot is present, and the data needed to re-run it
 * embedded as JSON. A Content-Security-Policy forbids every network load, so a report that
 * renders here renders offline.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { AnsiUp } from 'ansi_up';
import MarkdownIt from 'markdown-it';
import { browserBundle } from './bundle.js';
import { STAMP_MIME, type StampFacts } from './facts.js';
import { METRICS_MIME, type MetricTable } from './metrics.js';
import { joinText, type Cell, type MimeBundle, type Notebook, type Output } from './nbformat.js';
import type { Params } from './params.js';
import type { Stamp } from './stamp.js';

export const PLOTLY_MIME = 'application/vnd.plotly.v1+json';
const VENDOR_PREFIX = 'application/vnd.vqalab.';

/** What report.html embeds for `vqalab report verify` and for readers who want the notebook. */
export interface ReportData {
  schema: 'vqalab.report.v1';
  title: string;
  stamp: Partial<Stamp> & { facts: StampFacts };
  source: {
    /** The notebook as given (outputs stripped, no injected cell): re-run it with `parameters`. */
    notebook: Notebook;
    notebookName: string;
    parameters: Params;
    kernel: string;
  };
  /** The metrics as recorded by this run (see metrics.ts); verify compares a re-run with these. */
  metrics: MetricTable;
}

export interface RenderOptions {
  /** Inline the browser bundle (hydration + display renderers); default true. */
  scripts?: boolean;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside <script>: no `</script` or `<!--` can end or confuse the element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

function inlineScript(code: string): string {
  return `<script>${code.replace(/<\/script/gi, '<\\/script')}</script>`;
}

const md = new MarkdownIt({ html: true, linkify: true, typographer: false });

function text(v: unknown): string {
  return typeof v === 'string' ? v : Array.isArray(v) ? v.join('') : JSON.stringify(v, null, 2);
}

class OutputRenderer {
  plots = 0;
  vendor = 0;
  private readonly ansi = new AnsiUp();

  constructor() {
    this.ansi.use_classes = true;
  }

  ansiHtml(s: string): string {
    return this.ansi.ansi_to_html(s);
  }

  /** The best fallback in a bundle, as HTML (what viewers without our renderers show). */
  private fallback(data: MimeBundle, metadata: Record<string, any>): string {
    if (data['text/html'] !== undefined) return `<div class="vq-html">${text(data['text/html'])}</div>`;
    for (const mime of ['image/png', 'image/jpeg', 'image/gif', 'image/webp']) {
      if (data[mime] !== undefined) {
        const meta = (metadata?.[mime] ?? {}) as { width?: number; height?: number };
        const size = `${meta.width ? ` width="${Number(meta.width)}"` : ''}${meta.height ? ` height="${Number(meta.height)}"` : ''}`;
        const alt =
          typeof data['text/plain'] === 'string' || Array.isArray(data['text/plain'])
            ? text(data['text/plain']).slice(0, 200)
            : 'output image';
        return `<img class="vq-image" src="data:${mime};base64,${text(data[mime]).replace(/\s/g, '')}"${size} alt="${escapeHtml(alt)}">`;
      }
    }
    if (data['image/svg+xml'] !== undefined) return `<div class="vq-svg">${text(data['image/svg+xml'])}</div>`;
    if (data['text/markdown'] !== undefined)
      return `<div class="vq-markdown">${md.render(text(data['text/markdown']))}</div>`;
    if (data['text/latex'] !== undefined) return `<pre class="vq-latex">${escapeHtml(text(data['text/latex']))}</pre>`;
    if (data['application/json'] !== undefined)
      return `<pre class="vq-json">${escapeHtml(JSON.stringify(data['application/json'], null, 2))}</pre>`;
    if (data['text/plain'] !== undefined)
      return `<pre class="vq-text">${this.ansiHtml(text(data['text/plain']))}</pre>`;
    return `<pre class="vq-text vq-unsupported">[no viewable MIME type among ${escapeHtml(Object.keys(data).join(', '))}]</pre>`;
  }

  bundle(data: MimeBundle, metadata: Record<string, any>): string {
    const vendor = Object.keys(data).find((m) => m.startsWith(VENDOR_PREFIX));
    if (vendor) {
      this.vendor++;
      if (vendor === METRICS_MIME) this.plots++;
      return `<div class="vq-vendor" data-mime="${escapeHtml(vendor)}"><script type="application/json" class="vq-payload">${scriptJson(data[vendor])}</script><div class="vq-fallback">${this.fallback(data, metadata)}</div></div>`;
    }
    if (data[PLOTLY_MIME] !== undefined) {
      this.plots++;
      return `<div class="vq-plotly"><script type="application/json" class="vq-payload">${scriptJson(data[PLOTLY_MIME])}</script><div class="vq-plot"></div><div class="vq-fallback">${this.fallback(data, metadata)}</div></div>`;
    }
    return this.fallback(data, metadata);
  }

  output(o: Output, count: number | null): string {
    switch (o.output_type) {
      case 'stream':
        return `<pre class="vq-stream vq-${o.name}">${this.ansiHtml(joinText(o.text))}</pre>`;
      case 'error':
        return `<div class="vq-error" role="alert"><pre>${this.ansiHtml(o.traceback.length ? o.traceback.join('\n') : `${o.ename}: ${o.evalue}`)}</pre></div>`;
      case 'execute_result':
        return `<div class="vq-result"><div class="vq-prompt vq-out">Out[${count ?? ' '}]:</div><div class="vq-body">${this.bundle(o.data, o.metadata)}</div></div>`;
      default:
        return this.bundle(o.data, o.metadata);
    }
  }
}

function markdownCell(cell: Cell): string {
  let src = joinText(cell.source);
  const attachments = (cell as { attachments?: Record<string, MimeBundle> }).attachments ?? {};
  // attachment:NAME → the attached image as a data URL, so pasted images survive the export.
  src = src.replace(/attachment:([^\s)"']+)/g, (m, name: string) => {
    const bundle = attachments[decodeURIComponent(name)];
    const mime = bundle && Object.keys(bundle).find((k) => k.startsWith('image/'));
    return mime ? `data:${mime};base64,${text(bundle[mime]).replace(/\s/g, '')}` : m;
  });
  return md.render(src);
}

/**
 * Report facts (`recordFacts`, or a Python cell writing STAMP_MIME) belong in the header stamp,
 * not in the body: such an output is left out, whatever fallback an older notebook saved with it.
 */
function factsOutput(o: Output): boolean {
  return (o.output_type === 'display_data' || o.output_type === 'execute_result') && o.data[STAMP_MIME] !== undefined;
}

function renderCell(cell: Cell, index: number, r: OutputRenderer): string {
  const tags = Array.isArray(cell.metadata?.tags) ? (cell.metadata.tags as string[]) : [];
  const tagHtml = tags.length
    ? `<div class="vq-tags">${tags.map((t) => `<span class="vq-tag">${escapeHtml(t)}</span>`).join('')}</div>`
    : '';
  if (cell.cell_type === 'markdown')
    return `<section class="vq-cell vq-markdown-cell" id="cell-${index}">${markdownCell(cell)}</section>`;
  if (cell.cell_type === 'raw')
    return `<section class="vq-cell vq-raw-cell" id="cell-${index}"><pre>${escapeHtml(joinText(cell.source))}</pre></section>`;
  const failed = cell.outputs.some((o) => o.output_type === 'error');
  const outputs = cell.outputs
    .filter((o) => !factsOutput(o))
    .map((o) => `<div class="vq-output">${r.output(o, cell.execution_count)}</div>`)
    .join('');
  return (
    `<section class="vq-cell vq-code-cell${failed ? ' vq-failed' : ''}" id="cell-${index}" data-tags="${escapeHtml(tags.join(' '))}">` +
    `<div class="vq-input"><div class="vq-prompt">In&nbsp;[${cell.execution_count ?? '&nbsp;'}]:</div><div class="vq-body">${tagHtml}<pre class="vq-source"><code>${escapeHtml(joinText(cell.source))}</code></pre></div></div>` +
    (outputs
      ? `<div class="vq-outputs"><div class="vq-prompt"></div><div class="vq-body">${outputs}</div></div>`
      : '') +
    `</section>`
  );
}

// ---- the stamp ---------------------------------------------------------------------------------

function missing(what = 'not recorded'): string {
  return `<span class="vq-missing">${escapeHtml(what)}</span>`;
}

function kv(rows: [string, string][]): string {
  return `<table class="vq-kv">${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${v}</td></tr>`).join('')}</table>`;
}

function jsonBlock(v: unknown): string {
  return `<pre class="vq-json">${escapeHtml(JSON.stringify(v, null, 2))}</pre>`;
}

const WIDE = new Set(['datasets', 'models']);

function section(key: string, title: string, body: string, empty: boolean): string {
  return `<section class="vq-stamp-part${empty ? ' vq-empty' : ''}${WIDE.has(key) && !empty ? ' vq-wide' : ''}" data-stamp="${key}"><h3>${escapeHtml(title)}</h3>${body}</section>`;
}

function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(0)} MiB`;
}

export function renderStamp(stamp: ReportData['stamp']): string {
  const f = stamp.facts ?? {};
  const params = Object.entries(stamp.parameters ?? {});
  const configs = Object.entries(f.configs ?? {});
  const seeds = Object.entries(f.seeds ?? {});
  const datasets = f.datasets ?? [];
  const models = f.models ?? [];
  const versions: [string, string][] = [
    ...(stamp.software
      ? ([
          ['node', escapeHtml(stamp.software.node)],
          ['vqalab', escapeHtml(stamp.software.vqalab)],
        ] as [string, string][])
      : []),
    ...Object.entries(f.versions ?? {}).map(([k, v]) => [k, escapeHtml(String(v))] as [string, string]),
    ...(stamp.kernel?.implementation
      ? ([
          [
            `kernel ${stamp.kernel.implementation}`,
            escapeHtml(
              `${stamp.kernel.implementationVersion ?? ''} (${stamp.kernel.language ?? ''} ${stamp.kernel.languageVersion ?? ''})`,
            ),
          ],
        ] as [string, string][])
      : []),
  ];
  const packages = Object.entries(stamp.software?.packages ?? {});
  const git = stamp.git;
  const host = stamp.host;
  const devices = f.devices ?? [];
  const parts = [
    section(
      'parameters',
      'Parameters',
      params.length
        ? kv(params.map(([k, v]) => [k, `<code>${escapeHtml(JSON.stringify(v))}</code>`]))
        : missing('none (notebook defaults)'),
      false,
    ),
    section(
      'configs',
      'Configs',
      configs.length
        ? configs.map(([k, v]) => `<details open><summary>${escapeHtml(k)}</summary>${jsonBlock(v)}</details>`).join('')
        : missing(),
      !configs.length,
    ),
    section(
      'seeds',
      'Seeds',
      seeds.length ? kv(seeds.map(([k, v]) => [k, escapeHtml(String(v))])) : missing(),
      !seeds.length,
    ),
    section(
      'datasets',
      'Datasets',
      datasets.length
        ? `<table class="vq-table"><tr><th>name</th><th>fingerprint</th><th>rows</th><th>path</th></tr>${datasets.map((d) => `<tr><td>${escapeHtml(d.name)}${d.split ? ` (${escapeHtml(d.split)})` : ''}</td><td><code>${escapeHtml(d.fingerprint)}</code></td><td>${d.rows ?? ''}</td><td>${escapeHtml(d.path ?? '')}</td></tr>`).join('')}</table>`
        : missing(),
      !datasets.length,
    ),
    section(
      'models',
      'Models and checkpoints',
      models.length
        ? `<table class="vq-table"><tr><th>name</th><th>hash</th><th>role</th><th>path</th></tr>${models.map((m) => `<tr><td>${escapeHtml(m.name)}${m.step !== undefined ? ` @${m.step}` : ''}</td><td><code>${escapeHtml(m.hash)}</code></td><td>${escapeHtml(m.role ?? '')}</td><td>${escapeHtml(m.path ?? '')}</td></tr>`).join('')}</table>`
        : missing(),
      !models.length,
    ),
    section(
      'versions',
      'Versions',
      (versions.length ? kv(versions) : missing()) +
        (packages.length
          ? `<details><summary>${packages.length} packages</summary>${kv(packages.map(([k, v]) => [k, escapeHtml(v)]))}</details>`
          : ''),
      !versions.length,
    ),
    section(
      'git',
      'Git',
      git
        ? git.commit
          ? kv([
              ['commit', `<code>${escapeHtml(git.commit)}</code>`],
              ['branch', escapeHtml(git.branch ?? '')],
              [
                'dirty',
                git.dirty
                  ? `<strong class="vq-dirty">yes</strong> (${git.modified ?? 0} modified, ${git.untracked ?? 0} untracked)`
                  : 'no',
              ],
            ])
          : missing('not a git work tree')
        : missing(),
      !git?.commit,
    ),
    section(
      'host',
      'CPU / GPU',
      host
        ? kv([
            ['cpu', escapeHtml(`${host.cpu.model} × ${host.cpu.cores}`)],
            ['memory', formatBytes(host.memoryBytes)],
            [
              'gpu',
              host.gpus.length
                ? host.gpus
                    .map((g) =>
                      escapeHtml(
                        `${g.name}${g.memory ? ` (${g.memory})` : ''}${g.driver ? `, driver ${g.driver}` : ''}`,
                      ),
                    )
                    .join('<br>')
                : 'none on this host',
            ],
            [
              'devices used',
              devices.length
                ? devices
                    .map((d) => escapeHtml(`${d.kind}${d.name ? `: ${d.name}` : ''}${d.count ? ` × ${d.count}` : ''}`))
                    .join('<br>')
                : missing(),
            ],
            ['os', escapeHtml(`${host.platform} ${host.release} ${host.arch} (${host.hostname})`)],
          ])
        : missing(),
      !host,
    ),
    section(
      'time',
      'Time',
      stamp.time
        ? kv([
            ['start', escapeHtml(stamp.time.start)],
            ['end', escapeHtml(stamp.time.end)],
            ['duration', `${stamp.time.durationSeconds.toFixed(1)} s`],
          ])
        : missing(),
      !stamp.time,
    ),
  ];
  if (f.metrics && Object.keys(f.metrics).length)
    parts.push(
      section(
        'metrics',
        'Recorded metrics',
        kv(Object.entries(f.metrics).map(([k, v]) => [k, escapeHtml(String(v))])),
        false,
      ),
    );
  if (f.notes && Object.keys(f.notes).length)
    parts.push(
      section('notes', 'Notes', kv(Object.entries(f.notes).map(([k, v]) => [k, escapeHtml(String(v))])), false),
    );
  return `<div class="vq-stamp-grid">${parts.join('')}</div>`;
}

// ---- the page ----------------------------------------------------------------------------------

const CSP =
  "default-src 'none'; img-src data: blob:; media-src data: blob:; font-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'unsafe-eval' blob:; worker-src blob:; connect-src 'none'";

const require = createRequire(import.meta.url);
/**
 * The trace types the inlined plotly.js draws. Reports inline plotly.js's own "basic" partial
 * bundle (scatter, bar, pie: 1.2 MB instead of 4.8 MB for the full bundle); everything vqalab draws
 * is a scatter trace (lines or markers). A plot of another type keeps its static fallback and
 * says so (see browser/hydrate.ts).
 */
export const PLOTLY_TRACE_TYPES = ['scatter', 'bar', 'pie'] as const;
let plotlySource: string | null = null;
function plotlyJs(): string {
  plotlySource ??= readFileSync(require.resolve('plotly.js-basic-dist-min/plotly-basic.min.js'), 'utf8');
  return plotlySource;
}

export interface RenderedReport {
  html: string;
  plots: number;
  vendorOutputs: number;
  plotlyInlined: boolean;
  /** The display renderers bundled (null: fallbacks only). */
  renderers: string | null;
}

export async function renderReport(nb: Notebook, data: ReportData, opts: RenderOptions = {}): Promise<RenderedReport> {
  const r = new OutputRenderer();
  const cells = nb.cells.map((c, i) => renderCell(c, i, r)).join('\n');
  const run = data.stamp.run;
  const banner =
    run && run.status !== 'ok'
      ? `<div class="vq-banner vq-banner-error" role="alert">The run stopped${run.failedCell !== undefined ? ` at <a href="#cell-${run.failedCell}">cell ${run.failedCell}</a>` : ''}: ${escapeHtml(run.error ?? run.status)}</div>`
      : run &&
          run.allowErrors &&
          nb.cells.some((c) => c.cell_type === 'code' && c.outputs.some((o) => o.output_type === 'error'))
        ? `<div class="vq-banner vq-banner-warn" role="status">Ran with --allow-errors: some cells failed (marked in red).</div>`
        : '';
  const scripts = opts.scripts ?? true;
  const bundle = scripts ? await browserBundle() : null;
  const plotlyInlined = scripts && r.plots > 0;
  const title = escapeHtml(data.title);
  const html = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<meta name="generator" content="vqalab report ${escapeHtml(data.stamp.software?.vqalab ?? '')}">
<link rel="icon" href="data:,">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
<header class="vq-header">
<h1>${title}</h1>
<p class="vq-sub">${escapeHtml(data.source.notebookName)} · kernel <code>${escapeHtml(data.source.kernel)}</code>${data.stamp.time ? ` · ${escapeHtml(data.stamp.time.start)} · ${data.stamp.time.durationSeconds.toFixed(1)} s` : ''}${data.stamp.git?.commit ? ` · git <code>${escapeHtml(data.stamp.git.commit.slice(0, 12))}</code>${data.stamp.git.dirty ? ' (dirty)' : ''}` : ''}</p>
${banner}
<details class="vq-stamp" open><summary>Stamp</summary>${renderStamp(data.stamp)}</details>
<details class="vq-rerun"><summary>Re-run this report</summary><p>Check it: <code>vqalab report verify ${escapeHtml('report.html')}</code> re-runs the embedded notebook with the same parameters and compares ${Object.keys(data.metrics).length} recorded metrics (exactly on CPU, within tolerances on GPU).</p><p><a id="vq-download-notebook" download="${escapeHtml(data.source.notebookName)}">Download the source notebook</a></p></details>
</header>
<main class="vq-notebook">
${cells}
</main>
<script type="application/json" id="vqalab-report">${scriptJson(data)}</script>
${plotlyInlined ? `<script type="application/json" id="vqalab-plotly-traces">${JSON.stringify(PLOTLY_TRACE_TYPES)}</script>\n${inlineScript(plotlyJs())}` : ''}
${bundle ? inlineScript(bundle.code) : ''}
</body>
</html>
`;
  return { html, plots: r.plots, vendorOutputs: r.vendor, plotlyInlined, renderers: bundle?.renderers ?? null };
}

/** The embedded report data of a report.html (for verify). */
export function readReportData(html: string, where: string): ReportData {
  const m = /<script type="application\/json" id="vqalab-report">([\s\S]*?)<\/script>/.exec(html);
  if (!m) throw new Error(`${where}: no embedded report data (is it a vqalab report.html?)`);
  let data: ReportData;
  try {
    data = JSON.parse(m[1]!) as ReportData;
  } catch (err) {
    throw new Error(`${where}: the embedded report data is not valid JSON: ${(err as Error).message}`);
  }
  if (data.schema !== 'vqalab.report.v1')
    throw new Error(`${where}: unknown report schema ${JSON.stringify(data.schema)} (expected vqalab.report.v1)`);
  return data;
}

const STYLE = `
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--panel:#f6f8fa;--border:#d1d9e0;--accent:#0969da;--err-bg:#ffebe9;--err:#cf222e;--warn-bg:#fff8c5;--code:#f6f8fa;color-scheme:light}
html[data-theme="dark"]{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--panel:#151b23;--border:#3d444d;--accent:#4493f8;--err-bg:#3c1618;--err:#ff7b72;--warn-bg:#3a3000;--code:#151b23;color-scheme:dark}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
.vq-header,.vq-notebook{max-width:1100px;margin:0 auto;padding:0 24px}
.vq-header{padding-top:24px}
h1{font-size:26px;margin:0 0 4px}
.vq-sub{color:var(--muted);margin:0 0 12px}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
pre{margin:0;white-space:pre-wrap;word-break:break-word}
details.vq-stamp,details.vq-rerun{border:1px solid var(--border);border-radius:6px;background:var(--panel);margin:8px 0;padding:6px 12px}
details>summary{cursor:pointer;font-weight:600}
.vq-stamp-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:8px 24px;padding:8px 0}
.vq-stamp-part.vq-wide{grid-column:1/-1}
.vq-stamp-part h3{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:8px 0 4px}
.vq-stamp-part .vq-json{max-height:240px;overflow:auto;background:var(--bg);border:1px solid var(--border);border-radius:4px;padding:6px}
.vq-missing{color:var(--muted);font-style:italic}
.vq-dirty{color:var(--err)}
table.vq-kv,table.vq-table{border-collapse:collapse;font-size:13px}
.vq-kv th{text-align:left;font-weight:500;color:var(--muted);padding:1px 12px 1px 0;vertical-align:top;white-space:nowrap}
.vq-kv td{padding:1px 0;word-break:break-all}
.vq-table th,.vq-table td{border-bottom:1px solid var(--border);padding:2px 8px 2px 0;text-align:left;word-break:break-all}
.vq-banner{border-radius:6px;padding:8px 12px;margin:8px 0}
.vq-banner-error{background:var(--err-bg);color:var(--err);border:1px solid var(--err)}
.vq-banner-warn{background:var(--warn-bg);border:1px solid var(--border)}
.vq-cell{margin:10px 0}
.vq-markdown-cell{padding:0 0 0 96px}
.vq-markdown-cell img{max-width:100%}
.vq-input,.vq-outputs,.vq-result{display:flex;gap:8px}
.vq-prompt{flex:0 0 88px;text-align:right;color:var(--muted);font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;padding-top:6px}
.vq-out{color:#d1242f}
.vq-body{flex:1;min-width:0}
.vq-source{background:var(--code);border:1px solid var(--border);border-radius:4px;padding:6px 8px;overflow-x:auto}
.vq-failed .vq-source{border-color:var(--err)}
.vq-outputs .vq-body{padding:4px 0}
.vq-output{margin:2px 0;overflow-x:auto}
.vq-stream{padding:2px 0}
.vq-stderr{background:var(--err-bg)}
.vq-error pre{background:var(--err-bg);padding:6px 8px;border-radius:4px}
.vq-image{max-width:100%;height:auto}
.vq-html table{border-collapse:collapse}
.vq-html th,.vq-html td{border:1px solid var(--border);padding:2px 6px}
.vq-tags{margin-bottom:2px}.vq-tag{display:inline-block;font-size:11px;border:1px solid var(--border);border-radius:10px;padding:0 6px;margin-right:4px;color:var(--muted)}
.vq-render-error{background:var(--err-bg);color:var(--err);padding:4px 8px;border-radius:4px;margin-bottom:4px}
.vq-plot{min-height:360px}
.vq-plotly:not(.vq-rendered) .vq-plot{display:none}
.ansi-black-fg{color:#3e424d}.ansi-red-fg{color:#e75c58}.ansi-green-fg{color:#00a250}.ansi-yellow-fg{color:#b8860b}.ansi-blue-fg{color:#208ffb}.ansi-magenta-fg{color:#d160c4}.ansi-cyan-fg{color:#60c6c8}.ansi-white-fg{color:#c5c1b4}
.ansi-bright-black-fg{color:#767676}.ansi-bright-red-fg{color:#ff6e67}.ansi-bright-green-fg{color:#2ea043}.ansi-bright-yellow-fg{color:#d29922}.ansi-bright-blue-fg{color:#539bf5}.ansi-bright-magenta-fg{color:#d2a8ff}.ansi-bright-cyan-fg{color:#56d4dd}.ansi-bright-white-fg{color:#f0f6fc}
.ansi-red-bg{background:#e75c58}.ansi-green-bg{background:#00a250}.ansi-yellow-bg{background:#ddb62b}.ansi-blue-bg{background:#208ffb}
@media print{details{border:none}.vq-rerun{display:none}}
`;
