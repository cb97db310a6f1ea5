import type { VqaSample } from './types.js';
import { VqaDataset } from './dataset.js';

/**
 * The content fingerprint of samples, `sha256:` + the hash `VqaDataset.fingerprint()` gives for
 * them in this order (ids, image file names, questions, answers, types). The one fingerprint of
 * samples: report facts, `browse` (its first 16 hex digits) and dataset views agree.
 */
export function samplesFingerprint(samples: readonly VqaSample[]): string {
  return `sha256:${VqaDataset.fromSamples(samples).fingerprint()}`;
}
