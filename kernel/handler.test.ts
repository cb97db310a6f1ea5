import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CellOutcome, Completion, Executor } from './executor.js';
import { Handler } from './handler.js';
import { IOPub } from './iopub.js';
import { orphanMessage, type Message } from '../src/jupyter/message.js';

/**
 * An executor that runs "cells" from a script: each code string maps to what it does. The
 * handler's job (message order, replies, aborting, history) is what these tests check.
 */
function scriptedExecutor(
  script: Record<string, (ex: { write: (t: string) => void }) => Promise<CellOutcome> | CellOutcome>,
  write: (t: string) => void,
): Executor & { interrupts: number } {
  const ex = {
    interrupts: 0,
    busy: false,
    locals: {},
    async execute(code: string) {
      const step = script[code];
      if (!step) throw new Error(`no script for ${code}`);
      return step({ write });
    },
    complete(code: string, position: number): Completion {
      // Complete the identifier before the cursor from a fixed vocabulary.
      const start = code.slice(0, position).search(/[\w$]*$/);
      const prefix = code.slice(start, position);
      const matches = ['display', 'dashboard', 'Date'].filter((m) => m.startsWith(prefix));
      return { start, end: position, matches, kinds: matches.map(() => 'function') };
    },
    inspect(code: string) {
      return code.includes('display') ? 'function display(bundle: MimeBundle): MimeBundle' : null;
    },
    declare() {
      return undefined;
    },
    interrupt() {
      ex.interrupts++;
    },
    close() {},
  };
  return ex;
}

const ok = (value?: unknown): CellOutcome => ({
  result: value === undefined ? undefined : { value },
  interrupted: false,
  abandoned: false,
});
const failed = (ename: string): CellOutcome => ({
  error: { ename, evalue: `${ename} happened`, traceback: [`${ename}: ${ename} happened`] },
  interrupted: false,
  abandoned: false,
});

interface Sent {
  channel: 'iopub' | 'reply';
  parent: string;
  type: string;
  content: Record<string, unknown>;
}

function setup(script: Parameters<typeof scriptedExecutor>[0], drain?: () => Promise<void>) {
  const sent: Sent[] = [];
  const iopub = new IOPub((parent, type, content) =>
    sent.push({ channel: 'iopub', parent: parent.header.msg_id, type, content: content as Record<string, unknown> }),
  );
  let handler!: Handler;
  const executor = scriptedExecutor(script, (t) => handler.write('stdout', t));
  handler = new Handler({ executor, iopub, drainShell: drain, info: { status: 'ok' } as never });
  let n = 0;
  const request = (type: string, content: Record<string, unknown>): [Message, Promise<void>] => {
    const msg = orphanMessage('s', type, content) as Message;
    msg.header.msg_id = `${type.replace('_request', '')}-${++n}`;
    const done = handler.handle(msg, (replyType, c) =>
      sent.push({
        channel: 'reply',
        parent: msg.header.msg_id,
        type: replyType,
        content: c as Record<string, unknown>,
      }),
    );
    return [msg, done];
  };
  return { sent, request, handler, executor };
}

const brief = (sent: Sent[], parent?: string) =>
  sent
    .filter((s) => parent === undefined || s.parent === parent)
    .map((s) =>
      s.type === 'status'
        ? `${s.content.execution_state}`
        : s.channel === 'reply'
          ? `reply:${s.content.status}`
          : s.type,
    );

test('an execute request: busy, execute_input, output, result, reply, idle — in that order', async () => {
  const { sent, request } = setup({
    cell: ({ write }) => {
      write('hello\n');
      write('again\n');
      write('and again\n');
      return ok(42);
    },
  });
  const [msg, done] = request('execute_request', { code: 'cell' });
  await done;
  assert.deepEqual(brief(sent), ['busy', 'execute_input', 'stream', 'stream', 'execute_result', 'reply:ok', 'idle']);
  const streams = sent.filter((s) => s.type === 'stream').map((s) => s.content);
  assert.deepEqual(
    streams,
    [
      { name: 'stdout', text: 'hello\n' },
      { name: 'stdout', text: 'again\nand again\n' },
    ],
    'the first write goes at once, the rest are batched',
  );
  assert.deepEqual(sent.find((s) => s.type === 'execute_result')!.content, {
    execution_count: 1,
    data: { 'text/plain': '42' },
    metadata: {},
  });
  assert.deepEqual(sent.find((s) => s.type === 'execute_input')!.content, { code: 'cell', execution_count: 1 });
  assert.equal(
    sent.every((s) => s.parent === msg.header.msg_id),
    true,
  );
});

test('a failed cell: error message and error reply with ename/evalue/traceback; later queued cells are aborted', async () => {
  let drained!: () => void;
  const { sent, request } = setup(
    { bad: () => failed('RangeError'), good: () => ok(1) },
    () =>
      new Promise((r) => {
        drained = r;
      }),
  );
  const [bad, d1] = request('execute_request', { code: 'bad' });
  const [queued, d2] = request('execute_request', { code: 'good' });
  await Promise.all([d1, d2]);
  assert.deepEqual(brief(sent, bad.header.msg_id), ['busy', 'execute_input', 'error', 'reply:error', 'idle']);
  const reply = sent.find((s) => s.parent === bad.header.msg_id && s.channel === 'reply')!;
  assert.deepEqual(reply.content, {
    status: 'error',
    execution_count: 1,
    ename: 'RangeError',
    evalue: 'RangeError happened',
    traceback: ['RangeError: RangeError happened'],
  });
  assert.deepEqual(brief(sent, queued.header.msg_id), ['busy', 'reply:aborted', 'idle']);
  // Until the socket is drained, new requests are aborted too; after it, they run again.
  const [late, d3] = request('execute_request', { code: 'good' });
  await d3;
  assert.deepEqual(brief(sent, late.header.msg_id), ['busy', 'reply:aborted', 'idle']);
  drained();
  await new Promise((r) => setImmediate(r));
  const [after, d4] = request('execute_request', { code: 'good' });
  await d4;
  assert.deepEqual(brief(sent, after.header.msg_id), ['busy', 'execute_input', 'execute_result', 'reply:ok', 'idle']);
  assert.equal(
    sent.find((s) => s.parent === after.header.msg_id && s.type === 'execute_input')!.content.execution_count,
    2,
    'aborted cells take no number',
  );
});

test('stop_on_error=false: the next cell runs', async () => {
  const { sent, request } = setup({ bad: () => failed('Error'), good: () => ok(2) }, () => new Promise(() => {}));
  const [, d1] = request('execute_request', { code: 'bad', stop_on_error: false });
  const [next, d2] = request('execute_request', { code: 'good' });
  await Promise.all([d1, d2]);
  assert.deepEqual(brief(sent, next.header.msg_id), ['busy', 'execute_input', 'execute_result', 'reply:ok', 'idle']);
});

test('silent cells publish nothing but their output and take no execution count', async () => {
  const { sent, request } = setup({
    quiet: ({ write }) => {
      write('x');
      return ok(5);
    },
    loud: () => ok(6),
  });
  const [quiet, d1] = request('execute_request', { code: 'quiet', silent: true });
  await d1;
  assert.deepEqual(brief(sent, quiet.header.msg_id), ['busy', 'stream', 'reply:ok', 'idle']);
  assert.equal(sent.find((s) => s.parent === quiet.header.msg_id && s.channel === 'reply')!.content.execution_count, 0);
  const [, d2] = request('execute_request', { code: 'loud' });
  await d2;
  assert.equal(sent.filter((s) => s.type === 'execute_input').at(-1)!.content.execution_count, 1);
});

test('an interrupted cell that stopped cleanly shows its value and reports the interrupt', async () => {
  const { sent, request } = setup({
    train: () => ({
      result: { value: 'stopped at step 3' },
      error: { ename: 'InterruptedError', evalue: 'interrupted by the user', traceback: [] },
      interrupted: true,
      abandoned: false,
    }),
  });
  const [, done] = request('execute_request', { code: 'train' });
  await done;
  assert.deepEqual(brief(sent), ['busy', 'execute_input', 'execute_result', 'error', 'reply:error', 'idle']);
});

test('history: tail, range and search over the cells run, with outputs', async () => {
  const { sent, request } = setup({ 'a = 1': () => ok(), '1 + 2': () => ok(3), 'b = 2': () => ok() });
  for (const code of ['a = 1', '1 + 2', 'b = 2', '1 + 2']) await request('execute_request', { code })[1];
  const history = async (content: Record<string, unknown>) => {
    const [, d] = request('history_request', content);
    await d;
    return sent.filter((s) => s.type === 'history_reply').at(-1)!.content.history;
  };
  assert.deepEqual(await history({ hist_access_type: 'tail', n: 2, output: false, raw: true }), [
    [1, 3, 'b = 2'],
    [1, 4, '1 + 2'],
  ]);
  assert.deepEqual(await history({ hist_access_type: 'tail', n: 1, output: true, raw: true }), [
    [1, 4, ['1 + 2', '3']],
  ]);
  assert.deepEqual(
    await history({ hist_access_type: 'range', session: 1, start: 2, stop: 3, output: false, raw: true }),
    [[1, 2, '1 + 2']],
  );
  assert.deepEqual(await history({ hist_access_type: 'search', pattern: '1 + *', output: false, raw: true }), [
    [1, 2, '1 + 2'],
    [1, 4, '1 + 2'],
  ]);
  assert.deepEqual(
    await history({ hist_access_type: 'search', pattern: '1 + *', unique: true, output: false, raw: true }),
    [[1, 4, '1 + 2']],
  );
  assert.deepEqual(await history({ hist_access_type: 'search', pattern: '[ab] = ?', output: false, raw: true }), [
    [1, 1, 'a = 1'],
    [1, 3, 'b = 2'],
  ]);
});

test('completion converts cursor positions between code points and UTF-16', async () => {
  const { sent, request } = setup({});
  const code = '"🐱"; disp';
  const [, done] = request('complete_request', { code, cursor_pos: [...code].length });
  await done;
  const reply = sent.find((s) => s.type === 'complete_reply')!.content;
  assert.deepEqual(reply.matches, ['display']);
  assert.equal(reply.cursor_start, [...code].length - 4);
  assert.equal(reply.cursor_end, [...code].length);
  assert.deepEqual((reply.metadata as Record<string, unknown>)._jupyter_types_experimental, [
    { start: 5, end: 9, text: 'display', type: 'function' },
  ]);
});

test('inspect, is_complete, comm_info, interrupt_request; unknown requests get an error reply', async () => {
  const { sent, request, executor } = setup({});
  await request('inspect_request', { code: 'display', cursor_pos: 3 })[1];
  await request('inspect_request', { code: 'nothing', cursor_pos: 3 })[1];
  await request('is_complete_request', { code: 'function f() {' })[1];
  await request('is_complete_request', { code: 'f()' })[1];
  await request('comm_info_request', {})[1];
  await request('interrupt_request', {})[1];
  await request('frobnicate_request', {})[1];
  const replies = sent.filter((s) => s.channel === 'reply').map((s) => [s.type, s.content]);
  assert.deepEqual(
    replies,
    [
      [
        'inspect_reply',
        {
          status: 'ok',
          found: true,
          data: { 'text/plain': 'function display(bundle: MimeBundle): MimeBundle' },
          metadata: {},
        },
      ],
      ['inspect_reply', { status: 'ok', found: false, data: {}, metadata: {} }],
      ['is_complete_reply', { status: 'incomplete', indent: '  ' }],
      ['is_complete_reply', { status: 'complete' }],
      ['comm_info_reply', { status: 'ok', comms: {} }],
      ['interrupt_reply', { status: 'ok' }],
      [
        'frobnicate_reply',
        {
          status: 'error',
          ename: 'Error',
          evalue: 'unsupported message type frobnicate_request',
          traceback: ['Error: unsupported message type frobnicate_request'],
        },
      ],
    ].map(([t, c]) => [t, c]),
  );
  assert.equal(executor.interrupts, 1);
});

test('displays from runtime code go to the running request; process output before any request does not', async () => {
  const { sent, request, handler } = setup({
    show: () => {
      handler.sink.display(
        { 'application/vnd.vqalab.metrics.v1+json': { runs: [] }, 'text/plain': 'm' },
        { displayId: 'd1' },
      );
      return ok();
    },
  });
  assert.equal(handler.write('stdout', 'early'), false);
  await request('execute_request', { code: 'show' })[1];
  const shown = sent.find((s) => s.type === 'display_data')!;
  assert.deepEqual(shown.content, {
    data: { 'application/vnd.vqalab.metrics.v1+json': { runs: [] }, 'text/plain': 'm' },
    metadata: {},
    transient: { display_id: 'd1' },
  });
});
