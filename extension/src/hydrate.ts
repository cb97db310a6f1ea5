/**
 * Render + hydrate, shared by the JupyterLab renderer and report pages: check the payload, write
 * the interactive HTML from the pure renderers, then attach the widget's behaviour. Any failure
 * becomes the readable error box in place of the widget.
 */
import { isVendorMime, renderError, WIDGETS } from '../../src/display/render/index.js';
import { MIME, type VendorMime } from '../../src/display/types.js';
import { ensureStyle, NOTHING, type Hydrated } from './common.js';
import { hydrateDataset } from './dataset.js';
import { hydrateGroup } from './group.js';
import { hydrateMetrics } from './metrics.js';
import { hydrateRewards } from './rewards.js';
import { hydrateSample } from './sample.js';

type HydrateFn = (root: HTMLElement, payload: never) => Hydrated;

export const HYDRATORS: Record<VendorMime, HydrateFn> = {
  [MIME.sample]: hydrateSample,
  [MIME.group]: hydrateGroup,
  [MIME.rewards]: hydrateRewards,
  [MIME.metrics]: hydrateMetrics,
  [MIME.dataset]: hydrateDataset,
};

/** A widget mounted in a host element; `render` again with a new payload updates it in place when it can. */
export class Mounted {
  private hydrated: Hydrated = NOTHING;
  /** True while the host shows an error instead of the widget. */
  failed = false;

  constructor(
    readonly host: HTMLElement,
    readonly mime: string,
  ) {
    ensureStyle(host.ownerDocument);
  }

  render(data: unknown): void {
    const mime = this.mime;
    if (!isVendorMime(mime)) {
      this.fail(new Error(`unknown MIME type ${mime}`));
      return;
    }
    let payload: unknown;
    try {
      payload = WIDGETS[mime].check(data);
    } catch (err) {
      this.fail(err);
      return;
    }
    try {
      if (!this.failed && this.hydrated.update?.(payload)) return;
      this.hydrated.dispose();
      this.hydrated = NOTHING;
      this.host.innerHTML = (WIDGETS[mime] as { html(p: unknown, o: object): string }).html(payload, {
        interactive: true,
      });
      this.failed = false;
      const root = this.host.firstElementChild as HTMLElement;
      this.hydrated = HYDRATORS[mime](root, payload as never);
    } catch (err) {
      this.fail(err);
    }
  }

  resize(): void {
    this.hydrated.resize?.();
  }

  dispose(): void {
    this.hydrated.dispose();
    this.hydrated = NOTHING;
  }

  /** Show the readable error box instead of the widget. */
  fail(err: unknown): void {
    this.hydrated.dispose();
    this.hydrated = NOTHING;
    this.failed = true;
    this.host.innerHTML = renderError(this.mime, err);
  }
}
