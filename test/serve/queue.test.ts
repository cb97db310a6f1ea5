/** The engine queue: fair between clients, bounded, drops jobs whose client left; data URL decoding. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FairQueue, QueueFullError } from '../../src/serve/queue.js';
import { decodeDataUrl } from '../../src/serve/media.js';
import { ApiError } from '../../src/serve/errors.js';

function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => {
    open = r;
  });
  return { p, open };
}

test('round robin between clients: a flood from one client delays another by at most one job', async () => {
  const q = new FairQueue(100, 1);
  const order: string[] = [];
  const first = gate();
  const jobs: Promise<unknown>[] = [];
  jobs.push(
    q.submit('a', async () => {
      order.push('a0');
      await first.p;
    }),
  );
  for (let i = 1; i <= 4; i++)
    jobs.push(
      q.submit('a', async () => {
        order.push(`a${i}`);
      }),
    );
  jobs.push(
    q.submit('b', async () => {
      order.push('b0');
    }),
  );
  jobs.push(
    q.submit('c', async () => {
      order.push('c0');
    }),
  );
  jobs.push(
    q.submit('b', async () => {
      order.push('b1');
    }),
  );
  assert.deepEqual(q.stats(), { pending: 7, running: 1, runningWeight: 1, completed: 0, dropped: 0, clients: 3 });
  first.open();
  await Promise.all(jobs);
  assert.deepEqual(order, ['a0', 'a1', 'b0', 'c0', 'a2', 'b1', 'a3', 'a4']);
  assert.equal(q.stats().completed, 8);
});

test('bounded: beyond maxPending a job is refused at once; results and errors reach their callers', async () => {
  const q = new FairQueue(2, 1);
  const g = gate();
  const running = q.submit('x', async () => {
    await g.p;
    return 1;
  });
  const a = q.submit('x', async () => 2);
  const b = q.submit('y', async () => {
    throw new Error('engine failed');
  });
  await assert.rejects(
    q.submit('z', async () => 3),
    (e: unknown) =>
      e instanceof QueueFullError && e.message === 'the engine queue is full (2 requests waiting); retry later',
  );
  g.open();
  assert.equal(await running, 1);
  assert.equal(await a, 2);
  await assert.rejects(b, { message: 'engine failed' });
});

test('a job whose signal aborts before it starts is dropped without running', async () => {
  const q = new FairQueue(10, 1);
  const g = gate();
  let ran = false;
  const first = q.submit('a', () => g.p);
  const ac = new AbortController();
  const second = q.submit(
    'b',
    async () => {
      ran = true;
    },
    ac.signal,
  );
  ac.abort(new Error('client left'));
  await assert.rejects(second, { message: 'client left' });
  g.open();
  await first;
  assert.equal(ran, false);
  assert.equal(q.stats().dropped, 1);
});

test('data URLs: strict base64 (or base64url), image types only, size checked before decoding', () => {
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
  assert.deepEqual(decodeDataUrl(`data:image/png;base64,${png.toString('base64')}`, 'p', 100), png);
  assert.deepEqual(decodeDataUrl(`data:image/png;base64,${png.toString('base64url')}`, 'p', 100), png);
  const err = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof ApiError);
      return `${e.status} ${e.code}: ${e.message}`;
    }
    return 'no error';
  };
  assert.equal(
    err(() => decodeDataUrl('data:image/png,rawbytes', 'p', 100)),
    '400 invalid_image_url: p: only base64 data URLs are accepted (data:image/png;base64,...)',
  );
  assert.equal(
    err(() => decodeDataUrl('data:text/html;base64,PGI+', 'p', 100)),
    '400 invalid_image_url: p: the data URL\'s type is "text/html", not an image',
  );
  assert.equal(
    err(() => decodeDataUrl('data:image/png;base64,AAA$', 'p', 100)),
    '400 invalid_base64: p: the data URL is not valid base64 (character "$" at offset 3)',
  );
  assert.equal(
    err(() => decodeDataUrl('data:image/png;base64,AAAAA=', 'p', 100)),
    '400 invalid_base64: p: the data URL is not valid base64 (bad length or padding)',
  );
  assert.equal(
    err(() => decodeDataUrl(`data:image/png;base64,${'A'.repeat(200)}`, 'p', 100)),
    "400 image_too_large: p: the image is 150 bytes, more than this server's limit of 100 bytes per image",
  );
});

test('capacity by weight: jobs start while their rows fit; the next in turn waits for room rather than being overtaken', async () => {
  const q = new FairQueue(100, 8);
  const order: string[] = [];
  const gates = new Map<string, ReturnType<typeof gate>>();
  const job = (name: string) => async () => {
    order.push(`start ${name}`);
    const g = gate();
    gates.set(name, g);
    await g.p;
    order.push(`end ${name}`);
  };
  const all = [
    q.submit('a', job('a4'), undefined, 4),
    q.submit('b', job('b3'), undefined, 3),
    q.submit('c', job('c2'), undefined, 2), // 4 + 3 + 2 > 8: waits
    q.submit('d', job('d1'), undefined, 1), // would fit, but c is first in turn
    q.submit('e', job('e20'), undefined, 20), // larger than the capacity: runs when nothing else does
  ];
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['start a4', 'start b3']);
  assert.deepEqual(q.stats(), { pending: 3, running: 2, runningWeight: 7, completed: 0, dropped: 0, clients: 3 });
  gates.get('a4')!.open();
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(order.slice(2), ['end a4', 'start c2', 'start d1']);
  gates.get('b3')!.open();
  gates.get('c2')!.open();
  await new Promise((r) => setTimeout(r, 5));
  assert.ok(!order.includes('start e20'), 'the oversized job waits until nothing runs');
  gates.get('d1')!.open();
  await new Promise((r) => setTimeout(r, 5));
  assert.ok(order.includes('start e20'));
  gates.get('e20')!.open();
  await Promise.all(all);
  assert.equal(q.stats().runningWeight, 0);
});
