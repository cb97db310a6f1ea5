/**
 * Hostile HTTP against `vqalab serve` (issue 20, defects 1 and 4): each hostile request gets a
 * clear client error or is worked on off the event loop, and the server keeps answering others.
 * "Still answering" is asserted by event order, not by wall time: a /health reply comes back while
 * the hostile request is still in flight.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { LocalPolicy } from '../../src/rollout/local.js';
import { ChoiceTextStream, StopMatcher, firstIndexOf } from '../../src/rollout/local-stream.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';
import { bombPng } from './files.js';

let policy: LocalPolicy;
let long: LocalPolicy; // a context of 2048 tokens: a large image's ~1250 tokens fit, so it is decoded
let fx: Fixture;
let open: ServeHandle; // default limits
let roomy: ServeHandle; // limits raised: the heavy work is allowed, and must not block the loop

before(async () => {
  fx = await makeFixture();
  policy = await LocalPolicy.load(undefined, { threads: 1 });
  open = await serve({ policy, port: 0 });
  long = await LocalPolicy.load(undefined, { threads: 1, maxSequenceLength: 2048 });
  roomy = await serve({
    policy: long,
    port: 0,
    maxStopChars: 200_000,
    maxPromptChars: 4_000_000,
    maxImagePixels: 6000 * 6000,
    maxBodyBytes: 64 << 20,
  });
});

after(async () => {
  await open?.close();
  await roomy?.close();
  policy?.dispose();
  long?.dispose();
  fx?.cleanup();
});

async function post(handle: ServeHandle, body: unknown): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(`${handle.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, text };
}

function userTurn(text: string, url?: string) {
  return [
    {
      role: 'user',
      content: url
        ? [
            { type: 'image_url', image_url: { url } },
            { type: 'text', text },
          ]
        : text,
    },
  ];
}

/**
 * Run `hostile` and meanwhile ask /health and an ordinary chat request one after another; returns
 * how many answered before the hostile request finished, and its result.
 */
async function whileInFlight<T>(
  handle: ServeHandle,
  hostile: () => Promise<T>,
): Promise<{ answered: number; result: T }> {
  let done = false;
  let answered = 0;
  const p = hostile().finally(() => {
    done = true;
  });
  const base = handle.url.replace(/\/v1$/, '');
  while (!done) {
    const h = await fetch(`${base}/health`);
    assert.equal(h.status, 200);
    await h.text();
    const r = await post(handle, { model: 'vqalab', messages: userTurn('what color?'), max_tokens: 1, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    if (!done) answered++;
  }
  return { answered, result: await p };
}

describe('hostile requests: client errors, not server errors', () => {
  test('stop_token_ids outside the vocabulary: 400 naming the field (was 500 engine_error)', async () => {
    const vocab = policy.model.config.vocabSize;
    const r = await post(open, {
      model: 'vqalab',
      messages: userTurn('hi'),
      max_tokens: 2,
      stop_token_ids: [1, vocab + 5],
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'stop_token_ids');
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(
      r.json.error.message,
      new RegExp(
        `^stop_token_ids\\[1\\] is ${vocab + 5}, outside this model's vocabulary \\(ids 0 to ${vocab - 1}\\)$`,
      ),
    );
  });

  test('stop strings: too many or too long are refused before any work', async () => {
    let r = await post(open, {
      model: 'vqalab',
      messages: userTurn('hi'),
      stop: Array.from({ length: 17 }, (_v, i) => `s${i}`),
    });
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /at most 16 stop strings \(--max-stops\); got 17/);
    r = await post(open, { model: 'vqalab', messages: userTurn('hi'), stop: ['ok', 'x'.repeat(100_000)] });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'stop');
    assert.match(r.json.error.message, /^stop\[1\] has 100000 characters; the limit is 1024 \(--max-stop-chars\)$/);
  });

  test('a 2 MB prompt is refused by its characters, before it is tokenised', async () => {
    let encoded = 0;
    const encode = policy.tokenizer.encode.bind(policy.tokenizer);
    policy.tokenizer.encode = (t: string) => {
      encoded += t.length;
      return encode(t);
    };
    try {
      const r = await post(open, { model: 'vqalab', messages: userTurn('y'.repeat(2_000_000)), max_tokens: 1 });
      assert.equal(r.status, 400);
      assert.equal(r.json.error.code, 'context_length_exceeded');
      assert.match(
        r.json.error.message,
        /^the messages hold 2,000,000 characters of text, more than this server's limit of/,
      );
      assert.ok(encoded < 10_000, `tokenised ${encoded} characters`);
    } finally {
      policy.tokenizer.encode = encode;
    }
  });

  test('an image larger than the pixel limit is refused from its header (16000x16000 PNG)', async () => {
    const png = bombPng(16000, 16000);
    const r = await post(open, {
      model: 'vqalab',
      messages: userTurn('what?', `data:image/png;base64,${png.toString('base64')}`),
      max_tokens: 1,
    });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.code, 'image_too_large');
    assert.match(r.json.error.message, /16000x16000 = 256,000,000 pixels/);
  });
});

describe('hostile requests in flight do not stall the server', () => {
  test('n = 64 with 16 stop strings of 100 KB: tokenised once at most, streamed, and /health answers meanwhile', async () => {
    const stops = Array.from({ length: 16 }, (_v, i) => `${'z'.repeat(100_000 - 2)}${i}q`);
    let longEncodes = 0;
    const encode = long.tokenizer.encode.bind(long.tokenizer);
    long.tokenizer.encode = (t: string) => {
      if (t.length > 1000) longEncodes++;
      return encode(t);
    };
    try {
      const { answered, result } = await whileInFlight(roomy, () =>
        post(roomy, {
          model: 'vqalab',
          messages: userTurn('say z'),
          n: 64,
          stream: true,
          stop: stops,
          max_tokens: 48,
          temperature: 1,
          seed: 3,
        }),
      );
      assert.equal(result.status, 200);
      assert.match(result.text, /data: \[DONE\]\n\n$/);
      assert.equal(longEncodes, 0, 'long stop strings are never tokenised');
      assert.ok(answered >= 1, 'a /health and a chat request answered while the hostile stream ran');
    } finally {
      long.tokenizer.encode = encode;
    }
  });

  test('a 300 KB prompt (within raised limits) is tokenised off the event loop', async () => {
    const { answered, result } = await whileInFlight(roomy, () =>
      post(roomy, { model: 'vqalab', messages: userTurn('w'.repeat(300_000)), max_tokens: 1 }),
    );
    assert.equal(result.status, 400);
    assert.equal(result.json.error.code, 'context_length_exceeded');
    assert.match(result.json.error.message, /but the prompt has \d+ tokens/);
    assert.ok(answered >= 1, 'requests answered while the long prompt was tokenised');
  });

  test('a 3000x3000 image (over the inline size) is decoded off the event loop', async () => {
    const raw = Buffer.alloc(3000 * 3000 * 3);
    for (let i = 0; i < raw.length; i++) raw[i] = ((i % 9000) >> 6) ^ ((i / 9000) >> 6) ? 200 : 30;
    const png = await sharp(raw, { raw: { width: 3000, height: 3000, channels: 3 } })
      .png()
      .toBuffer();
    const { answered, result } = await whileInFlight(roomy, () =>
      post(roomy, {
        model: 'vqalab',
        messages: userTurn('what?', `data:image/png;base64,${png.toString('base64')}`),
        max_tokens: 1,
        temperature: 0,
      }),
    );
    assert.equal(result.status, 200, result.text.slice(0, 300));
    assert.ok(answered >= 1, 'requests answered while the large image was decoded');
  });
});

describe('incremental stop matching', () => {
  test('StopMatcher finds what indexOf finds, fed in random pieces', () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    for (let trial = 0; trial < 400; trial++) {
      const alpha = 'ab';
      const stops = Array.from({ length: 1 + rnd(3) }, () =>
        Array.from({ length: 1 + rnd(5) }, () => alpha[rnd(2)]).join(''),
      );
      const text = Array.from({ length: rnd(30) }, () => alpha[rnd(2)]).join('');
      const m = new StopMatcher(stops);
      const st = m.state();
      let fed = 0,
        found = -1;
      while (fed < text.length) {
        const k = 1 + rnd(4);
        const piece = text.slice(fed, fed + k);
        const at = m.feed(st, piece);
        // The reference: the earliest stop in the shortest prefix that holds one.
        const ref = firstIndexOf(text.slice(0, fed + piece.length), stops);
        if (at !== null) {
          found = fed + at;
          assert.equal(found, ref, JSON.stringify({ stops, text, fed }));
          break;
        }
        assert.equal(ref, -1, JSON.stringify({ stops, text, fed }));
        fed += piece.length;
        // hold: the longest tail that is a proper prefix of a stop
        const t = text.slice(0, fed);
        let hold = 0;
        for (const s of stops)
          for (let len = Math.min(s.length - 1, t.length); len > hold; len--)
            if (t.endsWith(s.slice(0, len))) {
              hold = len;
              break;
            }
        assert.equal(st.hold, hold, JSON.stringify({ stops, t }));
      }
      if (found < 0) assert.equal(firstIndexOf(text, stops), -1);
    }
  });

  test('a 100 KB stop string costs time linear in the text (the stream of a long completion)', () => {
    const ids = policy.tokenizer.encode('z'.repeat(3000));
    const stops = Array.from({ length: 16 }, (_v, i) => `${'z'.repeat(100_000)}${i}`);
    const first = new ChoiceTextStream(policy.tokenizer, new Set(), stops);
    const streams = [first, ...Array.from({ length: 15 }, () => first.sibling())];
    let ops = 0;
    for (const s of streams)
      for (const id of ids) {
        s.push(id);
        ops++;
      }
    for (const s of streams) assert.equal(s.sent + s.finish(), 'z'.repeat(3000));
    assert.equal(ops, 16 * ids.length);
  });
});
