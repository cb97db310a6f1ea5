/**
 * The widgets for report pages, in the report's renderer contract (src/report/browser/hydrate.ts):
 * `renderers[mime](host, payload, ctx)` draws the interactive widget into `host` with the same
 * code the JupyterLab extension runs, and returns `{ dispose }`; a payload that does not match the
 * contract throws (the report keeps the static fallback and shows the message). Bundled by
 * `npm run build` into dist/src/display/browser.js, where the report exporter finds it.
 */
import type {
  RenderContext as RenderContextContract,
  Renderer as RendererContract,
} from '../../src/display/render/contract.js';
import { WIDGETS } from '../../src/display/render/index.js';
import type { VendorMime } from '../../src/display/types.js';
import { Mounted } from './hydrate.js';
import { setPlotlyLoader, type PlotlyLike } from './plotly.js';

/** The report pages' renderer contract (src/display/render/contract.ts), for DOM hosts and this bundle's plotly.js. */
export type RenderContext = RenderContextContract<PlotlyLike>;
export type Renderer = RendererContract<HTMLElement, PlotlyLike>;

/** Every widget mounted on this page (for debugging and tests: `render(payload)` updates one in place). */
export const mounted: Mounted[] = [];

function plotlyFrom(ctx?: RenderContext): PlotlyLike | undefined {
  return ctx?.Plotly ?? (globalThis as { Plotly?: PlotlyLike }).Plotly;
}

function renderer(mime: VendorMime): Renderer {
  return (host, payload, ctx) => {
    const plotly = plotlyFrom(ctx);
    setPlotlyLoader(() =>
      plotly ? Promise.resolve(plotly) : Promise.reject(new Error('plotly.js is not included in this page')),
    );
    const m = new Mounted(host, mime);
    m.render(payload);
    if (m.failed) {
      const message = host.querySelector('code')?.textContent ?? 'invalid payload';
      m.dispose();
      host.replaceChildren();
      throw new Error(message);
    }
    mounted.push(m);
    return { dispose: () => m.dispose() };
  };
}

export const renderers = Object.fromEntries(
  (Object.keys(WIDGETS) as VendorMime[]).map((mime) => [mime, renderer(mime)]),
) as Record<VendorMime, Renderer>;

// For pages that load this bundle with a plain <script> (the report's hydrate also reads this).
if (typeof window !== 'undefined') {
  const w = window as unknown as { vqalabRenderers?: Record<string, Renderer>; vqalabWidgets?: Mounted[] };
  w.vqalabRenderers = { ...(w.vqalabRenderers ?? {}), ...renderers };
  w.vqalabWidgets = mounted;
}
