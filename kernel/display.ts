/**
 * The kernel's side of the display sink (src/display/sink.ts): a bundle becomes one Jupyter
 * `display_data` (or `update_display_data`) carrying all of its MIME types, and a cell's value
 * becomes an `execute_result`.
 */
import { inspect } from 'node:util';
import {
  DISPLAYED,
  MIME_BUNDLE,
  checkBundle,
  hasMimeBundle,
  type DisplayOptions,
  type DisplaySink,
} from '../src/display/sink.js';
import type { MimeBundle } from '../src/display/types.js';
import type { DisplayContent } from '../src/jupyter/message.js';

/** Bundle data as Jupyter wants it: bytes (PNG, JPEG) base64-encoded, everything else as given. */
export function encodeBundle(bundle: MimeBundle): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  for (const [mime, value] of Object.entries(bundle)) {
    data[mime] =
      value instanceof Uint8Array
        ? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64')
        : value;
  }
  return data;
}

export function displayContent(bundle: MimeBundle, options: DisplayOptions = {}): DisplayContent {
  const content: DisplayContent = { data: encodeBundle(bundle), metadata: options.metadata ?? {} };
  // update_display_data requires a display id; display_data carries one only when given.
  content.transient = options.displayId !== undefined ? { display_id: options.displayId } : {};
  return content;
}

/** How a cell's value is shown as text: Node's inspect, a bit deeper and wider than the REPL's. */
export function plainText(value: unknown): string {
  return typeof value === 'string'
    ? inspect(value)
    : inspect(value, { depth: 4, maxArrayLength: 100, maxStringLength: 10_000, breakLength: 100 });
}

/**
 * A cell's value → the bundle of its execute_result, or null when nothing is shown: `undefined`,
 * and bundles a display helper already sent, alone or as a list (`plot(m)` as the last line
 * shows once). Objects with
 * the rich-value protocol (`[MIME_BUNDLE]()`) are shown as their bundle.
 */
function displayed(value: unknown): boolean {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[DISPLAYED] === true;
}

export function resultBundle(value: unknown): MimeBundle | null {
  if (value === undefined) return null;
  // A bundle a helper sent, or the list of them a helper returns (showComparison shows three).
  if (displayed(value) || (Array.isArray(value) && value.length > 0 && value.every(displayed))) return null;
  if (hasMimeBundle(value)) {
    try {
      const bundle = value[MIME_BUNDLE]();
      checkBundle(bundle, '[MIME_BUNDLE]() result');
      return bundle;
    } catch (err) {
      // A broken rich view must not hide the value: fall back to text, and say why.
      return {
        'text/plain': `${plainText(value)}\n(rich view failed: ${err instanceof Error ? err.message : String(err)})`,
      };
    }
  }
  return { 'text/plain': plainText(value) };
}

/**
 * The sink the kernel installs: each call publishes one message for the current request
 * (`publish` knows which one).
 */
export function kernelSink(publish: (msgType: string, content: unknown) => void): DisplaySink {
  return {
    display(bundle, options = {}) {
      publish(options.update ? 'update_display_data' : 'display_data', displayContent(bundle, options));
    },
    clear(options = {}) {
      publish('clear_output', { wait: options.wait ?? false });
    },
  };
}
