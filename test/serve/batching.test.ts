/**
 * `vqalab serve` with continuous batching, on loopback with the embedded tiny model: concurrent
 * requests share the engine's decode loop and get exactly what they get one at a time (checked
 * against the queue-only mode on the same model); streams arrive token by token while the request
 * is still generating and add up to the non-streamed answer; a client that disconnects cancels its
 * rows and the others are unaffected; the incremental decoder agrees with complete().
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { LocalPolicy } from '../../src/rollout/local.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';

let policy: LocalPolicy;
let fx: Fixture;
let batched: ServeHandle;
let queued: ServeHandle; // batching: false, the same model

before(async () => {
  fx = await makeFixture();
  policy = await LocalPolicy.load(undefined, { threads: 1 });
  batched = await serve({ policy, port: 0, maxBatchRows: 32 });
  queued = await serve({ policy, port: 0, batching: false });
});

after(async () => {
  await batched?.close();
  await queued?.close();
  policy?.dispose();
  fx?.cleanup();
});

function body(seed: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: 'vqalab',
    temperature: 1,
    seed,
    max_tokens: 40,
    logprobs: true,
    return_token_ids: true,
    messages: [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: fx.dataUrl } },
          { type: 'text', text: `question ${seed}: what color is it?` },
        ],
      },
    ],
    ...extra,
  };
}

async function post(h: ServeHandle, b: Record<string, unknown>): Promise<any> {
  const res = await fetch(`${h.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(b),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

/** What a reply says per choice: text, ids, log-probs, finish reason. */
function answers(json: any): unknown[] {
  return json.choices.map((c: any) => ({
    text: c.message.content,
    ids: c.token_ids,
    lps: c.logprobs.content.map((t: any) => t.logprob),
    finish: c.finish_reason,
  }));
}

test('concurrent requests share one decode loop and get exactly what they get one at a time', async () => {
  const reqs = [
    body(1),
    body(2, { n: 3 }),
    body(3, { temperature: 0 }),
    body(4, { n: 2, top_p: 0.8, max_tokens: 12 }),
    body(5, { top_k: 5 }),
    body(6, { n: 4, stop: ['a'] }),
    body(7, { max_tokens: 3 }),
    body(8, { n: 2, temperature: 1.5 }),
  ];
  const alone: unknown[][] = [];
  for (const r of reqs) alone.push(answers(await post(queued, r)));
  const before = batched.stats().engine!;
  const together = await Promise.all(reqs.map((r) => post(batched, r)));
  const after = batched.stats().engine!;
  together.forEach((j, i) => assert.deepEqual(answers(j), alone[i], `request ${i}`));
  assert.ok(
    after.runs - before.runs < reqs.length,
    `fewer engine runs (${after.runs - before.runs}) than requests (${reqs.length})`,
  );
  assert.ok(after.maxConcurrent >= 3, `several requests decoded together (at most ${after.maxConcurrent})`);
  const health = (await (await fetch(batched.url.replace(/\/v1$/, '/health'))).json()) as {
    batching: boolean;
    engine: { runs: number };
  };
  assert.equal(health.batching, true);
  assert.ok(health.engine.runs >= 1);
});

test('streams token by token while generating; the deltas add up to the non-streamed answer', async () => {
  for (const [h, label] of [
    [batched, 'batching'],
    [queued, 'queue-only'],
  ] as const) {
    // a long request (n = 6, up to 300 tokens each) so that generation takes a while
    const b = body(31, { n: 6, max_tokens: 300, stop: ['qz'] });
    const whole = answers(await post(h, b)) as { text: string; lps: number[]; finish: string }[];
    const t0 = performance.now();
    const res = await fetch(`${h.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...b, stream: true }),
    });
    assert.equal(res.status, 200);
    const text = new Array<string>(6).fill(''),
      lps = Array.from({ length: 6 }, () => [] as number[]),
      finish = new Array<string | null>(6).fill(null);
    const arrivals: number[] = [];
    const decoder = new TextDecoder();
    let buf = '';
    for await (const part of res.body!) {
      buf += decoder.decode(part as Uint8Array, { stream: true });
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (event === 'data: [DONE]') continue;
        const chunk = JSON.parse(event.slice(6));
        for (const c of chunk.choices) {
          if (c.logprobs?.content?.length) arrivals.push(performance.now() - t0);
          text[c.index] += c.delta.content ?? '';
          for (const t of c.logprobs?.content ?? []) lps[c.index]!.push(t.logprob);
          if (c.finish_reason) finish[c.index] = c.finish_reason;
        }
      }
    }
    const total = performance.now() - t0;
    assert.deepEqual(
      text,
      whole.map((c) => c.text),
      `${label}: streamed text`,
    );
    assert.deepEqual(
      lps,
      whole.map((c) => c.lps),
      `${label}: streamed log-probs`,
    );
    assert.deepEqual(
      finish,
      whole.map((c) => c.finish),
      `${label}: finish reasons`,
    );
    assert.ok(arrivals.length > 50, `${label}: ${arrivals.length} token chunks`);
    // Streamed while generating, not written in one burst at the end: most token chunks come
    // well after the first. (Measured from the first token, not from the request: on a loaded
    // machine the time before the first token — image decoding, prefill — can be most of the total.)
    const later = arrivals.filter((a) => a - arrivals[0]! > 2).length;
    assert.ok(
      later >= arrivals.length / 2,
      `${label}: ${later} of ${arrivals.length} token chunks came more than 2 ms after the first (first at ${arrivals[0]!.toFixed(0)} ms of ${total.toFixed(0)} ms)`,
    );
    assert.ok(new Set(arrivals.map((a) => Math.round(a))).size > 5, `${label}: tokens arrived over time, not at once`);
  }
});

test('a client that disconnects mid-stream cancels its rows; a request running beside it is unaffected', async () => {
  const other = body(41, { n: 2, max_tokens: 60 });
  const want = answers(await post(queued, other));
  const before = batched.stats().engine!;
  const ac = new AbortController();
  const res = await fetch(`${batched.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    signal: ac.signal,
    body: JSON.stringify(
      body(40, { n: 8, max_tokens: 900, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    ),
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  await reader.read(); // the stream is under way
  const beside = post(batched, other);
  await new Promise((r) => setTimeout(r, 20));
  ac.abort();
  await reader.read().catch(() => undefined);
  assert.deepEqual(answers(await beside), want, 'the request beside it');
  const deadline = Date.now() + 60_000; // (leaves the loop as soon as the engine counts the cancel)
  while (batched.stats().engine!.cancelled === before.cancelled && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 10));
  const after = batched.stats().engine!;
  assert.equal(after.cancelled - before.cancelled, 1, 'the engine dropped the disconnected request');
  assert.ok(
    after.tokens - before.tokens < 8 * 900,
    `the cancelled request stopped early (${after.tokens - before.tokens} tokens streamed)`,
  );
  // the server goes on serving
  assert.equal((await post(batched, body(42))).choices.length, 1);
});

test('the openai package streams from the batching server as from any server', async () => {
  const client = new OpenAI({ baseURL: batched.url, apiKey: 'unused' });
  const streams = await Promise.all(
    [1, 2, 3].map((k) =>
      client.chat.completions.create({
        model: 'vqalab',
        messages: [{ role: 'user', content: `say ${k}` }],
        n: 2,
        temperature: 1,
        seed: k,
        max_tokens: 20,
        stream: true,
      }),
    ),
  );
  const texts = await Promise.all(
    streams.map(async (s) => {
      const t = ['', ''];
      for await (const chunk of s) for (const c of chunk.choices) t[c.index] += c.delta.content ?? '';
      return t;
    }),
  );
  for (const [i, k] of [1, 2, 3].entries()) {
    const whole = await client.chat.completions.create({
      model: 'vqalab',
      messages: [{ role: 'user', content: `say ${k}` }],
      n: 2,
      temperature: 1,
      seed: k,
      max_tokens: 20,
    });
    assert.deepEqual(
      texts[i],
      whole.choices.map((c) => c.message.content),
    );
  }
});

test('the incremental decoder gives the text complete() gives, with and without stop strings', async () => {
  const prompt = policy.prompt(VlmTokenizer.vqaMessages('what color is the circle?'), [await policy.image(fx.png)]);
  let checked = 0;
  for (let seed = 0; seed < 12; seed++) {
    const base = await policy.complete(prompt, { n: 2, temperature: 1.2, maxTokens: 60, seed });
    const text = base.choices[0]!.text;
    const stops = [[], [text.slice(3, 5)], [text.slice(10, 11), 'zz'], ['\uFFFD']].filter((s) =>
      s.every((x) => x.length > 0),
    );
    for (const stop of stops) {
      const events: { choice: number; tokenId: number }[] = [];
      const gen = await policy.complete(prompt, {
        n: 2,
        temperature: 1.2,
        maxTokens: 60,
        seed,
        stop,
        onToken: (e) => events.push(e),
      });
      gen.choices.forEach((c, i) => {
        const s = policy.textStream({ stop });
        let out = '';
        for (const e of events.filter((x) => x.choice === i)) out += s.push(e.tokenId);
        out += s.finish();
        assert.equal(out, c.text, `seed ${seed}, stop ${JSON.stringify(stop)}, choice ${i}`);
        assert.equal(s.tokens, c.tokenIds.length, `seed ${seed}, stop ${JSON.stringify(stop)}, choice ${i}: tokens`);
        checked++;
      });
    }
  }
  assert.ok(checked >= 60);
});
