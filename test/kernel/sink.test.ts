import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  DISPLAYED,
  MIME_BUNDLE,
  clearOutput,
  display,
  getDisplaySink,
  hasMimeBundle,
  newDisplayId,
  setDisplaySink,
  type DisplayOptions,
  type DisplaySink,
} from '../../src/display/sink.js';
import type { MimeBundle } from '../../src/display/types.js';

afterEach(() => {
  setDisplaySink(undefined);
});

function recorder(): DisplaySink & { calls: [MimeBundle, DisplayOptions | undefined][]; clears: number } {
  const calls: [MimeBundle, DisplayOptions | undefined][] = [];
  const r = {
    calls,
    clears: 0,
    display: (b: MimeBundle, o?: DisplayOptions) => {
      calls.push([b, o]);
    },
    clear: () => {
      r.clears++;
    },
  };
  return r;
}

test('without a sink display returns the bundle and sends nothing', () => {
  const b = { 'text/plain': 'x' };
  assert.equal(display(b), b);
  assert.equal((b as Record<symbol, unknown>)[DISPLAYED], undefined);
  clearOutput(); // no sink: no-op
});

test('with a sink every call is one output, marked as displayed, options passed through', () => {
  const r = recorder();
  assert.equal(setDisplaySink(r), undefined);
  const b = { 'application/vnd.vqalab.metrics.v1+json': { runs: [] }, 'text/html': '<b>m</b>', 'text/plain': 'm' };
  const id = newDisplayId();
  display(b, { displayId: id });
  display(b, { displayId: id, update: true });
  assert.equal(r.calls.length, 2);
  assert.deepEqual(r.calls[1]![1], { displayId: id, update: true });
  assert.equal((b as Record<symbol, unknown>)[DISPLAYED], true);
  assert.ok(!Object.keys(b).includes(String(DISPLAYED)), 'marker is not enumerable');
  clearOutput({ wait: true });
  assert.equal(r.clears, 1);
  assert.equal(setDisplaySink(undefined), r);
});

test('the sink is process-wide (shared through a registered symbol)', () => {
  const r = recorder();
  setDisplaySink(r);
  assert.equal((globalThis as Record<symbol, unknown>)[Symbol.for('vqalab.display.sink')], r);
  assert.equal(getDisplaySink(), r);
});

test('bad bundles and options fail with exact messages', () => {
  assert.throws(() => display(null as never), {
    message: 'Expected a MIME bundle (object of MIME type → data) for bundle but received null',
  });
  assert.throws(() => display({}), {
    message: 'Expected a MIME bundle with at least one MIME type for bundle but received an object of type Object',
  });
  assert.throws(() => display({ html: 'x' }), {
    message: 'Expected a MIME type like "text/html" for bundle key but received "html" of type string',
  });
  assert.throws(() => display({ 'text/html': 3 }), {
    message: 'Expected string for bundle["text/html"] but received 3 of type number',
  });
  assert.throws(() => display({ 'text/plain': 'x' }, { update: true }), {
    message: 'Expected non-empty string (required with update: true) for options.displayId but received undefined',
  });
  assert.throws(() => setDisplaySink({} as never), {
    message:
      'Expected an object with a display(bundle, options) method, or undefined for sink but received an object of type Object',
  });
});

test('display ids are unique and the rich-value protocol is detected', () => {
  assert.notEqual(newDisplayId(), newDisplayId());
  assert.match(newDisplayId('dash'), /^dash-[0-9a-f]{16}$/);
  assert.ok(hasMimeBundle({ [MIME_BUNDLE]: () => ({ 'text/plain': 'x' }) }));
  assert.ok(!hasMimeBundle({}));
  assert.ok(!hasMimeBundle(null));
});
