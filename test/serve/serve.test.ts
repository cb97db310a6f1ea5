/**
 * `vqalab serve` on loopback with the embedded tiny model: the `openai` package used as a plain
 * user would (models, chat with an image, n > 1, logprobs, streaming), auth, limits and hostile
 * requests (each answered with a clear OpenAI-shaped error while the server keeps serving).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import OpenAI from 'openai';
import sharp from 'sharp';
import { LocalPolicy } from '../../src/rollout/local.js';
import { serve, type ServeHandle } from '../../src/serve/server.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';

let policy: LocalPolicy;
let fx: Fixture;
let open: ServeHandle; // no key, local media under fx.dir/media
let locked: ServeHandle; // API key, small limits
const KEY = 'sk-test-0123456789';

before(async () => {
  fx = await makeFixture();
  mkdirSync(path.join(fx.dir, 'media'));
  writeFileSync(path.join(fx.dir, 'media', 'inside.png'), fx.png);
  policy = await LocalPolicy.load(undefined, { threads: 1 });
  open = await serve({ policy, port: 0, allowedMediaRoot: path.join(fx.dir, 'media') });
  locked = await serve({
    policy,
    port: 0,
    apiKey: KEY,
    modelName: 'tiny',
    maxBodyBytes: 2 << 20,
    maxImageBytes: 256 << 10,
    maxImagePixels: 1 << 20,
  });
});

after(async () => {
  await open?.close();
  await locked?.close();
  policy?.dispose();
  fx?.cleanup();
});

function userTurn(url: string, text = 'what color is the circle?'): OpenAI.Chat.ChatCompletionMessageParam[] {
  return [
    {
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url } },
        { type: 'text', text },
      ],
    },
  ];
}

async function post(
  handle: ServeHandle,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${handle.url}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
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

/** The error object of a failed request, checked to have OpenAI's shape. */
function errorOf(
  r: { status: number; json: any },
  status: number,
): { message: string; type: string; param: string | null; code: string | null } {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(typeof r.json?.error?.message, 'string', `OpenAI error shape: ${JSON.stringify(r.json)}`);
  assert.ok('type' in r.json.error && 'param' in r.json.error && 'code' in r.json.error);
  return r.json.error;
}

async function stillServes(handle: ServeHandle = open, headers: Record<string, string> = {}): Promise<void> {
  const r = await post(
    handle,
    { model: handle.modelName, messages: userTurn(fx.dataUrl), max_tokens: 2, temperature: 0 },
    headers,
  );
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.json.choices.length, 1);
}

describe('the openai package as a plain user', () => {
  test('lists the model and answers a chat with an image, n > 1, usage, log-probs and token ids', async () => {
    const client = new OpenAI({ baseURL: open.url, apiKey: 'unused' });
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      ['vqalab'],
    );
    const res = await client.chat.completions.create({
      model: 'vqalab',
      messages: userTurn(fx.dataUrl),
      n: 3,
      temperature: 1,
      seed: 11,
      max_tokens: 6,
      logprobs: true,
      top_logprobs: 2,
      // @ts-expect-error vLLM's extension, passed through as a plain user of the package would
      return_token_ids: true,
    });
    assert.equal(res.object, 'chat.completion');
    assert.equal(res.model, 'vqalab');
    assert.match(res.id, /^chatcmpl-/);
    assert.equal(res.choices.length, 3);
    const prompt = policy.prompt(VlmTokenizer.vqaMessages('what color is the circle?'), [await policy.image(fx.png)]);
    assert.equal(res.usage!.prompt_tokens, prompt.ids.length);
    let total = 0;
    res.choices.forEach((c, i) => {
      assert.equal(c.index, i);
      assert.equal(c.message.role, 'assistant');
      assert.equal(typeof c.message.content, 'string');
      assert.ok(['stop', 'length'].includes(c.finish_reason));
      const ids = (c as unknown as { token_ids: number[] }).token_ids;
      assert.ok(ids.length >= 1 && ids.length <= 6);
      assert.equal(c.logprobs!.content!.length, ids.length);
      for (const t of c.logprobs!.content!) {
        assert.ok(t.logprob <= 0 && Number.isFinite(t.logprob));
        assert.equal(t.top_logprobs.length, 2);
        assert.ok(t.top_logprobs[0]!.logprob >= t.top_logprobs[1]!.logprob);
        // the sampled token's log-prob is at most the best alternative's (float32 vs float64 rounding aside)
        assert.ok(t.logprob <= t.top_logprobs[0]!.logprob + 1e-5);
      }
      total += ids.length;
    });
    assert.equal(res.usage!.completion_tokens, total);
    assert.equal(res.usage!.total_tokens, total + prompt.ids.length);
    // The same seed gives the same completions; another seed, others.
    const again = await client.chat.completions.create({
      model: 'vqalab',
      messages: userTurn(fx.dataUrl),
      n: 3,
      temperature: 1,
      seed: 11,
      max_tokens: 6,
    });
    assert.deepEqual(
      again.choices.map((c) => c.message.content),
      res.choices.map((c) => c.message.content),
    );
    const other = await client.chat.completions.create({
      model: 'vqalab',
      messages: userTurn(fx.dataUrl),
      n: 3,
      temperature: 1,
      seed: 12,
      max_tokens: 6,
    });
    assert.notDeepEqual(
      other.choices.map((c) => c.message.content),
      res.choices.map((c) => c.message.content),
    );
  });

  test('streams in the chunk format: the deltas add up to the non-streamed answer, then usage and [DONE]', async () => {
    const client = new OpenAI({ baseURL: open.url, apiKey: 'unused' });
    const body = { model: 'vqalab', messages: userTurn(fx.dataUrl), n: 2, temperature: 1, seed: 3, max_tokens: 8 };
    const whole = await client.chat.completions.create({ ...body, logprobs: true });
    const stream = await client.chat.completions.create({
      ...body,
      logprobs: true,
      stream: true,
      stream_options: { include_usage: true },
    });
    const text = ['', ''];
    const lps: number[][] = [[], []];
    const finish: (string | null)[] = [null, null];
    let roles = 0,
      usage: OpenAI.CompletionUsage | undefined,
      chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      assert.equal(chunk.id, (await Promise.resolve(chunk)).id);
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) {
          roles++;
          assert.equal(c.delta.role, 'assistant');
        }
        text[c.index] += c.delta.content ?? '';
        for (const t of c.logprobs?.content ?? []) lps[c.index]!.push(t.logprob);
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    }
    assert.equal(roles, 2);
    assert.ok(chunks > 4);
    assert.deepEqual(
      text,
      whole.choices.map((c) => c.message.content),
    );
    assert.deepEqual(
      finish,
      whole.choices.map((c) => c.finish_reason),
    );
    assert.deepEqual(
      lps,
      whole.choices.map((c) => c.logprobs!.content!.map((t) => t.logprob)),
    );
    assert.deepEqual({ ...usage }, { ...whole.usage });
  });

  test('the raw SSE stream ends with data: [DONE]', async () => {
    const res = await fetch(`${open.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'vqalab',
        messages: [{ role: 'user', content: 'hello' }],
        max_tokens: 3,
        stream: true,
        temperature: 0,
      }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
    const raw = await res.text();
    const events = raw.split('\n\n').filter(Boolean);
    assert.ok(events.every((e) => e.startsWith('data: ')));
    assert.equal(events.at(-1), 'data: [DONE]');
    const last = JSON.parse(events.at(-2)!.slice(6));
    assert.ok(last.choices[0].finish_reason);
  });

  test('stop strings cut the text; a one-token stop string ends generation at that token', async () => {
    // The untrained model's first seeds may stop at once; take the first seed with a long enough completion.
    let base: Record<string, unknown> = {},
      full: { json: any } = { json: undefined };
    for (let seed = 20; seed < 40; seed++) {
      base = {
        model: 'vqalab',
        messages: userTurn(fx.dataUrl),
        temperature: 1,
        seed,
        max_tokens: 12,
        return_token_ids: true,
      };
      full = await post(open, base);
      if (full.json.choices[0].token_ids.length >= 4 && full.json.choices[0].message.content.length >= 4) break;
    }
    const ids: number[] = full.json.choices[0].token_ids;
    const text: string = full.json.choices[0].message.content;
    assert.ok(ids.length >= 4 && text.length >= 4, `a long enough completion: ${JSON.stringify(text)}`);
    // A multi-character stop string from the middle of the text.
    const stop = text.slice(2, 4);
    const cut = await post(open, { ...base, stop: [stop] });
    assert.equal(cut.json.choices[0].message.content, text.slice(0, text.indexOf(stop)));
    assert.equal(cut.json.choices[0].finish_reason, 'stop');
    // The second token, as a stop string that is a single token: generation stops there.
    const tok = policy.tokenizer.decode([ids[1]!], { skipSpecialTokens: false });
    if (
      policy.tokenizer.encode(tok).length === 1 &&
      !text.slice(0, policy.tokenizer.decode(ids.slice(0, 1)).length).includes(tok)
    ) {
      const one = await post(open, { ...base, stop: tok });
      assert.deepEqual(one.json.choices[0].token_ids, ids.slice(0, 2));
      assert.equal(one.json.choices[0].finish_reason, 'stop');
    }
  });

  test('a local file under --allowed-media-root is read like the same data URL', async () => {
    const a = await post(open, {
      model: 'vqalab',
      messages: userTurn(`file://${path.join(fx.dir, 'media', 'inside.png')}`),
      temperature: 1,
      seed: 5,
      max_tokens: 5,
    });
    const b = await post(open, {
      model: 'vqalab',
      messages: userTurn(fx.dataUrl),
      temperature: 1,
      seed: 5,
      max_tokens: 5,
    });
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.equal(a.json.choices[0].message.content, b.json.choices[0].message.content);
    assert.equal(a.json.usage.prompt_tokens, b.json.usage.prompt_tokens);
  });

  test('an EXIF-rotated JPEG is planned and processed upright (prompt tokens from the header match the pixels)', async () => {
    // 168x112 stored, orientation 6 (rotate 90°): 112x168 upright, 4x6 merged tokens = 24.
    const jpeg = await sharp({ create: { width: 168, height: 112, channels: 3, background: '#c33' } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const upright = await sharp(jpeg).rotate().png().toBuffer();
    const a = await post(open, {
      model: 'vqalab',
      messages: userTurn(`data:image/jpeg;base64,${jpeg.toString('base64')}`),
      temperature: 0,
      max_tokens: 2,
    });
    const b = await post(open, {
      model: 'vqalab',
      messages: userTurn(`data:image/png;base64,${upright.toString('base64')}`),
      temperature: 0,
      max_tokens: 2,
    });
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.equal(a.json.usage.prompt_tokens, b.json.usage.prompt_tokens);
    assert.equal((await policy.image(jpeg)).gridThw.join('x'), '1x12x8');
  });

  test('concurrent requests are all answered (queued onto the engine)', async () => {
    const client = new OpenAI({ baseURL: open.url, apiKey: 'unused' });
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_x, i) =>
        client.chat.completions.create({
          model: 'vqalab',
          messages: userTurn(fx.dataUrl),
          temperature: 1,
          seed: i,
          max_tokens: 4,
          user: `client-${i % 3}`,
        }),
      ),
    );
    assert.equal(replies.length, 8);
    for (const r of replies) assert.equal(r.choices.length, 1);
  });
});

describe('auth', () => {
  test('without the bearer token: 401 invalid_api_key; with it: served; /health needs none', async () => {
    const none = await post(locked, { model: 'tiny', messages: userTurn(fx.dataUrl), max_tokens: 2 });
    assert.equal(errorOf(none, 401).code, 'invalid_api_key');
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    const wrong = await post(
      locked,
      { model: 'tiny', messages: userTurn(fx.dataUrl), max_tokens: 2 },
      { authorization: 'Bearer sk-wrong' },
    );
    assert.equal(errorOf(wrong, 401).message, 'Incorrect API key provided');
    const models = await fetch(`${locked.url}/models`);
    assert.equal(models.status, 401);
    await assert.rejects(
      new OpenAI({ baseURL: locked.url, apiKey: 'sk-wrong', maxRetries: 0 }).models.list(),
      OpenAI.AuthenticationError,
    );
    const ok = await new OpenAI({ baseURL: locked.url, apiKey: KEY }).chat.completions.create({
      model: 'tiny',
      messages: userTurn(fx.dataUrl),
      max_tokens: 2,
    });
    assert.equal(ok.choices.length, 1);
    const health = await fetch(`http://127.0.0.1:${locked.port}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, 'ok');
  });

  test('binds loopback by default', () => {
    assert.equal(open.host, '127.0.0.1');
    assert.equal((open.server.address() as net.AddressInfo).address, '127.0.0.1');
  });
});

describe('hostile requests get clear errors and the server keeps serving', () => {
  const auth = { authorization: `Bearer ${KEY}` };

  test('malformed JSON, missing fields, wrong types, unknown model, unsupported options', async () => {
    let e = errorOf(await post(open, '{"model": "vqalab", "messages": [}'), 400);
    assert.equal(e.code, 'invalid_json');
    assert.match(e.message, /^the request body is not valid JSON: /);
    e = errorOf(await post(open, '[1,2]'), 400);
    assert.equal(e.message, 'the request body must be a JSON object; got array');
    e = errorOf(await post(open, { messages: userTurn(fx.dataUrl) }), 400);
    assert.deepEqual([e.param, e.code], ['model', 'missing_required_parameter']);
    e = errorOf(await post(open, { model: 'vqalab' }), 400);
    assert.deepEqual([e.param, e.message], ['messages', 'you must provide a messages parameter']);
    e = errorOf(await post(open, { model: 'vqalab', messages: [] }), 400);
    assert.equal(e.message, 'messages must be a non-empty array');
    e = errorOf(await post(open, { model: 'vqalab', messages: [{ role: 'robot', content: 'hi' }] }), 400);
    assert.equal(e.param, 'messages[0].role');
    e = errorOf(
      await post(open, { model: 'vqalab', messages: [{ role: 'user', content: [{ type: 'audio', data: 'x' }] }] }),
      400,
    );
    assert.equal(e.param, 'messages[0].content[0].type');
    e = errorOf(await post(open, { model: 'vqalab', messages: userTurn(fx.dataUrl), n: 1000 }), 400);
    assert.deepEqual([e.param, e.message], ['n', 'n must be between 1 and 64; got 1000']);
    e = errorOf(await post(open, { model: 'vqalab', messages: userTurn(fx.dataUrl), temperature: 'hot' }), 400);
    assert.equal(e.param, 'temperature');
    e = errorOf(await post(open, { model: 'vqalab', messages: userTurn(fx.dataUrl), top_logprobs: 3 }), 400);
    assert.equal(e.message, 'top_logprobs needs logprobs: true');
    e = errorOf(
      await post(open, {
        model: 'vqalab',
        messages: userTurn(fx.dataUrl),
        tools: [{ type: 'function', function: { name: 'f' } }],
        tool_choice: 'required',
      }),
      400,
    );
    assert.deepEqual([e.param, e.code], ['tool_choice', 'unsupported_parameter']);
    e = errorOf(await post(open, { model: 'gpt-4o', messages: userTurn(fx.dataUrl) }), 404);
    assert.deepEqual([e.param, e.code, e.type], ['model', 'model_not_found', 'not_found_error']);
    const get = await fetch(`${open.url}/chat/completions`);
    assert.equal(errorOf({ status: get.status, json: await get.json() }, 405).code, 'method_not_allowed');
    const nowhere = await fetch(`http://127.0.0.1:${open.port}/v2/anything`);
    assert.equal(errorOf({ status: nowhere.status, json: await nowhere.json() }, 404).code, 'unknown_url');
    await stillServes();
  });

  test('bad base64, a non-image, a remote URL, and images over the byte and pixel limits', async () => {
    const msg = (url: string) => ({ model: 'tiny', messages: userTurn(url), max_tokens: 2 });
    let e = errorOf(await post(locked, msg('data:image/png;base64,iVBOR!!not*base64'), auth), 400);
    assert.equal(e.code, 'invalid_base64');
    assert.equal(e.param, 'messages[0].content[0].image_url');
    assert.match(e.message, /not valid base64 \(character "!" at offset 5\)/);
    e = errorOf(
      await post(
        locked,
        msg(`data:image/png;base64,${Buffer.from('definitely not an image').toString('base64')}`),
        auth,
      ),
      400,
    );
    assert.equal(e.code, 'invalid_image');
    assert.match(e.message, /^messages\[0\]\.content\[0\]\.image_url: cannot decode the image/);
    e = errorOf(await post(locked, msg('https://example.invalid/cat.png'), auth), 400);
    assert.equal(e.code, 'remote_media_disabled');
    // Bytes over --max-image-mb (256 KiB here): random pixels do not compress.
    let x = 2463534242;
    const bytes = Buffer.alloc(400 * 400 * 3, 0).map(() => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x & 255;
    });
    const noisy = await sharp(bytes, { raw: { width: 400, height: 400, channels: 3 } })
      .png()
      .toBuffer();
    assert.ok(noisy.length > 256 << 10);
    e = errorOf(await post(locked, msg(`data:image/png;base64,${noisy.toString('base64')}`), auth), 400);
    assert.equal(e.code, 'image_too_large');
    assert.match(e.message, /more than this server's limit of 256\.0 KiB per image/);
    // Pixels over --max-image-pixels (1 Mi here), though the file is small.
    const wide = await sharp({ create: { width: 2048, height: 1024, channels: 3, background: '#fff' } })
      .png()
      .toBuffer();
    e = errorOf(await post(locked, msg(`data:image/png;base64,${wide.toString('base64')}`), auth), 400);
    assert.equal(
      e.message,
      "messages[0].content[0].image_url: the image is 2048x1024 = 2,097,152 pixels, more than this server's limit of 1,048,576",
    );
    // A body over --max-body-mb (2 MiB here): 413 before anything is parsed.
    const huge = await post(
      locked,
      { model: 'tiny', messages: userTurn(`data:image/png;base64,${'A'.repeat(3 << 20)}`) },
      auth,
    );
    assert.equal(errorOf(huge, 413).code, 'request_too_large');
    await stillServes(locked, auth);
  });

  test('local paths: refused outside the allowed root (symlinks too), and on a server without one', async () => {
    const outside = path.join(fx.dir, 'circle-red.png'); // exists, but outside media/
    let e = errorOf(await post(open, { model: 'vqalab', messages: userTurn(`file://${outside}`) }), 403);
    assert.deepEqual([e.code, e.type], ['media_outside_root', 'permission_error']);
    e = errorOf(await post(open, { model: 'vqalab', messages: userTurn('/etc/passwd') }), 403);
    assert.equal(e.code, 'media_outside_root');
    e = errorOf(
      await post(open, {
        model: 'vqalab',
        messages: userTurn(`file://${path.join(fx.dir, 'media', '..', 'circle-red.png')}`),
      }),
      403,
    );
    assert.equal(e.code, 'media_outside_root');
    symlinkSync(outside, path.join(fx.dir, 'media', 'link.png'));
    e = errorOf(
      await post(open, { model: 'vqalab', messages: userTurn(`file://${path.join(fx.dir, 'media', 'link.png')}`) }),
      403,
    );
    assert.equal(e.code, 'media_outside_root');
    e = errorOf(
      await post(open, { model: 'vqalab', messages: userTurn(`file://${path.join(fx.dir, 'media', 'missing.png')}`) }),
      400,
    );
    assert.equal(e.code, 'image_not_found');
    e = errorOf(
      await post(
        locked,
        { model: 'tiny', messages: userTurn(`file://${path.join(fx.dir, 'media', 'inside.png')}`) },
        auth,
      ),
      403,
    );
    assert.equal(e.code, 'local_media_disabled');
    await stillServes();
  });

  test('a 10k-token prompt, and max_tokens past the context, get context_length_exceeded', async () => {
    const long = 'red circle '.repeat(600);
    assert.ok(policy.tokenizer.encode(long).length >= 1100);
    let e = errorOf(await post(open, { model: 'vqalab', messages: userTurn(fx.dataUrl, long), max_tokens: 4 }), 400);
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(
      e.message,
      /^this model's maximum context length is 1024 tokens, but the prompt has \d{4} tokens \(images included\); shorten it$/,
    );
    // Far longer than any prompt that could fit: refused by its characters, before tokenising.
    e = errorOf(
      await post(open, { model: 'vqalab', messages: userTurn(fx.dataUrl, 'red circle '.repeat(5000)), max_tokens: 4 }),
      400,
    );
    assert.deepEqual([e.code, e.param], ['context_length_exceeded', 'messages']);
    assert.match(
      e.message,
      /^the messages hold 55,000 characters of text, more than this server's limit of [\d,]+ \(--max-prompt-chars\)/,
    );
    e = errorOf(await post(open, { model: 'vqalab', messages: userTurn(fx.dataUrl), max_tokens: 5000 }), 400);
    assert.deepEqual([e.code, e.param], ['context_length_exceeded', 'max_tokens']);
    assert.match(e.message, /lower max_tokens to \d+ or less$/);
    await stillServes();
  });

  test('garbage on the socket and a client that hangs up mid-request do not disturb the server', async () => {
    const reply = await new Promise<string>((resolve) => {
      const s: net.Socket = net.connect(open.port, '127.0.0.1', () => s.write('\x16\x03\x01 not http at all\r\n\r\n'));
      let data = '';
      s.on('data', (d: Buffer) => {
        data += d.toString();
      });
      s.on('close', () => resolve(data));
      s.on('error', () => resolve(data));
    });
    assert.match(reply, /^HTTP\/1\.1 400 Bad Request/);
    // Hangs up in the middle of its body: the headers promise more bytes than ever come.
    const body = JSON.stringify({ model: 'vqalab', messages: userTurn(fx.dataUrl), max_tokens: 64, n: 4 });
    await new Promise<void>((resolve, reject) => {
      const s = net.connect(open.port, '127.0.0.1', () => {
        s.write(
          `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, body.length >> 1)}`,
          () => {
            s.destroy();
            resolve();
          },
        );
      });
      s.on('error', reject);
    });
    // Hangs up while its completions stream: the abort comes after the first chunk has arrived,
    // so it lands mid-generation however fast the model is (or after the end, which is also fine).
    const ac = new AbortController();
    const res = await fetch(`${open.url}/chat/completions`, {
      method: 'POST',
      signal: ac.signal,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'vqalab', messages: userTurn(fx.dataUrl), max_tokens: 64, n: 4, stream: true }),
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    assert.ok(!first.done && first.value.length > 0, 'a first streamed chunk');
    ac.abort();
    await reader.read().catch(() => undefined);
    await stillServes();
  });
});
