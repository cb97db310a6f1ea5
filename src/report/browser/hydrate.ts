/**
 * Runs inside report.html (bundled by esbuild at export time, together with the display
 * engineer's renderers when they are installed): draws plotly outputs, hands every vendor output to
 * its renderer, and offers the embedded source notebook for download. Everything it needs is in
 * the page; it never fetches.
 *
 * A vendor output is `<div class="vq-vendor" data-mime=M>` holding its payload in
 * `<script type="application/json" class="vq-payload">` and the text/html (or image) fallback in
 * `.vq-fallback`. When a renderer for M exists the widget replaces the fallback; when it throws,
 * the fallback stays and a readable error is shown above it.
 */

// The project compiles without the DOM lib (it would retype Node's streams for everyone); the few
// DOM names used here stay module-local.
/* eslint-disable @typescript-eslint/no-explicit-any */
import type {
  RenderContext as RenderContextContract,
  Renderer as RendererContract,
} from '../../display/render/contract.js';

declare const window: any, document: any;
type HTMLElement = any;
type Element = any;
type HTMLAnchorElement = any;

/** The one renderer contract (src/display/render/contract.ts), with the page's element type and plotly.js. */
export type Renderer = RendererContract<HTMLElement, any>;
export type RenderContext = RenderContextContract<any>;

export interface HydrateOptions {
  renderers?: Record<string, Renderer>;
}

function payloadOf(el: Element): unknown {
  const script = el.querySelector(':scope > script.vq-payload');
  return script ? JSON.parse(script.textContent ?? 'null') : null;
}

function showError(el: HTMLElement, message: string): void {
  const box = document.createElement('div');
  box.className = 'vq-render-error';
  box.setAttribute('role', 'alert');
  box.textContent = message;
  el.prepend(box);
}

/** The trace types the inlined plotly.js partial bundle draws (html.ts writes the list beside it). */
function traceTypes(): Set<string> | null {
  const el = document.getElementById('vqalab-plotly-traces');
  return el ? new Set(JSON.parse(el.textContent ?? '[]') as string[]) : null;
}

async function drawPlotly(el: HTMLElement, Plotly: any, types: Set<string> | null): Promise<void> {
  const spec = payloadOf(el) as {
    data?: { type?: string }[];
    layout?: Record<string, unknown>;
    config?: Record<string, unknown>;
  } | null;
  // plotly.js silently draws nothing for a trace type it was built without; say so instead.
  const missing = [...new Set((spec?.data ?? []).map((t) => t?.type ?? 'scatter'))].filter(
    (t) => types && !types.has(t),
  );
  if (missing.length) {
    throw new Error(
      `trace type${missing.length > 1 ? 's' : ''} ${missing.map((t) => JSON.stringify(t)).join(', ')} not in this report's plotly.js (it draws ${[...types!].join(', ')}); showing the fallback.`,
    );
  }
  const target = el.querySelector('.vq-plot')!;
  await Plotly.newPlot(
    target,
    spec?.data ?? [],
    { autosize: true, ...(spec?.layout ?? {}) },
    { responsive: true, displaylogo: false, ...(spec?.config ?? {}) },
  );
  el.classList.add('vq-rendered');
}

export async function hydrate(opts: HydrateOptions = {}): Promise<void> {
  const w = window as any;
  const renderers: Record<string, Renderer> = { ...(w.vqalabRenderers ?? {}), ...(opts.renderers ?? {}) };
  // The page follows the reader's colour scheme; the widgets key their dark palette on data-theme.
  const root = document.documentElement;
  if (!root.dataset.theme)
    root.dataset.theme = window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  const theme: 'light' | 'dark' = root.dataset.theme === 'dark' ? 'dark' : 'light';
  const Plotly = w.Plotly;
  const types = traceTypes();

  for (const el of Array.from(document.querySelectorAll('.vq-plotly')) as HTMLElement[]) {
    if (!Plotly) {
      showError(el, 'plotly.js is not in this report; showing the fallback.');
      continue;
    }
    try {
      await drawPlotly(el, Plotly, types);
      el.querySelector('.vq-fallback')?.remove();
    } catch (err) {
      showError(el, `Could not draw this plot: ${(err as Error).message}`);
    }
  }

  for (const el of Array.from(document.querySelectorAll('.vq-vendor')) as HTMLElement[]) {
    const mime = el.dataset.mime ?? '';
    const render = renderers[mime];
    if (!render) continue; // no renderer bundled: the fallback stays, which is the design
    const host = document.createElement('div');
    host.className = 'vq-widget';
    const fallback = el.querySelector('.vq-fallback');
    try {
      el.append(host);
      await render(host, payloadOf(el), { mime, theme, Plotly });
      fallback?.remove();
      el.classList.add('vq-rendered');
    } catch (err) {
      host.remove();
      showError(el, `Could not render ${mime}: ${(err as Error).message}`);
    }
  }

  const link = document.getElementById('vq-download-notebook') as HTMLAnchorElement | null;
  const data = document.getElementById('vqalab-report');
  if (link && data) {
    const report = JSON.parse(data.textContent ?? '{}');
    const blob = new Blob([JSON.stringify(report.source?.notebook ?? {}, null, 1)], {
      type: 'application/x-ipynb+json',
    });
    link.href = URL.createObjectURL(blob);
  }
  document.documentElement.dataset.hydrated = 'true';
}
