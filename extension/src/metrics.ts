/**
 * Metrics dashboard behaviour: the static SVG panels are replaced by one plotly figure once
 * plotly.js has loaded; a live update (same output, new payload) goes through Plotly.react, which
 * diffs instead of redrawing, so the plot neither flickers nor moves the page; `uirevision` keeps
 * the user's zoom. The smoothing slider re-smooths every run. dispose() purges the plot.
 */
import { renderGroup } from '../../src/display/render/group.js';
import {
  plotlyFigure,
  renderLegend,
  renderProgress,
  renderSvgChart,
  metricKeys,
} from '../../src/display/render/metrics.js';
import type { MetricsPayload } from '../../src/display/types.js';
import { esc } from '../../src/display/render/html.js';
import { must, onThemeChange, plotTheme, type Hydrated } from './common.js';
import { hydrateGroup } from './group.js';
import { ensurePlotly, type PlotlyLike } from './plotly.js';

export function hydrateMetrics(root: HTMLElement, payload: MetricsPayload): Hydrated {
  let current = payload;
  let smoothing = payload.smoothing ?? 0;
  const plotSlot = must<HTMLElement>(root, '.vqa-plot-slot');
  const progressSlot = must<HTMLElement>(root, '.vqa-progress-slot');
  const latestSlot = must<HTMLElement>(root, '.vqa-latest-slot');
  const slider = root.querySelector<HTMLInputElement>('input.vqa-smoothing');
  const sliderValue = root.querySelector<HTMLOutputElement>('output.vqa-smoothing-value');
  let plotDiv: HTMLDivElement | undefined;
  let plotly: PlotlyLike | undefined;
  let disposed = false;
  let drawing = false,
    again = false;
  let revision = 0;
  let latestKey = JSON.stringify(payload.latestGroup ?? null);
  let latest: Hydrated | undefined;

  const hydrateLatest = () => {
    latest?.dispose();
    const el = latestSlot.querySelector<HTMLElement>('.vqa-group');
    latest = el && current.latestGroup ? hydrateGroup(el, current.latestGroup) : undefined;
  };
  const drawSvg = () => {
    const keys = metricKeys(current);
    plotSlot.innerHTML = keys.length
      ? `<div class="vqa-charts">${keys.map((k) => renderSvgChart(current, k, smoothing)).join('')}</div>`
      : '<p class="vqa-muted">no metrics yet</p>';
  };
  const draw = async (): Promise<void> => {
    if (drawing) {
      again = true;
      return;
    }
    drawing = true;
    try {
      try {
        plotly ??= await ensurePlotly();
      } catch (err) {
        // Without plotly the static panels stay (and follow updates): still a dashboard.
        if (!plotDiv) drawSvg();
        root.dataset.plotly = 'unavailable';
        root.title = `interactive plot unavailable: ${(err as Error).message}`;
        return;
      }
      if (disposed) return;
      if (!plotDiv) {
        plotDiv = document.createElement('div');
        plotDiv.className = 'vqa-plot';
        plotSlot.replaceChildren(plotDiv);
        root.querySelector('.vqa-legend')?.classList.toggle('vqa-hidden', current.runs.length > 1);
      }
      const fig = plotlyFigure(current, smoothing, plotTheme(root));
      await plotly.react(plotDiv, fig.data, fig.layout, {
        responsive: true,
        displaylogo: false,
        displayModeBar: 'hover',
      });
      revision += 1;
      plotDiv.dataset.revision = String(revision);
      root.dataset.plotly = 'ready';
    } finally {
      drawing = false;
      if (again && !disposed) {
        again = false;
        void draw();
      }
    }
  };

  const onSlide = () => {
    smoothing = Number(slider!.value);
    if (sliderValue) sliderValue.textContent = smoothing.toFixed(2);
    if (!plotDiv) drawSvg();
    void draw();
  };
  slider?.addEventListener('input', onSlide);
  const stopTheme = onThemeChange(() => {
    if (plotDiv) void draw();
  });
  hydrateLatest();
  void draw();

  return {
    update(next: unknown): boolean {
      current = next as MetricsPayload;
      progressSlot.innerHTML = current.progress ? renderProgress(current.progress) : '';
      const legend = root.querySelector<HTMLElement>('.vqa-legend');
      if (legend)
        legend.outerHTML = renderLegend(current).replace(
          'class="vqa-legend"',
          `class="vqa-legend${plotDiv && current.runs.length > 1 ? ' vqa-hidden' : ''}"`,
        );
      const key = JSON.stringify(current.latestGroup ?? null);
      if (key !== latestKey) {
        latestKey = key;
        latestSlot.innerHTML = current.latestGroup
          ? `<div class="vqa-latest">${renderGroup(current.latestGroup, { interactive: true })}</div>`
          : '';
        hydrateLatest();
      }
      const title = root.querySelector('h3');
      if (title) title.innerHTML = esc(current.title ?? 'Training metrics');
      if (!plotDiv) drawSvg();
      void draw();
      return true;
    },
    resize() {
      if (plotDiv && plotly) void plotly.Plots.resize(plotDiv);
    },
    dispose() {
      disposed = true;
      slider?.removeEventListener('input', onSlide);
      stopTheme();
      latest?.dispose();
      if (plotDiv && plotly) plotly.purge(plotDiv);
    },
  };
}
