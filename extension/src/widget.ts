/** The JupyterLab renderer: a Lumino widget around one mounted vqalab widget. */
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import type { Message } from '@lumino/messaging';
import { Mounted } from './hydrate.js';

export class VqaRenderer extends Widget implements IRenderMime.IRenderer {
  private readonly mounted: Mounted;

  constructor(private readonly mimeType: string) {
    super();
    this.addClass('vqa-lab-output');
    // Keys pressed inside a widget (Enter on a sort button, arrows on tokens, +/- zoom) belong to
    // it, not to the notebook's command-mode shortcuts.
    this.node.dataset.lmSuppressShortcuts = 'true';
    this.mounted = new Mounted(this.node, mimeType);
  }

  /** Called again with new data on update_display_data: the widget updates in place where it can. */
  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this.mounted.render(model.data[this.mimeType]);
    return Promise.resolve();
  }

  protected override onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    this.mounted.resize();
  }

  protected override onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.mounted.resize();
  }

  override dispose(): void {
    if (this.isDisposed) return;
    this.mounted.dispose();
    super.dispose();
  }
}
