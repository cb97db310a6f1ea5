/**
 * Where the display helpers send bundles: the process-wide sink the kernel installs (sink.ts), or
 * an explicit one passed in (tests, other front ends). Without either, helpers only return their
 * bundles (a script).
 */
import { display, DISPLAYED, type DisplayOptions, type DisplaySink } from './sink.js';
import type { MimeBundle } from './types.js';

export { DISPLAYED, getDisplaySink, newDisplayId, setDisplaySink } from './sink.js';
export type { DisplayOptions, DisplaySink } from './sink.js';

/** Send `bundle` through `sink` if given, else through the installed sink; returns the bundle (marked DISPLAYED when sent). */
export function emit(bundle: MimeBundle, options: DisplayOptions = {}, sink?: DisplaySink): MimeBundle {
  const clean: DisplayOptions = {};
  if (options.displayId !== undefined) clean.displayId = options.displayId;
  if (options.update) clean.update = true;
  if (options.metadata !== undefined) clean.metadata = options.metadata;
  if (!sink) return display(bundle, clean);
  sink.display(bundle, clean);
  Object.defineProperty(bundle, DISPLAYED, { value: true, enumerable: false, configurable: true });
  return bundle;
}
