/**
 * The renderer for report facts (STAMP_MIME, src/display/types.ts). Facts are data for the report's
 * header stamp, not something to look at in a cell, so this renderer draws nothing and hides the
 * output item it sits in, prompt included; a cell whose every output is facts looks like a cell
 * without outputs (no gap, no collapser bar), and a cell with other outputs shows only those.
 * Ranked ahead of text/plain, so notebooks saved before facts lost their one-line text summary
 * show nothing either. The output stays in the notebook model and is saved with it: that is where
 * `vqalab report export` reads the facts.
 */
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import type { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import { STAMP_MIME } from '../../src/display/types.js';

/** On the renderer's node: found by the CSS below and by tests. */
export const FACTS_OUTPUT_CLASS = 'vqa-facts-output';
/** On the output item (JupyterLab's `.jp-OutputArea-child`: prompt + output) around it. */
export const FACTS_ITEM_CLASS = 'vqa-facts-item';

// The item is hidden by its class; the cell rule needs `:has()` (every browser JupyterLab 4
// supports has it; without it only the empty 5 px gap and the collapser bar would show).
const FACTS_CSS = `
.jp-OutputArea-child.${FACTS_ITEM_CLASS}{display:none}
.jp-CodeCell:has(.${FACTS_ITEM_CLASS}):not(:has(.jp-OutputArea-child:not(.${FACTS_ITEM_CLASS}))) .jp-Cell-outputWrapper{display:none}
`;

function ensureFactsStyle(doc: Document): void {
  if (doc.getElementById('vqalab-facts-css')) return;
  const style = doc.createElement('style');
  style.id = 'vqalab-facts-css';
  style.textContent = FACTS_CSS;
  doc.head.appendChild(style);
}

export class FactsRenderer extends Widget implements IRenderMime.IRenderer {
  constructor() {
    super();
    this.addClass(FACTS_OUTPUT_CLASS);
    this.node.hidden = true;
    ensureFactsStyle(document);
  }

  /** Nothing to draw: the facts stay in the output model, which is what gets saved. */
  renderModel(_model: IRenderMime.IMimeModel): Promise<void> {
    return Promise.resolve();
  }

  // JupyterLab wraps each rendered output in an item panel (OutputArea._wrappedOutput) and inserts
  // it into the output area, which attaches it: mark the item then, whichever panel holds us.
  protected override onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.parent?.addClass(FACTS_ITEM_CLASS);
  }
}

export const factsExtension: IRenderMime.IExtension = {
  id: 'vqalab-jupyterlab:facts',
  description: `Hides ${STAMP_MIME} outputs (report facts, gathered into the report's stamp)`,
  rendererFactory: {
    safe: true,
    mimeTypes: [STAMP_MIME],
    defaultRank: 0,
    createRenderer: () => new FactsRenderer(),
  },
  rank: 0,
  dataType: 'json',
};
