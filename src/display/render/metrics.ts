/**
 * Metrics dashboard: a progress bar with ETA, one panel per metric with every run overlaid, and the
 * latest group. The static HTML draws each panel as inline SVG (readable without JavaScript); the
 * browser code swaps in one plotly figure built by `plotlyFigure` below, so both views plot the
 * same numbers with the same smoothing.
 */
import type { MetricsPayload, MetricsProgress, MetricsRun } from '../types.js';
import { clamp, esc, fmt, fmtDuration } from './html.js';
import { groupText, renderGroup } from './group.js';
import type { RenderOptions } from './sample.js';

export const PALETTE = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];

/** Known metric names first, in this order; anything else follows in first-seen order. */
const KNOWN_ORDER = [
  'reward',
  'accuracy',
  'kl',
  'entropy',
  'clip_ratio',
  'clip_ratio/low_mean',
  'clip_ratio/high_mean',
  'completion_length',
  'length',
  'grad_norm',
  'loss',
  'lr',
];

export function metricKeys(p: MetricsPayload): string[] {
  if (p.keys) return p.keys;
  const seen: string[] = [];
  const set = new Set<string>();
  for (const run of p.runs)
    for (const pt of run.points)
      for (const k of Object.keys(pt)) {
        if (k !== 'step' && !set.has(k)) {
          set.add(k);
          seen.push(k);
        }
      }
  const rank = (k: string) => {
    const exact = KNOWN_ORDER.indexOf(k);
    if (exact >= 0) return exact;
    const prefix = KNOWN_ORDER.findIndex((known) => k.startsWith(`${known}/`) || k.startsWith(`${known}_`));
    return prefix >= 0 ? prefix + 0.5 : KNOWN_ORDER.length;
  };
  return seen
    .map((k, i) => ({ k, i }))
    .sort((a, b) => rank(a.k) - rank(b.k) || a.i - b.i)
    .map(({ k }) => k);
}

/** The (step, value) pairs of one metric in one run, in step order. */
export function series(run: MetricsRun, key: string): { x: number[]; y: number[] } {
  const pts = run.points.filter((pt) => typeof pt[key] === 'number').sort((a, b) => a.step - b.step);
  return { x: pts.map((pt) => pt.step), y: pts.map((pt) => pt[key]!) };
}

/**
 * Exponential moving average with the start-up bias removed (TensorBoard's smoothing): weight 0
 * returns the values unchanged, 0.9 averages over roughly the last ten points.
 */
export function smooth(values: readonly number[], weight: number): number[] {
  if (weight <= 0) return values.slice();
  const out: number[] = [];
  let last = 0,
    debias = 0;
  for (const v of values) {
    last = last * weight + (1 - weight) * v;
    debias = debias * weight + (1 - weight);
    out.push(last / debias);
  }
  return out;
}

export function renderProgress(pr: MetricsProgress): string {
  const frac = pr.total > 0 ? clamp(pr.step / pr.total, 0, 1) : 0;
  const eta = pr.status === 'running' ? ` · ETA ${fmtDuration(pr.etaSeconds)}` : '';
  const label = `step ${pr.step}/${pr.total} · ${fmtDuration(pr.elapsedSeconds)} elapsed${eta} · ${pr.status}`;
  return (
    `<div class="vqa-progress vqa-status-${esc(pr.status)}"><div class="vqa-progress-bar" role="progressbar" aria-valuemin="0" ` +
    `aria-valuemax="${pr.total}" aria-valuenow="${pr.step}" aria-label="training progress"><span style="width:${(100 * frac).toFixed(1)}%"></span></div>` +
    `<span class="vqa-progress-label">${esc(label)}</span>${pr.message ? ` <span class="vqa-badge vqa-bad">${esc(pr.message)}</span>` : ''}</div>`
  );
}

function niceTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

/** A short axis label: 0.005, 0.015, 1.2, 350, 1.5e-4, 2.0e+5. */
export function tickLabel(t: number): string {
  if (t === 0) return '0';
  const a = Math.abs(t);
  const s = a < 1e-3 || a >= 1e5 ? t.toExponential(1) : String(Number(t.toPrecision(3)));
  return s.replace(/^-/, '−');
}

/** One metric as a small SVG line chart, every run overlaid. */
export function renderSvgChart(p: MetricsPayload, key: string, smoothing: number, width = 300, height = 170): string {
  const m = { l: 44, r: 8, t: 18, b: 22 };
  const all = p.runs.map((run, i) => ({ run, i, s: series(run, key) }));
  const xs = all.flatMap((a) => a.s.x),
    ys = all.flatMap((a) => a.s.y);
  const head =
    `<svg class="vqa-chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(`${key} against step`)}">` +
    `<text class="vqa-chart-title" x="${m.l}" y="12">${esc(key)}</text>`;
  if (xs.length === 0) return `${head}<text x="${m.l}" y="${height / 2}">no data yet</text></svg>`;
  let x0 = Math.min(...xs),
    x1 = Math.max(...xs),
    y0 = Math.min(...ys),
    y1 = Math.max(...ys);
  if (x1 === x0) {
    x0 -= 1;
    x1 += 1;
  }
  if (y1 === y0) {
    const d = Math.abs(y0) * 0.1 || 1;
    y0 -= d;
    y1 += d;
  }
  const px = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
  const py = (y: number) => height - m.b - ((y - y0) / (y1 - y0)) * (height - m.t - m.b);
  const grid =
    niceTicks(y0, y1, 4)
      .map(
        (t) =>
          `<line class="vqa-grid" x1="${m.l}" x2="${width - m.r}" y1="${py(t).toFixed(1)}" y2="${py(t).toFixed(1)}"/>` +
          `<text x="${m.l - 4}" y="${(py(t) + 3).toFixed(1)}" text-anchor="end">${esc(tickLabel(t))}</text>`,
      )
      .join('') +
    niceTicks(x0, x1, 4)
      .map((t) => `<text x="${px(t).toFixed(1)}" y="${height - 6}" text-anchor="middle">${esc(tickLabel(t))}</text>`)
      .join('');
  const lines = all
    .map(({ i, s }) => {
      const colour = PALETTE[i % PALETTE.length]!;
      const ys2 = smooth(s.y, smoothing);
      const pts = s.x.map((x, j) => `${px(x).toFixed(1)},${py(ys2[j]!).toFixed(1)}`).join(' ');
      return s.x.length === 1
        ? `<circle cx="${px(s.x[0]!).toFixed(1)}" cy="${py(ys2[0]!).toFixed(1)}" r="2.5" fill="${colour}"/>`
        : `<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${pts}"/>`;
    })
    .join('');
  return `${head}${grid}${lines}</svg>`;
}

export function renderLegend(p: MetricsPayload): string {
  return `<div class="vqa-legend">${p.runs.map((r, i) => `<span><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(r.name)}</span>`).join('')}</div>`;
}

export function renderMetrics(p: MetricsPayload, opts: RenderOptions = {}): string {
  const keys = metricKeys(p);
  const smoothing = p.smoothing ?? 0;
  const progress = p.progress ? renderProgress(p.progress) : '';
  const controls = opts.interactive
    ? `<div class="vqa-controls"><label>smoothing <input type="range" class="vqa-smoothing" min="0" max="0.99" step="0.01" value="${smoothing}" aria-label="smoothing"></label>` +
      `<output class="vqa-smoothing-value">${smoothing.toFixed(2)}</output></div>`
    : '';
  const charts = keys.length
    ? `<div class="vqa-charts">${keys.map((k) => renderSvgChart(p, k, smoothing)).join('')}</div>`
    : '<p class="vqa-muted">no metrics yet</p>';
  const latest = p.latestGroup ? `<div class="vqa-latest">${renderGroup(p.latestGroup, opts)}</div>` : '';
  return (
    `<div class="vqa vqa-metrics" data-vqa="metrics"><h3>${esc(p.title ?? 'Training metrics')}</h3>` +
    `<div class="vqa-progress-slot">${progress}</div>${controls}${renderLegend(p)}<div class="vqa-plot-slot">${charts}</div>` +
    `<div class="vqa-latest-slot">${latest}</div></div>`
  );
}

export interface PlotTheme {
  fg: string;
  grid: string;
  bg: string;
  font: string;
}

export const LIGHT_THEME: PlotTheme = {
  fg: '#1f2328',
  grid: '#d0d7de',
  bg: 'rgba(0,0,0,0)',
  font: 'system-ui, sans-serif',
};

/**
 * The plotly figure (data + layout) for a payload: one subplot per metric in a grid of up to three
 * columns, one trace per run (its colour fixed by run order), smoothed, with the raw values faint
 * behind when smoothing is on. `uirevision` keeps the user's zoom across live updates.
 */
export function plotlyFigure(
  p: MetricsPayload,
  smoothing: number,
  theme: PlotTheme = LIGHT_THEME,
): { data: Record<string, unknown>[]; layout: Record<string, unknown> } {
  const keys = metricKeys(p);
  const cols = Math.min(3, Math.max(1, keys.length));
  const rows = Math.max(1, Math.ceil(keys.length / cols));
  const rowHeight = 210;
  const gapX = 0.07,
    gapY = 70 / (rows * rowHeight);
  const data: Record<string, unknown>[] = [];
  const height = rows * rowHeight + 66;
  const layout: Record<string, unknown> = {
    height,
    margin: { l: 50, r: 10, t: 30, b: 56 },
    paper_bgcolor: theme.bg,
    plot_bgcolor: theme.bg,
    font: { color: theme.fg, family: theme.font, size: 11 },
    showlegend: p.runs.length > 1,
    // Below the last row's tick labels.
    legend: { orientation: 'h', x: 0, y: -30 / (height - 86), yanchor: 'top' },
    hovermode: 'x unified',
    uirevision: 'vqalab',
    annotations: [] as unknown[],
  };
  keys.forEach((key, k) => {
    const r = Math.floor(k / cols),
      c = k % cols;
    const suffix = k === 0 ? '' : String(k + 1);
    const xd = [c / cols + (c > 0 ? gapX / 2 : 0), (c + 1) / cols - (c < cols - 1 ? gapX / 2 : 0)];
    const yd = [1 - (r + 1) / rows + (r < rows - 1 ? gapY / 2 : 0), 1 - r / rows - (r > 0 ? gapY / 2 : 0) - gapY / 2];
    layout[`xaxis${suffix}`] = {
      domain: xd,
      anchor: `y${suffix}`,
      gridcolor: theme.grid,
      zerolinecolor: theme.grid,
      linecolor: theme.grid,
    };
    layout[`yaxis${suffix}`] = {
      domain: yd,
      anchor: `x${suffix}`,
      gridcolor: theme.grid,
      zerolinecolor: theme.grid,
      linecolor: theme.grid,
    };
    (layout.annotations as unknown[]).push({
      text: `<b>${esc(key)}</b>`,
      xref: 'paper',
      yref: 'paper',
      x: (xd[0]! + xd[1]!) / 2,
      y: yd[1],
      yanchor: 'bottom',
      xanchor: 'center',
      showarrow: false,
      font: { size: 12, color: theme.fg },
    });
    p.runs.forEach((run, i) => {
      const s = series(run, key);
      const colour = PALETTE[i % PALETTE.length]!;
      const axes = { xaxis: `x${suffix}`, yaxis: `y${suffix}` };
      if (smoothing > 0) {
        data.push({
          ...axes,
          type: 'scatter',
          mode: 'lines',
          x: s.x,
          y: s.y,
          name: run.name,
          legendgroup: run.name,
          showlegend: false,
          line: { color: colour, width: 1 },
          opacity: 0.25,
          hoverinfo: 'skip',
        });
      }
      data.push({
        ...axes,
        type: 'scatter',
        mode: s.x.length === 1 ? 'markers' : 'lines',
        x: s.x,
        y: smooth(s.y, smoothing),
        name: run.name,
        legendgroup: run.name,
        showlegend: k === 0,
        line: { color: colour, width: 1.8 },
        marker: { color: colour },
        hovertemplate: `${esc(run.name)}: %{y:.4g}<extra>${esc(key)}</extra>`,
      });
    });
  });
  return { data, layout };
}

export function metricsText(p: MetricsPayload): string {
  const lines: string[] = [p.title ?? 'Training metrics'];
  const pr = p.progress;
  if (pr)
    lines.push(
      `  step ${pr.step}/${pr.total}, ${fmtDuration(pr.elapsedSeconds)} elapsed${pr.status === 'running' ? `, ETA ${fmtDuration(pr.etaSeconds)}` : ''}, ${pr.status}${pr.message ? `: ${pr.message}` : ''}`,
    );
  const keys = metricKeys(p);
  for (const run of p.runs) {
    const last = [...run.points].sort((a, b) => a.step - b.step).at(-1);
    lines.push(
      `  ${run.name}: ${run.points.length} points${
        last
          ? `, last step ${last.step}: ${keys
              .filter((k) => k in last)
              .map((k) => `${k}=${fmt(last[k])}`)
              .join(' ')}`
          : ''
      }`,
    );
  }
  if (p.latestGroup)
    lines.push(
      groupText(p.latestGroup)
        .split('\n')
        .map((l) => `  ${l}`)
        .join('\n'),
    );
  return lines.join('\n');
}
