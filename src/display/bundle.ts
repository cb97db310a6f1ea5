/**
 * Bundle builders: one payload → one MIME bundle with the vendor type (for the extension and the
 * report), `text/html` (the static widget, readable without JavaScript), `text/plain`, and
 * `image/png` where the image is the point (the sample card). Payloads are checked first, so a bad
 * payload fails here with the field named rather than in somebody's browser.
 */
import { samplePng } from './image.js';
import { WIDGETS, staticHtml } from './render/index.js';
import {
  MIME,
  type DatasetPayload,
  type GroupPayload,
  type MetricsPayload,
  type MimeBundle,
  type PayloadByMime,
  type RewardTablePayload,
  type SamplePayload,
  type VendorMime,
} from './types.js';

/**
 * The payload as it will travel: through JSON, so class instances become their `toJSON()`, NaN and
 * infinities become null, and undefined fields disappear, before the check sees it.
 */
export function plainPayload(payload: unknown): unknown {
  return payload === undefined ? undefined : JSON.parse(JSON.stringify(payload));
}

/** The vendor, text/html and text/plain entries for any widget (no PNG). Throws PayloadError on a bad payload. */
export function bundleFor<M extends VendorMime>(mime: M, payload: PayloadByMime[M]): MimeBundle {
  const w = WIDGETS[mime];
  if (!w) throw new TypeError(`Expected a vqalab vendor MIME type for mime but received ${JSON.stringify(mime)}`);
  const checked = w.check(plainPayload(payload));
  return { [mime]: checked, 'text/html': staticHtml(mime, checked), 'text/plain': w.text(checked) };
}

/** Sample card, with a PNG of the card when the sample has an image. */
export async function sampleBundle(p: SamplePayload): Promise<MimeBundle> {
  const bundle = bundleFor(MIME.sample, p);
  const checked = bundle[MIME.sample] as SamplePayload;
  if (checked.images.length > 0) bundle['image/png'] = (await samplePng(checked)).toString('base64');
  return bundle;
}

export function groupBundle(p: GroupPayload): MimeBundle {
  return bundleFor(MIME.group, p);
}

export function rewardsBundle(p: RewardTablePayload): MimeBundle {
  return bundleFor(MIME.rewards, p);
}

export function metricsBundle(p: MetricsPayload): MimeBundle {
  return bundleFor(MIME.metrics, p);
}

export function datasetBundle(p: DatasetPayload): MimeBundle {
  return bundleFor(MIME.dataset, p);
}
