/**
 * Entry for report pages (bundle it with esbuild, format iife): hydrates every vqalab output of
 * the page. Each output is `reportOutputHtml(mime, payload)` from src/display/render: a static
 * widget followed by `<script type="application/vnd.vqalab.…+json">` holding its payload. Inline
 * plotly.js (window.Plotly) before this bundle for interactive plots; without it the static SVG
 * panels stay.
 */
import { PayloadError } from '../../src/display/render/check.js';
import { Mounted } from './hydrate.js';
import { setPlotlyLoader, type PlotlyLike } from './plotly.js';

export { Mounted } from './hydrate.js';
export { setPlotlyLoader, ensurePlotly } from './plotly.js';

declare global {
  interface Window { Plotly?: PlotlyLike; vqalab?: { hydrateAll: typeof hydrateAll; mounted: Mounted[] } }
}

const mounted: Mounted[] = [];

/** Hydrate every vqalab output under `root` not hydrated yet; returns the new ones. */
export function hydrateAll(root: ParentNode = document): Mounted[] {
  const added: Mounted[] = [];
  root.querySelectorAll<HTMLScriptElement>('script[type^="application/vnd.vqalab."]').forEach((script) => {
    const host = script.parentElement;
    if (!host || host.dataset.vqaHydrated) return;
    host.dataset.vqaHydrated = 'true';
    const m = new Mounted(host, script.type);
    try {
      m.render(JSON.parse(script.textContent ?? ''));
    } catch {
      m.fail(new PayloadError('the payload', 'valid JSON', script.textContent ?? ''));
    }
    // The host was rewritten: keep the payload script in the page for later readers.
    host.appendChild(script);
    added.push(m);
  });
  mounted.push(...added);
  return added;
}

if (typeof window !== 'undefined') {
  if (window.Plotly) setPlotlyLoader(() => Promise.resolve(window.Plotly!));
  else setPlotlyLoader(() => (window.Plotly ? Promise.resolve(window.Plotly) : Promise.reject(new Error('plotly.js is not included in this page'))));
  window.vqalab = { hydrateAll, mounted };
  const run = () => { hydrateAll(document); };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', run);
  else run();
}
