/**
 * The training gateway on 127.0.0.1 with the embedded tiny model: per-attempt base URLs used
 * through the openai package (JSON and streamed), every call recorded token-exactly, rewards by
 * the event endpoint, attempts closed without a reward recorded as failed, and hostile input
 * (NaN reward, missing or wrong key, unknown attempt, a 10 MB body) refused with clear errors
 * while the gateway keeps serving.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import OpenAI from 'openai';
import { startGateway, type StartedGateway } from '../../src/gateway/start.js';
import type { AttemptEndpoint } from '../../src/gateway/gateway.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';

let policy: LocalPolicy;
let fx: Fixture;
let gw: StartedGateway;

before(async () => {
  fx = await makeFixture();
  policy = await LocalPolicy.load(undefined, { threads: 1 });
  gw = await startGateway(policy);
});

after(async () => {
  await gw?.close();
  policy?.dispose();
  fx?.cleanup();
});

function userTurn(text = 'what color is the circle?'): OpenAI.Chat.ChatCompletionMessageParam[] {
  return [
    {
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url: fx.dataUrl } },
        { type: 'text', text },
      ],
    },
  ];
}

async function postEvent(
  ep: Pick<AttemptEndpoint, 'eventUrl'>,
  body: string,
  key: string | null,
): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(ep.eventUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key === null ? {} : { authorization: `Bearer ${key}` }) },
    body,
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

function errorOf(
  r: { status: number; json: any },
  status: number,
): { message: string; code: string | null; param: string | null } {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(typeof r.json?.error?.message, 'string', JSON.stringify(r.json));
  return r.json.error;
}

/** A fresh attempt still answers a chat request and an event. */
async function stillServes(): Promise<void> {
  const ep = gw.gateway.openAttempt();
  const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: ep.key, maxRetries: 0 });
  const r = await client.chat.completions.create({
    model: 'auto',
    messages: userTurn(),
    max_tokens: 2,
    temperature: 0,
  });
  assert.equal(r.choices.length, 1);
  const e = await postEvent(ep, JSON.stringify({ event_type: 'reward', data: { value: 0.5 } }), ep.key);
  assert.equal(e.status, 200, JSON.stringify(e.json));
  assert.equal(gw.gateway.finishAttempt(ep.rolloutId, ep.attemptId, { exitCode: 0 }).status, 'succeeded');
}

describe('per-attempt base URLs', () => {
  test('records each chat completion token-exactly: prompt ids with image pads, completion ids, sampling log-probs', async () => {
    const ep = gw.gateway.openAttempt({ rolloutId: 'r1', attemptId: 'a0' });
    assert.match(ep.baseUrl, /^http:\/\/127\.0\.0\.1:\d+\/rollouts\/r1\/attempts\/a0\/v1$/);
    assert.match(ep.eventUrl, /\/rollouts\/r1\/attempts\/a0\/events$/);
    const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: ep.key, maxRetries: 0 });
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['vqalab'],
    );
    // "auto" as Agent Lightning's examples send it; token ids and log-probs asked for, to compare with the record.
    const res = await client.chat.completions.create({
      model: 'auto',
      messages: userTurn(),
      n: 2,
      temperature: 1,
      seed: 5,
      max_tokens: 6,
      logprobs: true,
      // @ts-expect-error vLLM's extension
      return_token_ids: true,
    });
    // A second call, streamed, without log-probs: recorded all the same.
    const stream = await client.chat.completions.create({
      model: 'whatever',
      messages: userTurn('is there a circle?'),
      max_tokens: 5,
      temperature: 1,
      seed: 9,
      stream: true,
    });
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
    const rec = gw.gateway.attempt('r1', 'a0')!;
    assert.equal(rec.calls.length, 2);
    const [c0, c1] = rec.calls;
    assert.equal(c0!.id, res.id);
    assert.equal(c0!.prompt.ids.length, res.usage!.prompt_tokens);
    const tok = policy.tokenizer;
    const pads = Array.from(c0!.prompt.ids).filter((t) => t === tok.special.imagePad).length;
    assert.equal(c0!.prompt.images.length, 1);
    const [t, h, w] = c0!.prompt.images[0]!.gridThw;
    assert.equal(pads, (t * h * w) / 4, 'the prompt holds the image pad tokens of its processed image');
    res.choices.forEach((ch, i) => {
      const recorded = c0!.choices[i]!;
      assert.deepEqual(Array.from(recorded.tokenIds), (ch as unknown as { token_ids: number[] }).token_ids);
      assert.deepEqual(
        Array.from(recorded.logprobs),
        ch.logprobs!.content!.map((e) => Math.fround(e.logprob)),
      );
      assert.equal(recorded.text, ch.message.content);
    });
    // The recorded prompt is exactly what the chat template gives for the conversation.
    const expected = policy.prompt(
      [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'what color is the circle?' }] }],
      c0!.prompt.images,
    );
    assert.deepEqual(Array.from(c0!.prompt.ids), Array.from(expected.ids));
    assert.equal(c1!.sampling.stream, true);
    assert.equal(c1!.choices[0]!.text, streamed);
    assert.equal(c1!.choices[0]!.logprobs.length, c1!.choices[0]!.tokenIds.length);
    assert.ok(c1!.choices[0]!.logprobs.every((v) => Number.isFinite(v) && v <= 0));
    assert.equal(c0!.weightVersion, 0);
  });

  test('a reward event is attached to its attempt; the attempt succeeds when the agent exits 0', async () => {
    const ep = gw.gateway.openAttempt({ task: { id: 'x' } });
    const r1 = await postEvent(ep, JSON.stringify({ event_type: 'reward', data: { value: 0.25 } }), ep.key);
    assert.equal(r1.status, 200, JSON.stringify(r1.json));
    assert.match(r1.json.event_id, /^ev-/);
    const r2 = await postEvent(
      ep,
      JSON.stringify({ event_type: 'agent_output', data: { text: 'done', reason: 'two turns' } }),
      ep.key,
    );
    assert.equal(r2.status, 200);
    const r3 = await postEvent(
      ep,
      JSON.stringify({ event_type: 'reward', data: { value: 1, reason: 'checked' } }),
      ep.key,
    );
    assert.equal(r3.status, 200);
    const rec = gw.gateway.finishAttempt(ep.rolloutId, ep.attemptId, { exitCode: 0, stderrTail: '' });
    assert.equal(rec.status, 'succeeded');
    assert.equal(rec.reward, 1, 'the last reward event counts');
    assert.deepEqual(
      rec.events.map((e) => e.eventType),
      ['reward', 'agent_output', 'reward'],
    );
    assert.equal(JSON.stringify(rec).includes(ep.key), false, 'the key is not serialised with the record');
    // A finished attempt takes nothing more.
    const late = await postEvent(ep, JSON.stringify({ event_type: 'reward', data: { value: 0 } }), ep.key);
    assert.equal(errorOf(late, 409).code, 'attempt_finished');
  });

  test('an attempt that exits without a reward is failed, with its stderr tail', async () => {
    const ep = gw.gateway.openAttempt();
    const rec = gw.gateway.finishAttempt(ep.rolloutId, ep.attemptId, {
      exitCode: 1,
      stderrTail: 'Traceback: something\nValueError: bad image\n',
    });
    assert.equal(rec.status, 'failed');
    assert.match(
      rec.error!,
      /exited with code 1 without posting a reward \(0 calls recorded\); stderr tail:\nTraceback: something\nValueError: bad image/,
    );
    const ep2 = gw.gateway.openAttempt();
    await postEvent(ep2, JSON.stringify({ event_type: 'reward', data: { value: 1 } }), ep2.key);
    const rec2 = gw.gateway.finishAttempt(ep2.rolloutId, ep2.attemptId, { exitCode: 3, stderrTail: 'late crash' });
    assert.equal(rec2.status, 'failed');
    assert.match(rec2.error!, /posted a reward but exited with code 3; stderr tail:\nlate crash/);
  });

  test("tool results come back as observations (user turns in Qwen's format); tool definitions are taken (test/gateway/tools.test.ts)", async () => {
    const ep = gw.gateway.openAttempt();
    const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: ep.key, maxRetries: 0 });
    await client.chat.completions.create({
      model: 'auto',
      max_tokens: 2,
      temperature: 0,
      messages: [
        ...userTurn(),
        { role: 'assistant', content: 'red' },
        { role: 'tool', tool_call_id: 'c1', content: 'the zoomed crop is red' },
      ],
    });
    const rec = gw.gateway.attempt(ep.rolloutId, ep.attemptId)!;
    assert.deepEqual(rec.calls[0]!.messages.at(-1), {
      role: 'user',
      content: '<tool_response>\nthe zoomed crop is red\n</tool_response>',
    });
    const withTools = await client.chat.completions.create({
      model: 'auto',
      messages: userTurn(),
      max_tokens: 2,
      tools: [{ type: 'function', function: { name: 'zoom', parameters: { type: 'object' } } }],
    });
    assert.equal(withTools.choices.length, 1);
    assert.match(
      rec.calls[1]!.messages[0]!.content as string,
      /^You are a helpful assistant\.\n\n# Tools\n[^]*"name": "zoom"/,
    );
    await assert.rejects(
      client.chat.completions.create({
        model: 'auto',
        messages: userTurn(),
        max_tokens: 2,
        tools: [{ type: 'function', function: { name: 'zoom' } }],
        tool_choice: 'required',
      }),
      (err: any) => err.status === 400 && /tool_choice "required" is not supported/.test(err.message),
    );
  });
});

describe('an answer sent back verbatim continues from its sampled ids', () => {
  /** An attempt holding one recorded call whose first choice has `ids` (text: their decoding). */
  async function attemptAnswered(ids: number[]) {
    const ep = gw.gateway.openAttempt();
    const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: ep.key, maxRetries: 0 });
    await client.chat.completions.create({ model: 'auto', messages: userTurn(), max_tokens: 1, temperature: 0 });
    const call = ep.record.calls[0]!;
    const tok = policy.tokenizer;
    // As if the model had sampled `ids` then <|im_end|> (the record is the gateway's own; only the choice is replaced).
    call.choices[0] = {
      text: tok.decode(ids),
      tokenIds: Int32Array.from([...ids, tok.special.imEnd]),
      logprobs: new Float32Array(ids.length + 1).fill(-1),
      finishReason: 'stop',
    };
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      ...userTurn(),
      { role: 'assistant', content: call.choices[0].text },
      { role: 'user', content: 'sure?' },
    ];
    await client.chat.completions.create({ model: 'auto', messages, max_tokens: 2, temperature: 0 });
    return { call, next: ep.record.calls[1]! };
  }

  test('ids the text re-encodes differently are put back ("re" + "d" stays two tokens, not "red")', async () => {
    const tok = policy.tokenizer;
    const split = [...tok.encode('re'), ...tok.encode('d')];
    assert.deepEqual(tok.encode('red').length, 1, 'the tokenizer merges "red"');
    const { call, next } = await attemptAnswered(split);
    const base = call.prompt.ids.length;
    assert.deepEqual(Array.from(next.prompt.ids.slice(0, base)), Array.from(call.prompt.ids));
    assert.deepEqual(
      Array.from(next.prompt.ids.slice(base, base + 3)),
      [...split, tok.special.imEnd],
      "the sampled ids, then the template's end of turn",
    );
    assert.deepEqual(
      Array.from(next.templateIds.slice(base, base + 2)),
      [...tok.encode('red'), tok.special.imEnd],
      'the template alone re-encodes the text',
    );
    assert.equal(next.prompt.ids.length, next.templateIds.length + 1);
  });

  test("an answer holding a special token (a sampled image pad) is not put back: the template's ids are used", async () => {
    const tok = policy.tokenizer;
    const { next } = await attemptAnswered([...tok.encode('red'), tok.special.imagePad]);
    assert.deepEqual(Array.from(next.prompt.ids), Array.from(next.templateIds));
    assert.equal(
      Array.from(next.prompt.ids).filter((t) => t === tok.special.imagePad).length,
      next.prompt.images[0]!.gridThw.reduce((a, b) => a * b, 1) / 4,
    );
  });
});

describe('hostile input: clear errors, the gateway keeps serving', () => {
  test('a NaN, a string or a missing reward', async () => {
    const ep = gw.gateway.openAttempt();
    const nan = errorOf(await postEvent(ep, '{"event_type": "reward", "data": {"value": NaN}}', ep.key), 400);
    assert.equal(nan.code, 'invalid_reward');
    assert.match(nan.message, /has NaN, which is not JSON; a reward must be a finite number/);
    const inf = errorOf(await postEvent(ep, '{"event_type": "reward", "data": {"value": -Infinity}}', ep.key), 400);
    assert.match(inf.message, /-Infinity/);
    const str = errorOf(
      await postEvent(ep, JSON.stringify({ event_type: 'reward', data: { value: 'NaN' } }), ep.key),
      400,
    );
    assert.equal(str.param, 'data.value');
    assert.match(str.message, /data.value must be a finite number; got string "NaN"/);
    const none = errorOf(await postEvent(ep, JSON.stringify({ event_type: 'reward', data: {} }), ep.key), 400);
    assert.match(none.message, /needs data.value/);
    const noType = errorOf(await postEvent(ep, JSON.stringify({ data: { value: 1 } }), ep.key), 400);
    assert.equal(noType.param, 'event_type');
    const notJson = errorOf(await postEvent(ep, '{"event_type": "reward", ', ep.key), 400);
    assert.equal(notJson.code, 'invalid_json');
    assert.equal(gw.gateway.attempt(ep.rolloutId, ep.attemptId)!.reward, undefined, 'nothing was recorded');
    await stillServes();
  });

  test('a missing or wrong key, an unknown attempt, an unknown route', async () => {
    const ep = gw.gateway.openAttempt();
    const body = JSON.stringify({ event_type: 'reward', data: { value: 1 } });
    const missing = await postEvent(ep, body, null);
    assert.equal(errorOf(missing, 401).code, 'invalid_api_key');
    assert.match(missing.json.error.message, /Missing key/);
    const other = gw.gateway.openAttempt();
    const wrong = errorOf(await postEvent(ep, body, other.key), 401);
    assert.match(wrong.message, /Incorrect key for attempt/);
    const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: 'not-the-key', maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create({ model: 'auto', messages: userTurn(), max_tokens: 2 }),
      (err: any) => err.status === 401,
    );
    const unknown = errorOf(
      await postEvent({ eventUrl: ep.eventUrl.replace(ep.attemptId, 'nope') }, body, ep.key),
      404,
    );
    assert.equal(unknown.code, 'attempt_not_found');
    assert.match(unknown.message, /unknown attempt "nope" of rollout/);
    const route = await fetch(`${ep.baseUrl}/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ep.key}` },
      body: '{}',
    });
    assert.equal(route.status, 404);
    assert.equal(gw.gateway.attempt(ep.rolloutId, ep.attemptId)!.events.length, 0);
    await stillServes();
  });

  test('a 10 MB event body gets 413 and its connection closed', async () => {
    const ep = gw.gateway.openAttempt();
    const big = JSON.stringify({ event_type: 'reward', data: { value: 1, blob: 'x'.repeat(10 * 1024 * 1024) } });
    const r = await postEvent(ep, big, ep.key);
    const e = errorOf(r, 413);
    assert.equal(e.code, 'request_too_large');
    assert.match(e.message, /more than the gateway's limit of 1\.00 MiB/);
    // Without a content-length (chunked), cut off while streaming.
    const url = new URL(ep.eventUrl);
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = net.connect(Number(url.port), url.hostname, () => {
        sock.write(
          `POST ${url.pathname} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${ep.key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`,
        );
        const chunk = 'y'.repeat(1 << 20);
        let sent = 0;
        const pump = () => {
          while (sent < 10 && !sock.destroyed) {
            sent++;
            if (!sock.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`)) return void sock.once('drain', pump);
          }
          if (!sock.destroyed) sock.end('0\r\n\r\n');
        };
        pump();
      });
      let data = '';
      sock.on('data', (d) => {
        data += d.toString();
      });
      sock.on('close', () => resolve(data));
      sock.on('error', (err) => (data ? resolve(data) : reject(err)));
    });
    assert.match(reply, /^HTTP\/1\.1 413/);
    assert.equal(gw.gateway.attempt(ep.rolloutId, ep.attemptId)!.events.length, 0);
    await stillServes();
  });

  test("the server's own routes are unchanged beside the gateway", async () => {
    const client = new OpenAI({ baseURL: gw.server.url, apiKey: 'unused', maxRetries: 0 });
    const r = await client.chat.completions.create({
      model: 'vqalab',
      messages: userTurn(),
      max_tokens: 2,
      temperature: 0,
    });
    assert.equal(r.choices.length, 1);
    await assert.rejects(
      client.chat.completions.create({ model: 'auto', messages: userTurn(), max_tokens: 2 }),
      (err: any) => err.status === 404,
    );
    const s = gw.gateway.stats();
    assert.ok(s.refused >= 8, JSON.stringify(s));
  });
});
