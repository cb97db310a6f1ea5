import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IOPub } from './iopub.js';
import { orphanMessage, type Message } from '../src/jupyter/message.js';

const parent = (id: string) => {
  const m = orphanMessage('s', 'execute_request', {}) as Message;
  m.header.msg_id = id;
  return m;
};

test('stream text is batched per parent and stream, and flushed before any other message', () => {
  const sent: string[] = [];
  const io = new IOPub((p, type, content) => sent.push(`${p.header.msg_id}:${type}:${JSON.stringify(content)}`), {
    flushMs: 10_000,
  });
  const a = parent('a'),
    b = parent('b');
  for (let i = 0; i < 1000; i++) io.stream(a, 'stdout', `${i}\n`);
  io.stream(a, 'stderr', 'warn\n');
  io.publish(a, 'display_data', { data: {} });
  io.stream(b, 'stdout', 'b\n');
  io.flush();
  assert.equal(sent.length, 5);
  assert.equal(sent[0], 'a:stream:{"name":"stdout","text":"0\\n"}', 'the first write after a quiet spell goes at once');
  assert.match(sent[1]!, /^a:stream:\{"name":"stdout","text":"1\\n2\\n3\\n.*999\\n"\}$/);
  assert.equal(sent[2], 'a:stream:{"name":"stderr","text":"warn\\n"}');
  assert.equal(sent[3], 'a:display_data:{"data":{}}');
  assert.equal(sent[4], 'b:stream:{"name":"stdout","text":"b\\n"}');
});

test('a batch is sent when it grows past the limit, and by its timer', async () => {
  const sent: string[] = [];
  let onSend = () => {};
  const io = new IOPub(
    (_p, _t, c) => {
      sent.push((c as { text: string }).text);
      onSend();
    },
    { flushMs: 50, maxBatchChars: 10 },
  );
  io.stream(parent('a'), 'stdout', 'first');
  io.stream(parent('a'), 'stdout', '0123456789ab');
  assert.deepEqual(sent, ['first', '0123456789ab']);
  io.stream(parent('a'), 'stdout', 'tail');
  assert.deepEqual(sent, ['first', '0123456789ab']);
  // Nothing else sends: the next message is the timer's batch. (Its timer is unref'd; the guard
  // keeps the event loop alive meanwhile and fails the test if the batch never comes.)
  await new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('the pending text was never flushed by its timer')), 60_000);
    onSend = () => {
      clearTimeout(guard);
      resolve();
    };
  });
  assert.deepEqual(sent, ['first', '0123456789ab', 'tail']);
});
