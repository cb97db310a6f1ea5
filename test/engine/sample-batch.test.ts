/**
 * Multi-prompt sampling (continuous batching): several prompts in one decode loop give, bit for bit,
 * what each gives alone; requests join a running loop; tokens stream before the call settles;
 * cancelling one request leaves the others unchanged; other engine calls are not starved.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/engine/model.js';
import type { Prompt, SampleRequest, SampleResult, TokenEvent } from '../../src/engine/types.js';
import { fixture } from './helpers.js';

const c = fixture('untied_mqa_two_images');
const IMG = 60;

/** Prompts of different shapes for the same model: two images, one image, text only, very short. */
const twoImages = c.prompt;
const oneImage: Prompt = {
  ids: Int32Array.from([21, 15, 36, 58, IMG, 59, 34, 40, 17, 8]),
  images: [c.prompt.images[0]!],
};
const textOnly: Prompt = { ids: Int32Array.from([21, 15, 36, 34, 40, 17, 8, 53, 7, 11, 40, 41]), images: [] };
const short: Prompt = { ids: Int32Array.from([5, 9, 13]), images: [] };

function bits(a: Float32Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** The same token ids, the same log-probs to the bit, the same finish reasons. */
function assertSameResult(got: SampleResult, want: SampleResult, what: string): void {
  assert.equal(got.tokenIds.length, want.tokenIds.length, `${what}: number of samples`);
  want.tokenIds.forEach((ids, g) => {
    assert.deepEqual(Array.from(got.tokenIds[g]!), Array.from(ids), `${what}: sample ${g} ids`);
    assert.ok(
      bits(got.logprobs[g]!).equals(bits(want.logprobs[g]!)),
      `${what}: sample ${g} log-probs differ in some bit`,
    );
  });
  assert.deepEqual(got.finishReason, want.finishReason, `${what}: finish reasons`);
}

async function alone(m: Awaited<ReturnType<typeof loadModel>>, reqs: SampleRequest[]): Promise<SampleResult[]> {
  const out: SampleResult[] = [];
  for (const r of reqs) out.push(await m.sample(r)); // one at a time: each its own run
  return out;
}

test('sampleBatch: every prompt gets, bit for bit, what it gets alone (ids, log-probs, finish reasons)', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const probe = await m.sample({ prompt: short, n: 4, temperature: 1.3, maxTokens: 7, seed: 21 });
    const reqs: SampleRequest[] = [
      { prompt: twoImages, n: 3, temperature: 1, maxTokens: 9, seed: 5 },
      { prompt: textOnly, n: 1, temperature: 0, maxTokens: 12, seed: 0 },
      { prompt: twoImages, n: 2, temperature: 0.8, topK: 5, topP: 0.9, maxTokens: 4, seed: 77 },
      // a stop id that ends some rows early (the second token of sample 1), so rows leave mid-batch
      { prompt: short, n: 4, temperature: 1.3, maxTokens: 7, seed: 21, stopTokenIds: [probe.tokenIds[1]![1]!] },
      { prompt: oneImage, n: 5, temperature: 0.7, topP: 0.8, maxTokens: 15, seed: 1234567 },
    ];
    const want = await alone(m, reqs);
    assert.ok(want[3]!.finishReason.includes('stop'), 'some row of the fourth request stops early');
    const before = m.sampleStats();
    const got = await m.sampleBatch(reqs);
    const after = m.sampleStats();
    got.forEach((r, i) => assertSameResult(r, want[i]!, `request ${i}`));
    assert.equal(after.runs - before.runs, 1, 'the five requests ran in one batched loop');
    assert.ok(after.maxConcurrent >= 5);
    // and in another order, with a duplicate: still the same
    const again = await m.sampleBatch([reqs[4]!, reqs[0]!, reqs[4]!, reqs[2]!]);
    assertSameResult(again[0]!, want[4]!, 'reordered 4');
    assertSameResult(again[1]!, want[0]!, 'reordered 0');
    assertSameResult(again[2]!, want[4]!, 'duplicate 4');
    assertSameResult(again[3]!, want[2]!, 'reordered 2');
  } finally {
    m.dispose();
  }
});

test('continuous batching: requests made while a loop runs join it and still get what they get alone', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const long: SampleRequest = { prompt: twoImages, n: 6, temperature: 1, maxTokens: 120, seed: 3 };
    const late: SampleRequest[] = [
      { prompt: textOnly, n: 2, temperature: 1, maxTokens: 10, seed: 8 },
      { prompt: oneImage, n: 1, temperature: 0, maxTokens: 6, seed: 0 },
      { prompt: twoImages, n: 3, temperature: 0.9, topK: 7, maxTokens: 20, seed: 99 },
    ];
    const want = await alone(m, [long, ...late]);
    const before = m.sampleStats();
    let joinedAt: Promise<SampleResult[]> | undefined;
    let settledLate = -1;
    const first = m.sample({
      ...long,
      onToken: () => {
        if (joinedAt) return;
        // the loop is running (its first tokens are out): these join it at its next step
        joinedAt = Promise.all(late.map((r) => m.sample(r))).then((rs) => {
          settledLate = performance.now();
          return rs;
        });
      },
    });
    const got0 = await first;
    const settledLong = performance.now();
    const gotLate = await joinedAt!;
    const after = m.sampleStats();
    assertSameResult(got0, want[0]!, 'the long request');
    gotLate.forEach((r, i) => assertSameResult(r, want[i + 1]!, `late request ${i}`));
    assert.equal(after.runs - before.runs, 1, 'one run served all four');
    assert.equal(after.joined - before.joined, 3);
    assert.ok(settledLate <= settledLong, 'the short late requests settled without waiting for the long one');
  } finally {
    m.dispose();
  }
});

test('streaming: token events add up to the result and arrive while the call is still running', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const reqs: SampleRequest[] = [
      { prompt: twoImages, n: 3, temperature: 1, maxTokens: 100, seed: 17 },
      { prompt: textOnly, n: 2, temperature: 1.1, maxTokens: 60, seed: 4 },
    ];
    const want = await alone(m, reqs);
    const events: (TokenEvent & { at: number })[] = [];
    const packets = new Set<number>();
    const t0 = performance.now();
    const got = await m.sampleBatch(
      reqs.map((r) => ({
        ...r,
        onToken: (e: TokenEvent) => {
          const at = performance.now();
          packets.add(at);
          events.push({ ...e, at });
        },
      })),
    );
    const end = performance.now();
    got.forEach((r, i) => assertSameResult(r, want[i]!, `streamed request ${i}`));
    reqs.forEach((r, i) => {
      for (let g = 0; g < r.n; g++) {
        const mine = events.filter((e) => e.request === i && e.row === g);
        assert.deepEqual(
          mine.map((e) => e.tokenId),
          Array.from(got[i]!.tokenIds[g]!),
          `request ${i} row ${g}: streamed ids`,
        );
        assert.deepEqual(
          Float32Array.from(mine.map((e) => e.logprob)),
          got[i]!.logprobs[g]!,
          `request ${i} row ${g}: streamed log-probs`,
        );
      }
    });
    const firstAt = events[0]!.at - t0,
      lastAt = events.at(-1)!.at - t0;
    assert.ok(packets.size >= 10, `tokens came in many deliveries (${packets.size}), not all at the end`);
    assert.ok(
      firstAt < (end - t0) / 2,
      `the first token came early (${firstAt.toFixed(1)} ms of ${(end - t0).toFixed(1)} ms)`,
    );
    assert.ok(lastAt <= end - t0);
    // a request without onToken in the same batch gets no events, and the same result
    const mixed = await m.sampleBatch([reqs[0]!, { ...reqs[1]!, onToken: () => undefined }]);
    assertSameResult(mixed[0]!, want[0]!, 'unstreamed request next to a streamed one');
  } finally {
    m.dispose();
  }
});

test('cancelling one request of a batch: its rows leave, it rejects with the reason, the others are unchanged', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const victim: SampleRequest = { prompt: twoImages, n: 8, temperature: 1, maxTokens: 230, seed: 2 };
    const others: SampleRequest[] = [
      { prompt: textOnly, n: 2, temperature: 1, maxTokens: 40, seed: 8 },
      { prompt: oneImage, n: 3, temperature: 0.5, maxTokens: 30, seed: 5 },
    ];
    const want = await alone(m, others);
    const before = m.sampleStats();
    const ac = new AbortController();
    let seen = 0;
    const v = m.sample({
      ...victim,
      signal: ac.signal,
      onToken: () => {
        if (++seen === 8 * 5) ac.abort(new Error('client went away'));
      },
    });
    const rest = others.map((r) => m.sample(r));
    await assert.rejects(v, { message: 'client went away' });
    const got = await Promise.all(rest);
    got.forEach((r, i) => assertSameResult(r, want[i]!, `request ${i} next to the cancelled one`));
    const after = m.sampleStats();
    assert.equal(after.cancelled - before.cancelled, 1);
    assert.equal(after.runs - before.runs, 1);
    assert.ok(seen < 8 * 20, `the cancelled rows stopped soon after the abort (${seen} tokens)`);

    // a whole batch: options.signal cancels every request; the model works on
    const all = new AbortController();
    // Cancelled once its first token has streamed, whatever the machine's speed.
    const b = m.sampleBatch([{ ...victim, onToken: () => all.abort(new Error('batch cancelled')) }, others[0]!], {
      signal: all.signal,
    });
    await assert.rejects(b, { message: 'batch cancelled' });
    const s = await m.sample(others[1]!);
    assertSameResult(s, want[1]!, 'after a cancelled batch');
    // aborted before it starts: rejects at once
    await assert.rejects(m.sample({ ...others[0]!, signal: AbortSignal.abort(new Error('too late')) }), {
      message: 'too late',
    });
  } finally {
    m.dispose();
  }
});

test('an onToken callback that throws ends its own request with that error; the others finish', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const ok: SampleRequest = { prompt: textOnly, n: 2, temperature: 1, maxTokens: 30, seed: 6 };
    const [want] = await alone(m, [ok]);
    const [bad, good] = [
      m.sample({
        prompt: twoImages,
        n: 2,
        temperature: 1,
        maxTokens: 50,
        seed: 1,
        onToken: () => {
          throw new Error('callback failed');
        },
      }),
      m.sample(ok),
    ];
    await assert.rejects(bad!, { message: 'callback failed' });
    assertSameResult(await good!, want!, 'the healthy request');
  } finally {
    m.dispose();
  }
});

test('a forward queued while sampling runs is not starved: later sampling requests wait behind it', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const order: string[] = [];
    let fwd: Promise<unknown> | undefined, second: Promise<unknown> | undefined;
    const before = m.sampleStats();
    const first = m
      .sample({
        prompt: twoImages,
        n: 4,
        temperature: 1,
        maxTokens: 150,
        seed: 1,
        onToken: () => {
          if (fwd) return;
          fwd = m.forward([{ prompt: c.prompt, completions: c.completions }]).then(() => order.push('forward'));
          second = m
            .sample({ prompt: textOnly, n: 1, temperature: 1, maxTokens: 5, seed: 2 })
            .then(() => order.push('second sample'));
        },
      })
      .then(() => order.push('first sample'));
    await Promise.all([first]);
    await Promise.all([fwd, second]);
    assert.deepEqual(order, ['first sample', 'forward', 'second sample']);
    const after = m.sampleStats();
    assert.equal(after.joined - before.joined, 0, 'the second sample did not overtake the queued forward');
    assert.equal(after.runs - before.runs, 2);
  } finally {
    m.dispose();
  }
});

test('with a device attached, a run hands each request to the device: same results, tokens at the end, cancellation between requests', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  const cpu = await loadModel(`${c.dir}/policy`);
  try {
    const reqs: SampleRequest[] = [
      { prompt: twoImages, n: 3, temperature: 1, maxTokens: 9, seed: 5 },
      { prompt: textOnly, n: 2, temperature: 0, maxTokens: 12, seed: 0 },
      { prompt: oneImage, n: 4, temperature: 0.7, topP: 0.8, maxTokens: 15, seed: 1234567 },
    ];
    const want = await alone(cpu, reqs);
    // the device samples with `cpu`, 40 ms after it is handed each request
    m._native._attachTestDevice(cpu._native, 40);
    assert.match(m._native.info().device, /^test/);
    const before = m.sampleStats();
    const events: TokenEvent[] = [];
    let settled0 = false;
    const t0 = performance.now();
    const got = await m.sampleBatch(
      reqs.map((r, i) =>
        i === 0
          ? {
              ...r,
              onToken: (e: TokenEvent) => {
                assert.equal(settled0, false);
                events.push(e);
              },
            }
          : r,
      ),
    );
    settled0 = true;
    const took = performance.now() - t0;
    assert.ok(took >= 3 * 40, `one request after another on the device (${took.toFixed(0)} ms for three)`);
    got.forEach((r, i) => assertSameResult(r, want[i]!, `device request ${i}`));
    for (let g = 0; g < reqs[0]!.n; g++) {
      const mine = events.filter((e) => e.row === g);
      assert.deepEqual(
        mine.map((e) => e.tokenId),
        Array.from(got[0]!.tokenIds[g]!),
        `row ${g}: streamed ids`,
      );
      assert.deepEqual(
        Float32Array.from(mine.map((e) => e.logprob)),
        got[0]!.logprobs[g]!,
        `row ${g}: streamed log-probs`,
      );
    }
    // tokens come in step order: every row's token t before any row's token t+1
    const steps = events.map((e, k) => events.slice(0, k).filter((x) => x.row === e.row).length);
    assert.deepEqual(
      steps,
      [...steps].sort((a, b) => a - b),
    );
    assert.equal(m.sampleStats().runs - before.runs, 1, 'the three requests went through one run');

    // The first request's tokens arrive once the device has finished it: cancelling the second then
    // (the device is busy with it) and the third (not started) drops both; the first is unchanged.
    const ac2 = new AbortController(),
      ac3 = new AbortController();
    const mid = m.sampleStats();
    const handed = () => Number(/; (\d+) sample calls/.exec(m._native.info().device)?.[1]);
    const handedBefore = handed();
    const [a, b, d] = [
      m.sample({
        ...reqs[0]!,
        onToken: () => {
          ac2.abort(new Error('second gone'));
          ac3.abort(new Error('third gone'));
        },
      }),
      m.sample({ ...reqs[1]!, signal: ac2.signal }),
      m.sample({ ...reqs[2]!, signal: ac3.signal }),
    ];
    await Promise.allSettled([b!, d!]);
    await assert.rejects(b!, { message: 'second gone' });
    await assert.rejects(d!, { message: 'third gone' });
    await a!;
    // the first reached the device, the second too unless its cancel came first (a race between
    // this thread and the run's); the third never did: it was dropped before it started
    const n = handed() - handedBefore;
    assert.ok(n === 1 || n === 2, `${n} requests handed to the device (${m._native.info().device})`);
    assertSameResult(await a!, want[0]!, 'the request before the cancelled ones');
    const end = m.sampleStats();
    assert.equal(end.cancelled - mid.cancelled, 2);
    assert.equal(end.completed - mid.completed, 1);
    // and the model samples on
    assertSameResult(await m.sample(reqs[2]!), want[2]!, 'after the cancelled requests');
  } finally {
    m.dispose();
    cpu.dispose();
  }
});

test('a synchronous call right after an awaited sample finds the model free (the run has let go of it)', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    for (let i = 0; i < 40; i++) {
      const [a, b] = await Promise.all([
        m.sample({ prompt: short, n: 2, temperature: 1, maxTokens: 3 + (i % 4), seed: i }),
        m.sample({ prompt: oneImage, n: 1, temperature: 1, maxTokens: 2 + (i % 3), seed: 100 + i }),
      ]);
      assert.ok(a.tokenIds.length === 2 && b.tokenIds.length === 1);
      m.zeroGrad(); // threw "the model is busy with another call" when a result settled before the run let go
      const one = await m.sample({ prompt: textOnly, n: 1, temperature: 0, maxTokens: 2, seed: 0 });
      assert.equal(one.tokenIds.length, 1);
      // Deterministic form of the same check (the race above needs a slow native thread): with
      // nothing else sampling, the run has ended by the time the caller resumes.
      assert.equal(
        (m as unknown as { loop: { current: unknown } }).loop.current,
        null,
        'the run is over when its last result settles',
      );
      m.zeroGrad();
    }
  } finally {
    m.dispose();
  }
});

test('sampleBatch checks its arguments with exact messages', async () => {
  const m = await loadModel(`${c.dir}/policy`);
  try {
    const good = { prompt: short, n: 1, temperature: 0, maxTokens: 2, seed: 0 };
    await assert.rejects(m.sampleBatch([]), {
      message: 'Expected non-empty array of sampling requests for requests but received an array of length 0',
    });
    await assert.rejects(m.sampleBatch([good, { ...good, n: 0 }]), {
      message: 'Expected integer between 1 and 4096 for requests[1].n but received 0 of type number',
    });
    await assert.rejects(m.sampleBatch([{ ...good, onToken: 3 as unknown as () => void }]), {
      message: 'Expected function for requests[0].onToken but received 3 of type number',
    });
    await assert.rejects(m.sample({ ...good, onToken: 'x' as unknown as () => void }), {
      message: 'Expected function for request.onToken but received "x" of type string',
    });
    await assert.rejects(m.sampleBatch([good], { signal: 1 as unknown as AbortSignal }), {
      message: 'Expected AbortSignal for options.signal but received 1 of type number',
    });
    await assert.rejects(
      m.sampleBatch([{ ...good, maxTokens: 1e6 }]),
      /^RangeError: requests\[0\]: prompt \(3 tokens\) \+ maxTokens 1000000/,
    );
  } finally {
    m.dispose();
  }
});
