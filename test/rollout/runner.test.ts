/**
 * Runners against a scripted OpenAI-compatible server on loopback (test/helpers/openai-server.ts):
 * retries, Retry-After, the shared 429 pause, timeouts, cancellation, concurrency and rate limits,
 * servers that ignore n, replies that are not JSON, and batches where one request is bad.
 */
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import { OpenAIPolicy, tokenIdsOf } from '../../src/rollout/openai.js';
import { RequestError, RequestScheduler, rollout, runPool, sleep } from '../../src/rollout/runner.js';
import { startOpenAIServer, type OpenAIServer } from '../helpers/openai-server.js';
import { makeFixture, type Fixture } from './fixtures.js';

let fx: Fixture;
let server: OpenAIServer;

before(async () => {
  fx = await makeFixture();
  server = await startOpenAIServer({ models: ['judge'] });
});

after(async () => {
  await server?.close();
  fx?.cleanup();
});

beforeEach(() => {
  server.reset();
  server.setHandler(undefined);
});

const quick = { backoffMs: 5, maxBackoffMs: 2000, timeoutMs: 5000 };
const greedy = { n: 1, temperature: 0, maxTokens: 8 };

function policy(extra: Partial<ConstructorParameters<typeof OpenAIPolicy>[0]> = {}): OpenAIPolicy {
  return new OpenAIPolicy({ model: 'm', baseURL: server.url, apiKey: 'k', ...quick, ...extra });
}

test('the request: image as a data URL then the question; sampling fields; nothing a plain server would reject', async () => {
  server.enqueue({ content: 'red' });
  const [c] = await policy({ systemPrompt: 'Answer in one word.' }).generate(fx.samples[0]!, {
    ...greedy,
    topP: 0.9,
    stop: ['\n'],
    seed: 3,
    stopTokenIds: [1, 2],
  });
  assert.equal(c!.text, 'red');
  const body = server.chatRequests()[0]!.body;
  assert.deepEqual(Object.keys(body).sort(), [
    'max_tokens',
    'messages',
    'model',
    'seed',
    'stop',
    'temperature',
    'top_p',
  ]);
  assert.deepEqual(
    [body.model, body.temperature, body.top_p, body.max_tokens, body.seed, body.stop],
    ['m', 0, 0.9, 8, 3, ['\n']],
  );
  assert.deepEqual(body.messages[0], { role: 'system', content: 'Answer in one word.' });
  const [img, txt] = body.messages[1].content;
  assert.equal(img.type, 'image_url');
  assert.equal(img.image_url.url, fx.dataUrl);
  assert.deepEqual(txt, { type: 'text', text: 'what color is the circle?' });
  assert.equal(server.chatRequests()[0]!.headers.authorization, 'Bearer k');
  // Opt-in extensions for vLLM / SGLang / vqalab serve.
  server.enqueue({ content: 'red' });
  await policy({
    sendStopTokenIds: true,
    tokenIds: true,
    logprobs: true,
    maxTokensField: 'max_completion_tokens',
    extraBody: { top_k: 5 },
  }).generate(fx.samples[0]!, { ...greedy, stopTokenIds: [1, 2], topLogprobs: 2 });
  const b2 = server.chatRequests()[1]!.body;
  assert.deepEqual(
    [
      b2.stop_token_ids,
      b2.return_token_ids,
      b2.logprobs,
      b2.top_logprobs,
      b2.max_completion_tokens,
      b2.max_tokens,
      b2.top_k,
    ],
    [[1, 2], true, true, 2, 8, undefined, 5],
  );
});

test('server errors are retried with backoff; a 400 is not', async () => {
  server.enqueue({ status: 500 }, { status: 503 }, { drop: true }, { content: 'blue' });
  const p = policy();
  const [c] = await p.generate(fx.samples[2]!, greedy);
  assert.deepEqual([c!.text, c!.attempts], ['blue', 4]);
  assert.equal(p.stats().retries, 3);
  assert.equal(server.chatRequests().length, 4);
  server.enqueue({ status: 400, error: { message: 'messages[0]: bad image' } });
  const [bad] = await p.generate(fx.samples[2]!, greedy);
  assert.equal(bad!.finishReason, 'error');
  assert.equal(bad!.error, 'sample 1c: HTTP 400: messages[0]: bad image');
  assert.equal(bad!.attempts, 1);
  assert.equal(server.chatRequests().length, 5);
});

test('Retry-After (ms and seconds) is waited exactly; one longer than maxBackoffMs fails at once', async () => {
  server.enqueue(
    { status: 429, headers: { 'retry-after-ms': '300' } },
    { status: 429, headers: { 'retry-after': '1' } },
    { content: 'ok' },
  );
  const p = policy({ backoffMs: 1 });
  const [c] = await p.generate(fx.samples[0]!, greedy);
  assert.equal(c!.text, 'ok');
  const [r0, r1, r2] = server.chatRequests();
  assert.ok(
    r1!.receivedAt - r0!.receivedAt >= 295,
    `waited ${r1!.receivedAt - r0!.receivedAt} ms for retry-after-ms 300`,
  );
  assert.ok(r2!.receivedAt - r1!.receivedAt >= 995, `waited ${r2!.receivedAt - r1!.receivedAt} ms for Retry-After: 1`);
  assert.deepEqual(p.stats().retryDelaysMs, [300, 1000]);
  assert.equal(p.stats().rateLimited, 2);
  server.enqueue({ status: 429, headers: { 'retry-after': '120' } });
  const t0 = performance.now();
  const [late] = await policy({ maxBackoffMs: 1000 }).generate(fx.samples[0]!, greedy);
  assert.ok(performance.now() - t0 < 60_000, 'did not wait the 120 s the server asked for');
  assert.equal(
    late!.error,
    'sample 0c: HTTP 429: scripted error 429; the server asked to retry after 120000 ms, more than maxBackoffMs 1000',
  );
});

test('a 429 pauses every request to that server, not only the one that got it', async () => {
  server.enqueue({ status: 429, headers: { 'retry-after-ms': '400' } });
  server.setHandler(() => ({ content: 'fine' }));
  const p = policy({ concurrency: 1, backoffMs: 1 });
  const results = await rollout(p, fx.samples.slice(0, 3), greedy, { nRunners: 3 });
  assert.ok(results.every((r) => r.completions[0]!.text === 'fine'));
  const reqs = server.chatRequests();
  assert.equal(reqs.length, 4);
  assert.ok(
    reqs[1]!.receivedAt - reqs[0]!.receivedAt >= 390,
    `the next request waited ${reqs[1]!.receivedAt - reqs[0]!.receivedAt} ms`,
  );
});

test('a hanging attempt times out and is retried; when all hang the sample records the timeout', async () => {
  server.enqueue({ hang: true }, { content: 'late but fine' });
  const p = policy({ timeoutMs: 200 });
  const [c] = await p.generate(fx.samples[0]!, greedy);
  assert.deepEqual([c!.text, c!.attempts], ['late but fine', 2]);
  assert.equal(p.stats().timeouts, 1);
  server.setHandler(() => ({ hang: true }));
  const t0 = performance.now();
  const [t] = await policy({ timeoutMs: 150, maxRetries: 1 }).generate(fx.samples[0]!, greedy);
  assert.equal(t!.error, 'sample 0c: gave up after 2 attempt(s): timed out after 150 ms');
  assert.ok(performance.now() - t0 >= 2 * 150, 'each attempt waited its timeout');
});

test('replies that are not chat completions are retried (an HTML error page with status 200)', async () => {
  server.enqueue(
    { raw: '<html>bad gateway</html>', contentType: 'text/html' },
    { raw: '{"object":"chat.completion","choices":[]}' },
    { content: 'good' },
  );
  const p = policy();
  const [c] = await p.generate(fx.samples[0]!, greedy);
  assert.deepEqual([c!.text, c!.attempts], ['good', 3]);
});

test('cancellation: an AbortSignal stops in-flight and queued requests at once', async () => {
  server.setHandler(() => ({ hang: true }));
  const ac = new AbortController();
  const p = policy({ concurrency: 2, timeoutMs: 60_000 });
  // Stopped once both concurrent requests are in the server's hands (they hang there; without the
  // abort they would run into the 60 s timeout and record that instead of the reason).
  void (async () => {
    while (server.chatRequests().length < 2) await new Promise((r) => setTimeout(r, 5));
    ac.abort(new Error('user stopped'));
  })();
  const results = await rollout(p, fx.samples, greedy, { nRunners: 4, signal: ac.signal });
  assert.equal(results.length, 8);
  assert.ok(results.every((r) => r.error !== undefined && r.completions[0]!.finishReason === 'error'));
  assert.equal(results[0]!.error, 'user stopped');
  assert.equal(results[7]!.error, 'cancelled before it started');
  assert.equal(server.chatRequests().length, 2, 'only the concurrency limit got through');
  await assert.rejects(p.generate(fx.samples[0]!, { ...greedy, signal: ac.signal }), { message: 'user stopped' });
});

test('the concurrency limit holds across samples and n; a rate limit spaces requests', async () => {
  let active = 0,
    peak = 0;
  server.setHandler(async () => {
    active++;
    peak = Math.max(peak, active);
    await sleep(60);
    active--;
    return { content: 'x' };
  });
  const p = policy({ concurrency: 3, nMode: 'repeat' });
  const results = await rollout(p, fx.samples, { ...greedy, n: 2 }, { nRunners: 8 });
  assert.equal(results.flatMap((r) => r.completions).length, 16);
  assert.equal(server.chatRequests().length, 16);
  assert.equal(peak, 3);
  assert.equal(p.stats().maxInFlight, 3);

  server.reset();
  server.setHandler(() => ({ content: 'y' }));
  // Timed where the gate lets a request go (the client side), not where the server sees it: the first
  // request's connection setup can delay its arrival by tens of ms on a busy machine, which says
  // nothing about the gate. The token bucket waits on performance.now(), so these bounds are exact.
  class RecordingScheduler extends RequestScheduler {
    readonly startedAt: number[] = [];
    override run<T>(request: (signal: AbortSignal) => Promise<T>, options?: Parameters<RequestScheduler['run']>[1]) {
      return super.run((signal) => {
        this.startedAt.push(performance.now());
        return request(signal);
      }, options);
    }
  }
  const gate = new RecordingScheduler({ concurrency: 8, requestsPerSecond: 10, burst: 1 });
  await rollout(policy({ scheduler: gate }), fx.samples.slice(0, 5), greedy, { nRunners: 5 });
  assert.equal(server.chatRequests().length, 5);
  const at = gate.startedAt;
  assert.equal(at.length, 5);
  // Request i starts no sooner than i/10 s after the first (1 ms for float rounding of the refill).
  for (let i = 1; i < at.length; i++)
    assert.ok(
      at[i]! - at[0]! >= 100 * i - 1,
      `request ${i} started ${at[i]! - at[0]!} ms after the first at 10 requests/s`,
    );
});

test('a server that ignores n: the rest come from repeated requests (seed + k), and later calls repeat at once', async () => {
  server.setHandler((req) => ({ content: [`answer ${req.index}`] })); // always one choice
  const p = policy();
  const got = await p.generate(fx.samples[0]!, { n: 3, temperature: 1, maxTokens: 4, seed: 10 });
  assert.deepEqual(
    got.map((c) => c.text),
    ['answer 0', 'answer 1', 'answer 2'],
  );
  assert.equal(new Set(got.map((c) => c.requestId)).size, 3);
  const bodies = server.chatRequests().map((r) => r.body);
  assert.deepEqual(
    bodies.map((b) => [b.n, b.seed]),
    [
      [3, 10],
      [undefined, 11],
      [undefined, 12],
    ],
  );
  assert.equal(p.stats().ignoresN, true);
  server.reset();
  await p.generate(fx.samples[0]!, { n: 2, temperature: 1, maxTokens: 4 });
  assert.deepEqual(
    server.chatRequests().map((r) => r.body.n),
    [undefined, undefined],
  );
});

test('log-probs, token ids ("token_id:N" tokens), usage split over choices', async () => {
  server.enqueue({
    content: ['ab', 'cde'],
    logprobs: [
      [
        { token: 'token_id:5', logprob: -0.5 },
        { token: 'token_id:9', logprob: -1 },
      ],
      [
        { token: 'token_id:1', logprob: -0.1 },
        { token: 'token_id:2', logprob: -0.2 },
        { token: 'token_id:3', logprob: -0.3 },
      ],
    ],
    usage: { prompt_tokens: 40, completion_tokens: 5 },
  });
  const got = await policy({ logprobs: true }).generate(fx.samples[0]!, { n: 2, temperature: 1, maxTokens: 4 });
  assert.deepEqual(
    got.map((c) => c.tokenIds),
    [
      [5, 9],
      [1, 2, 3],
    ],
  );
  assert.deepEqual(
    got.map((c) => c.logprobs),
    [
      [-0.5, -1],
      [-0.1, -0.2, -0.3],
    ],
  );
  assert.deepEqual(
    got.map((c) => c.usage),
    [
      { promptTokens: 40, completionTokens: 2 },
      { promptTokens: 40, completionTokens: 3 },
    ],
  );
  server.enqueue({ content: ['a', 'b', 'c'], usage: { prompt_tokens: 40, completion_tokens: 10 } });
  const split = await policy().generate(fx.samples[0]!, { n: 3, temperature: 1, maxTokens: 4 });
  assert.deepEqual(
    split.map((c) => c.usage!.completionTokens),
    [3, 3, 4],
  );
  assert.deepEqual(
    tokenIdsOf({
      index: 0,
      finish_reason: 'stop',
      logprobs: null,
      message: { role: 'assistant', content: 'x', refusal: null },
      token_ids: [7, 8],
    }),
    [7, 8],
  );
});

test('one bad request never sinks a batch: its sample records the error, the rest succeed', async () => {
  server.setHandler((req) => {
    const text = req.body.messages.at(-1).content.at(-1).text as string;
    return text.includes('poison')
      ? { status: 400, error: { message: 'cannot process this image' } }
      : { content: 'fine' };
  });
  const batch: VqaSample[] = fx.samples.map((s, i) => (i === 3 ? { ...s, question: 'poison question' } : s));
  const results = await rollout(policy(), batch, greedy, { nRunners: 4 });
  assert.deepEqual(
    results.map((r) => r.completions[0]!.finishReason === 'error'),
    [false, false, false, true, false, false, false, false],
  );
  assert.equal(results[3]!.completions[0]!.error, 'sample 1e: HTTP 400: cannot process this image');
});

test('runPool: input order, errors per item, bounded concurrency; the scheduler validates its options', async () => {
  let active = 0,
    peak = 0;
  const out = await runPool(
    [1, 2, 3, 4, 5, 6],
    async (x) => {
      active++;
      peak = Math.max(peak, active);
      await sleep(10 * (7 - x));
      active--;
      if (x === 4) throw new Error('four');
      return x * 10;
    },
    { concurrency: 2 },
  );
  assert.equal(peak, 2);
  assert.deepEqual(
    out.map((r) => (r.ok ? r.value : r.error.message)),
    [10, 20, 30, 'four', 50, 60],
  );
  assert.throws(() => new RequestScheduler({ concurrency: 0 }), {
    message: 'Expected integer between 1 and 100000 for concurrency but received 0 of type number',
  });
  assert.throws(() => new RequestScheduler({ requestsPerSecond: -1 }), /for requestsPerSecond but received -1/);
  const s = new RequestScheduler({ maxRetries: 0 });
  await assert.rejects(
    s.run(async () => {
      throw Object.assign(new Error('nope'), { status: 404 });
    }),
    (e: unknown) => e instanceof RequestError && e.status === 404 && e.attempts === 1,
  );
});
