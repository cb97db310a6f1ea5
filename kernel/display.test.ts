import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DISPLAYED, MIME_BUNDLE, display, setDisplaySink } from '../src/display/sink.js';
import { displayContent, kernelSink, resultBundle } from './display.js';

test('bundles become display contents: bytes base64-encoded, display ids transient, metadata kept', () => {
  const png = new Uint8Array([137, 80, 78, 71]);
  const c = displayContent(
    { 'image/png': png, 'text/plain': 'img', 'application/vnd.vqalab.sample.v1+json': { id: 'q1' } },
    { displayId: 'd', metadata: { 'image/png': { width: 2 } } },
  );
  assert.deepEqual(c, {
    data: { 'image/png': 'iVBORw==', 'text/plain': 'img', 'application/vnd.vqalab.sample.v1+json': { id: 'q1' } },
    metadata: { 'image/png': { width: 2 } },
    transient: { display_id: 'd' },
  });
  const view = new Uint8Array(new Uint8Array([0, 1, 2, 3]).buffer, 1, 2);
  assert.equal(
    displayContent({ 'image/png': view }).data['image/png'],
    Buffer.from([1, 2]).toString('base64'),
    'a view encodes only its bytes',
  );
});

test('cell values: undefined shows nothing, displayed bundles are not echoed, rich values show their bundle', () => {
  assert.equal(resultBundle(undefined), null);
  assert.deepEqual(resultBundle(null), { 'text/plain': 'null' });
  assert.deepEqual(resultBundle('s'), { 'text/plain': "'s'" });
  const shown = { 'text/plain': 'x' };
  Object.defineProperty(shown, DISPLAYED, { value: true });
  assert.equal(resultBundle(shown), null);
  assert.equal(resultBundle([shown, shown]), null, 'a list of displayed bundles is not echoed either');
  assert.deepEqual(resultBundle([shown, 1]), { 'text/plain': "[ { 'text/plain': 'x' }, 1 ]" });
  assert.deepEqual(resultBundle([]), { 'text/plain': '[]' });
  assert.deepEqual(resultBundle({ [MIME_BUNDLE]: () => ({ 'text/html': '<b>t</b>', 'text/plain': 't' }) }), {
    'text/html': '<b>t</b>',
    'text/plain': 't',
  });
  const broken = resultBundle({ [MIME_BUNDLE]: () => ({}) })!;
  assert.match(String(broken['text/plain']), /rich view failed: Expected a MIME bundle with at least one MIME type/);
});

test('the kernel sink publishes display_data, update_display_data and clear_output', () => {
  const sent: [string, unknown][] = [];
  setDisplaySink(kernelSink((type, content) => sent.push([type, content])));
  try {
    const b = display({ 'text/plain': 'a' }, { displayId: 'x' });
    display({ 'text/plain': 'b' }, { displayId: 'x', update: true });
    assert.equal((b as Record<symbol, unknown>)[DISPLAYED], true);
  } finally {
    setDisplaySink(undefined);
  }
  assert.deepEqual(
    sent.map(([t]) => t),
    ['display_data', 'update_display_data'],
  );
  assert.deepEqual(sent[1]![1], { data: { 'text/plain': 'b' }, metadata: {}, transient: { display_id: 'x' } });
  const cleared: string[] = [];
  kernelSink((t, c) => cleared.push(`${t}:${JSON.stringify(c)}`)).clear!({ wait: true });
  assert.deepEqual(cleared, ['clear_output:{"wait":true}']);
});
