import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ProtocolError,
  childMessage,
  codePointsToUtf16,
  decode,
  encode,
  orphanMessage,
  sign,
  utf16ToCodePoints,
  type Message,
} from '../../src/jupyter/message.js';

const KEY = 'a0436f6c-1916-498b-8eb9-e81ab9368e84';

function request(): Message {
  const m = orphanMessage('session-1', 'execute_request', { code: '1 + 1' }) as Message;
  m.identities = [Buffer.from('client-id')];
  return m;
}

test('encode → decode round-trips and keeps routing identities and buffers', () => {
  const msg = request();
  msg.buffers = [Buffer.from([1, 2, 3])];
  const frames = encode(msg, KEY);
  assert.equal(frames[0]!.toString(), 'client-id');
  assert.equal(frames[1]!.toString(), '<IDS|MSG>');
  const back = decode(frames, KEY);
  assert.deepEqual(back.header, msg.header);
  assert.deepEqual(back.content, { code: '1 + 1' });
  assert.deepEqual(back.identities, [Buffer.from('client-id')]);
  assert.deepEqual(back.buffers, [Buffer.from([1, 2, 3])]);
});

test("the signature is the HMAC-SHA256 of the four JSON frames (value computed by Python's hmac)", () => {
  const parts = ['{"a":1}', '{}', '{}', '{"b":2}'];
  assert.equal(sign('key', 'hmac-sha256', parts), '0206f42f4ae2a48f6054ab91271f90c100f7022f55fb1f23de6377624d533752');
  assert.equal(sign('', 'hmac-sha256', parts), '', 'no key: signing disabled');
});

test('decode rejects tampered, unsigned and malformed messages', () => {
  const frames = encode(request(), KEY);
  const tampered = [...frames];
  tampered[tampered.length - 1] = Buffer.from('{"code":"evil"}');
  assert.throws(() => decode(tampered, KEY), {
    name: 'ProtocolError',
    message: 'message signature does not match the connection key',
  });
  assert.throws(
    () =>
      decode(
        frames.filter((f) => f.toString() !== '<IDS|MSG>'),
        KEY,
      ),
    { message: 'message has no <IDS|MSG> delimiter' },
  );
  assert.throws(() => decode(frames.slice(0, 4), KEY), ProtocolError);
  // With signing disabled any signature is accepted.
  assert.equal(decode(tampered, '').content.code, 'evil');
});

test('a child message answers its parent: same session, parent header, fresh id, version 5.3', () => {
  const parent = request();
  const reply = childMessage(parent, 'execute_reply', { status: 'ok' });
  assert.equal(reply.header.session, 'session-1');
  assert.equal(reply.header.msg_type, 'execute_reply');
  assert.equal(reply.header.version, '5.3');
  assert.notEqual(reply.header.msg_id, parent.header.msg_id);
  assert.deepEqual(reply.parent_header, parent.header);
  assert.deepEqual(reply.identities, parent.identities);
  assert.deepEqual(childMessage(parent, 'stream', {}, []).identities, []);
});

test('cursor positions: code points (protocol) ↔ UTF-16 indices (JavaScript)', () => {
  const code = 'const 🐱 = "é"; c';
  // 🐱 is one code point but two UTF-16 units.
  assert.equal(codePointsToUtf16(code, 7), 8);
  assert.equal(utf16ToCodePoints(code, 8), 7);
  assert.equal(codePointsToUtf16(code, [...code].length), code.length);
  assert.equal(utf16ToCodePoints(code, code.length), [...code].length);
  assert.equal(codePointsToUtf16('abc', 2), 2);
});
