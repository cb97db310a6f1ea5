/** The loopback OpenAI-compatible server (test/helpers) behaves like the API for the real client. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startOpenAIServer } from '../helpers/openai-server.js';

const ask = (c: OpenAI, extra: Record<string, unknown> = {}) =>
  c.chat.completions.create({
    model: 'm',
    messages: [{ role: 'user', content: 'hi' }],
    ...extra,
  } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming);

test('non-streaming replies, n choices, logprobs, usage, and request recording', async () => {
  const s = await startOpenAIServer({
    replies: [
      { content: 'two' },
      { content: ['a', 'b', 'c'], finishReason: ['stop', 'length', 'stop'] },
      {
        content: 'x y',
        logprobs: [
          [
            { token: 'x', logprob: -0.5 },
            { token: ' y', logprob: -1.25 },
          ],
        ],
      },
    ],
  });
  try {
    const c = new OpenAI({ baseURL: s.url, apiKey: 'k', maxRetries: 0 });
    const r1 = await ask(c, { temperature: 0.5 });
    assert.equal(r1.choices[0]!.message.content, 'two');
    assert.equal(r1.model, 'm');
    assert.ok(r1.usage!.prompt_tokens > 0);
    const r2 = await ask(c, { n: 3 });
    assert.deepEqual(
      r2.choices.map((x) => [x.message.content, x.finish_reason]),
      [
        ['a', 'stop'],
        ['b', 'length'],
        ['c', 'stop'],
      ],
    );
    const r3 = await ask(c, { logprobs: true });
    assert.deepEqual(
      r3.choices[0]!.logprobs!.content!.map((t) => [t.token, t.logprob]),
      [
        ['x', -0.5],
        [' y', -1.25],
      ],
    );
    assert.equal(s.requests.length, 3);
    assert.equal(s.requests[0]!.body.temperature, 0.5);
    assert.equal(s.requests[0]!.headers.authorization, 'Bearer k');
    assert.deepEqual(s.requests[0]!.body.messages, [{ role: 'user', content: 'hi' }]);
  } finally {
    await s.close();
  }
});

test('streaming (server-sent events), with usage and per-token log-probs', async () => {
  const s = await startOpenAIServer({
    replies: [
      { content: 'hello streaming world', chunkSize: 5 },
      {
        content: 'ab',
        logprobs: [
          [
            { token: 'a', logprob: -1 },
            { token: 'b', logprob: -2 },
          ],
        ],
      },
    ],
  });
  try {
    const c = new OpenAI({ baseURL: s.url, apiKey: 'k', maxRetries: 0 });
    const stream = await c.chat.completions.create({
      model: 'm',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hi' }],
    });
    let text = '',
      chunks = 0,
      usage;
    for await (const ch of stream) {
      chunks++;
      text += ch.choices[0]?.delta?.content ?? '';
      if (ch.usage) usage = ch.usage;
    }
    assert.equal(text, 'hello streaming world');
    assert.ok(chunks >= 6, `${chunks} chunks`);
    assert.ok(usage && usage.completion_tokens > 0);
    const s2 = await c.chat.completions.create({
      model: 'm',
      stream: true,
      logprobs: true,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const lps: number[] = [];
    for await (const ch of s2) for (const t of ch.choices[0]?.logprobs?.content ?? []) lps.push(t.logprob);
    assert.deepEqual(lps, [-1, -2]);
  } finally {
    await s.close();
  }
});

test('errors: 429 with Retry-After, 500, malformed bodies, dropped and cut connections, unscripted requests', async () => {
  const s = await startOpenAIServer({
    replies: [
      { status: 429, headers: { 'retry-after': '7' } },
      { status: 500, error: { message: 'boom' } },
      { raw: 'not json' },
      { drop: true },
      { content: 'abcdefgh', chunkSize: 1, cutAfterChunks: 3 },
    ],
  });
  try {
    const c = new OpenAI({ baseURL: s.url, apiKey: 'k', maxRetries: 0 });
    await assert.rejects(
      ask(c),
      (e: unknown) => e instanceof OpenAI.RateLimitError && e.headers?.get('retry-after') === '7',
    );
    await assert.rejects(ask(c), (e: unknown) => e instanceof OpenAI.InternalServerError && /boom/.test(e.message));
    await assert.rejects(ask(c), SyntaxError);
    await assert.rejects(ask(c), OpenAI.APIConnectionError);
    await assert.rejects(async () => {
      const st = await c.chat.completions.create({
        model: 'm',
        stream: true,
        messages: [{ role: 'user', content: 'hi' }],
      });
      for await (const _ of st) {
        /* drain */
      }
    });
    await assert.rejects(
      ask(c),
      (e: unknown) => e instanceof OpenAI.InternalServerError && /no reply scripted for request #5/.test(e.message),
    );
  } finally {
    await s.close();
  }
});

test('slow and hanging replies time out on the client; close() ends hanging requests', async () => {
  const s = await startOpenAIServer({ replies: [{ content: 'late', delayMs: 300 }, { hang: true }] });
  try {
    const c = new OpenAI({ baseURL: s.url, apiKey: 'k', maxRetries: 0, timeout: 100 });
    await assert.rejects(ask(c), OpenAI.APIConnectionTimeoutError);
    await assert.rejects(ask(c), OpenAI.APIConnectionTimeoutError);
  } finally {
    await s.close();
  }
});

test('handlers compute replies from the request; models are listed; waitForRequests', async () => {
  const s = await startOpenAIServer({
    handler: (r) => ({ content: `echo: ${r.body.messages.at(-1).content}` }),
    models: ['a', 'b'],
  });
  try {
    const c = new OpenAI({ baseURL: s.url, apiKey: 'k', maxRetries: 0 });
    const pending = ask(c);
    await s.waitForRequests(1);
    assert.equal((await pending).choices[0]!.message.content, 'echo: hi');
    const models = await c.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['a', 'b'],
    );
    assert.equal(s.chatRequests().length, 1);
    s.reset();
    assert.equal(s.requests.length, 0);
  } finally {
    await s.close();
  }
});
