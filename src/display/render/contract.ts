/**
 * The renderer contract of report pages, shared by both sides: the JupyterLab extension's report
 * bundle implements it (extension/src/renderers.ts) and the report page calls it
 * (src/report/browser/hydrate.ts). `renderers[mime](host, payload, ctx)` draws the widget for one
 * vendor output into `host`; it throws on a payload that does not match the display contract (the
 * page then keeps the static fallback and shows the message), and may return `{ dispose }`.
 *
 * Generic over the host element and plotly.js, so it compiles without the DOM lib.
 */
export interface RenderContext<Plotly = unknown> {
  /** The vendor MIME type of the output. */
  mime: string;
  theme?: 'light' | 'dark';
  /** plotly.js when the page inlined it; without it metrics keep their static panels. */
  Plotly?: Plotly;
}

export type Renderer<Host = unknown, Plotly = unknown> = (
  host: Host,
  payload: unknown,
  ctx?: RenderContext<Plotly>,
) => void | Promise<void> | { dispose?(): void };
