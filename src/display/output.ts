/**
 * Where bundles go. The runtime knows nothing about Jupyter: a kernel installs a sink, and the
 * display helpers send through it; from a script there is no sink and the helpers only return
 * their bundles. Mirrors the kernel's sink (src/display/sink.ts on branch `kernel`).
 */
import type { MimeBundle } from './types.js';

export interface DisplayOptions {
  /** Stable id for updating this output in place (Jupyter display ids). */
  displayId?: string;
  /** Replace the output shown earlier with the same displayId instead of adding a new one. */
  update?: boolean;
}

export interface DisplaySink {
  display(bundle: MimeBundle, options?: DisplayOptions): void;
}

let current: DisplaySink | undefined;

/** Install (or remove, with undefined) the sink; returns the previous one. */
export function setDisplaySink(sink: DisplaySink | undefined): DisplaySink | undefined {
  const previous = current;
  current = sink;
  return previous;
}

export function getDisplaySink(): DisplaySink | undefined {
  return current;
}

/**
 * Marks a bundle that a helper has already sent, so a kernel that shows a cell's last value can
 * skip echoing it (`await show(x)` as the last line would otherwise appear twice).
 */
export const DISPLAYED = Symbol.for('vqalab.display.sent');

/** Send through the sink if there is one; returns the bundle either way. */
export function emit(bundle: MimeBundle, options?: DisplayOptions, sink: DisplaySink | undefined = current): MimeBundle {
  if (sink) {
    sink.display(bundle, options);
    Object.defineProperty(bundle, DISPLAYED, { value: true, enumerable: false, configurable: true });
  }
  return bundle;
}

let counter = 0;
/** A display id unique in this process. */
export function newDisplayId(prefix = 'vqalab'): string {
  counter += 1;
  return `${prefix}-${process.pid.toString(36)}-${Date.now().toString(36)}-${counter}`;
}
