/**
 * The renderers, written once: payload → HTML string (and text/plain), with no DOM and no Node API.
 * Node uses them for the text/html and text/plain fallbacks of every bundle; the JupyterLab
 * extension and report pages use them for the interactive view (`interactive: true`) and then add
 * behaviour with the browser code in extension/src/.
 */
import { MIME, type PayloadByMime, type VendorMime } from '../types.js';
import { checkDataset, checkGroup, checkMetrics, checkRewardTable, checkSample, PayloadError } from './check.js';
import { datasetText, renderDataset } from './dataset.js';
import { groupText, renderGroup } from './group.js';
import { esc } from './html.js';
import { metricsText, renderMetrics } from './metrics.js';
import { renderRewardTable, rewardTableText } from './rewards.js';
import { renderSample, sampleText, type RenderOptions } from './sample.js';
import { VQA_CSS } from './style.js';

export type { RenderOptions } from './sample.js';
export { PayloadError } from './check.js';
export { VQA_CSS } from './style.js';

export interface Widget<M extends VendorMime> {
  mime: M;
  /** Short name, also the `data-vqa` attribute of the widget's root element. */
  name: string;
  /** Throws PayloadError naming the first bad field. */
  check(value: unknown): PayloadByMime[M];
  html(payload: PayloadByMime[M], opts?: RenderOptions): string;
  text(payload: PayloadByMime[M]): string;
}

export const WIDGETS: { [M in VendorMime]: Widget<M> } = {
  [MIME.sample]: {
    mime: MIME.sample,
    name: 'sample',
    check: (v) => checkSample(v),
    html: renderSample,
    text: sampleText,
  },
  [MIME.group]: { mime: MIME.group, name: 'group', check: (v) => checkGroup(v), html: renderGroup, text: groupText },
  [MIME.rewards]: {
    mime: MIME.rewards,
    name: 'rewards',
    check: (v) => checkRewardTable(v),
    html: renderRewardTable,
    text: rewardTableText,
  },
  [MIME.metrics]: {
    mime: MIME.metrics,
    name: 'metrics',
    check: (v) => checkMetrics(v),
    html: renderMetrics,
    text: metricsText,
  },
  [MIME.dataset]: {
    mime: MIME.dataset,
    name: 'dataset',
    check: (v) => checkDataset(v),
    html: renderDataset,
    text: datasetText,
  },
};

export function isVendorMime(mime: string): mime is VendorMime {
  return Object.prototype.hasOwnProperty.call(WIDGETS, mime);
}

/** The readable error drawn in place of a widget whose payload is missing or malformed. */
export function renderError(mime: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const hint =
    err instanceof PayloadError
      ? 'The payload does not match the display contract (docs/display.md); was it written by another vqalab version?'
      : 'This is a bug in the vqalab renderer; please report it with the notebook.';
  return (
    `<div class="vqa vqa-error-box" role="alert" data-vqa="error"><strong>vqalab could not render ${esc(mime)}</strong>` +
    `<p><code>${esc(message)}</code></p><p class="vqa-muted">${esc(hint)}</p></div>`
  );
}

/** Check and render; never throws (a bad payload gives the error box). */
export function renderHtml(mime: string, data: unknown, opts: RenderOptions = {}): string {
  if (!isVendorMime(mime)) return renderError(mime, new Error(`unknown MIME type ${mime}`));
  try {
    const w = WIDGETS[mime] as Widget<VendorMime>;
    return w.html(w.check(data), opts);
  } catch (err) {
    return renderError(mime, err);
  }
}

/**
 * The text/html fallback of a bundle: the static widget with its CSS inlined, readable without any
 * JavaScript (nbconvert, GitHub, classic Notebook).
 */
export function staticHtml(mime: VendorMime, payload: unknown): string {
  return `<style>${VQA_CSS}</style>${renderHtml(mime, payload)}`;
}
