/**
 * The display sink: how the runtime shows rich output without knowing anything about Jupyter.
 *
 * The runtime (display helpers, the trainer's dashboard) calls `display(bundle, options)`. A host
 * that can show things installs a sink with `setDisplaySink`: the notebook kernel's sink sends one
 * Jupyter `display_data` per call, all MIME types of the bundle in that one output (the vendor type
 * plus its `text/html` / `text/plain` / `image/png` fallbacks), and `update_display_data` for
 * `{ displayId, update: true }`. Without a sink (a plain script, a test) `display` does nothing
 * but hand the bundle back, so the same code runs everywhere.
 *
 * The sink is process-wide (kept on `globalThis` under a registered symbol), so every copy of this
 * module loaded in one process (an ESM and a CommonJS instance, two paths to the package) talks
 * to the same kernel.
 *
 * Bundle values: strings for text types, any JSON value for vendor JSON types, and for binary
 * types (`image/png`, `image/jpeg`) either a base64 string or bytes (`Uint8Array`; the kernel
 * encodes them). Throttling live updates is the caller's job (see the dashboard); the sink sends
 * every call it gets.
 */
import { randomBytes } from 'node:crypto';
import { invalidParameterError } from '../util/validate.js';
import type { MimeBundle } from './types.js';

export interface DisplayOptions {
  /**
   * Names this output so it can be replaced in place later. Front ends keep one output per id;
   * make ids with `newDisplayId()`.
   */
  displayId?: string;
  /** Replace the output shown earlier under `displayId` instead of adding a new one. */
  update?: boolean;
  /** Jupyter output metadata, keyed by MIME type (e.g. `{ 'image/png': { width: 320 } }`). */
  metadata?: Record<string, unknown>;
}

export interface ClearOptions {
  /** Clear when the next output arrives rather than now (avoids flicker in a loop). */
  wait?: boolean;
}

/** Where bundles go. Installed by a host (the notebook kernel); absent in scripts. */
export interface DisplaySink {
  display(bundle: MimeBundle, options?: DisplayOptions): void;
  /** Clear the current cell's output (Jupyter `clear_output`). Optional for sinks. */
  clear?(options?: ClearOptions): void;
}

/**
 * Set on a bundle (non-enumerable, `true`) once it has been sent through a sink, so a kernel that
 * shows a cell's last value does not echo it: `plot(metrics)` as the last line displays once.
 */
export const DISPLAYED: unique symbol = Symbol.for('vqalab.display.sent');

/**
 * The rich-value protocol: an object with a method under this key is shown as the bundle it
 * returns when it is a notebook cell's value (like IPython's `_repr_mimebundle_`). Without it a
 * value is shown as `text/plain` (Node's `util.inspect`).
 */
export const MIME_BUNDLE: unique symbol = Symbol.for('vqalab.display.mimeBundle');

/** An object that knows how to show itself (see `MIME_BUNDLE`). */
export interface HasMimeBundle {
  [MIME_BUNDLE](): MimeBundle;
}

const SINK_KEY = Symbol.for('vqalab.display.sink');
type SinkHolder = { [SINK_KEY]?: DisplaySink };

/** Install (or remove, with `undefined`) the process's sink; returns the previous one. */
export function setDisplaySink(sink: DisplaySink | undefined): DisplaySink | undefined {
  if (sink !== undefined && (typeof sink !== 'object' || sink === null || typeof sink.display !== 'function')) {
    throw invalidParameterError('sink', 'an object with a display(bundle, options) method, or undefined', sink);
  }
  const holder = globalThis as SinkHolder;
  const previous = holder[SINK_KEY];
  holder[SINK_KEY] = sink;
  return previous;
}

/** The installed sink, or `undefined` (a script: helpers only build and return bundles). */
export function getDisplaySink(): DisplaySink | undefined {
  return (globalThis as SinkHolder)[SINK_KEY];
}

const MIME_KEY = /^[\w.+-]+\/[\w.+-]+$/;

/** Throws the validation error for a bundle that no front end could show. */
export function checkBundle(bundle: unknown, name = 'bundle'): asserts bundle is MimeBundle {
  if (typeof bundle !== 'object' || bundle === null || Array.isArray(bundle)) {
    throw invalidParameterError(name, 'a MIME bundle (object of MIME type → data)', bundle);
  }
  const keys = Object.keys(bundle);
  if (keys.length === 0) throw invalidParameterError(name, 'a MIME bundle with at least one MIME type', bundle);
  for (const key of keys) {
    if (!MIME_KEY.test(key)) throw invalidParameterError(`${name} key`, 'a MIME type like "text/html"', key);
    const value = (bundle as Record<string, unknown>)[key];
    if (value === undefined) throw invalidParameterError(`${name}["${key}"]`, 'data', value);
    if (key.startsWith('text/') && typeof value !== 'string')
      throw invalidParameterError(`${name}["${key}"]`, 'string', value);
  }
}

/**
 * Show `bundle` through the installed sink, if any, and return it. In a notebook one call is one
 * output (or, with `{ displayId, update: true }`, an in-place update of an earlier one).
 */
export function display(bundle: MimeBundle, options: DisplayOptions = {}): MimeBundle {
  checkBundle(bundle);
  if (typeof options !== 'object' || options === null) throw invalidParameterError('options', 'object', options);
  if (options.displayId !== undefined && (typeof options.displayId !== 'string' || options.displayId === '')) {
    throw invalidParameterError('options.displayId', 'non-empty string', options.displayId);
  }
  if (options.update && options.displayId === undefined) {
    throw invalidParameterError(
      'options.displayId',
      'non-empty string (required with update: true)',
      options.displayId,
    );
  }
  const sink = getDisplaySink();
  if (sink) {
    sink.display(bundle, options);
    Object.defineProperty(bundle, DISPLAYED, { value: true, enumerable: false, configurable: true });
  }
  return bundle;
}

/** Clear the current cell's output in a notebook; does nothing in a script. */
export function clearOutput(options: ClearOptions = {}): void {
  getDisplaySink()?.clear?.(options);
}

/** A fresh display id (random, so ids never collide across kernels or restarts). */
export function newDisplayId(prefix = 'vqalab'): string {
  return `${prefix}-${randomBytes(8).toString('hex')}`;
}

/** True when `value` implements the rich-value protocol (`MIME_BUNDLE`). */
export function hasMimeBundle(value: unknown): value is HasMimeBundle {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as Partial<HasMimeBundle>)[MIME_BUNDLE] === 'function'
  );
}
