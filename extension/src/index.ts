/**
 * vqalab's JupyterLab 4 MIME renderer extension: one renderer factory per vendor MIME type of the
 * display contract (src/display/types.ts), and one for report facts that shows nothing (facts.ts).
 * Rank 0 puts them ahead of the text/html and text/plain fallbacks.
 */
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { WIDGETS } from '../../src/display/render/index.js';
import type { VendorMime } from '../../src/display/types.js';
import { factsExtension } from './facts.js';
import { setPlotlyLoader, type PlotlyLike } from './plotly.js';
import { VqaRenderer } from './widget.js';

// plotly.js (its partial "basic" bundle: every plot we draw is a scatter trace) becomes a separate
// chunk of the federated extension, fetched on first use.
setPlotlyLoader(() =>
  import(/* webpackChunkName: "plotly" */ 'plotly.js-basic-dist-min').then(
    (m: { default?: unknown }) => (m.default ?? m) as PlotlyLike,
  ),
);

const widgets: IRenderMime.IExtension[] = (Object.keys(WIDGETS) as VendorMime[]).map((mime) => ({
  id: `vqalab-jupyterlab:${WIDGETS[mime].name}`,
  description: `Renders ${mime} (vqalab ${WIDGETS[mime].name} widget)`,
  rendererFactory: {
    safe: true,
    mimeTypes: [mime],
    defaultRank: 0,
    createRenderer: (options: IRenderMime.IRendererOptions) => new VqaRenderer(options.mimeType),
  },
  rank: 0,
  dataType: 'json',
}));

const extensions: IRenderMime.IExtension[] = [...widgets, factsExtension];

export default extensions;
