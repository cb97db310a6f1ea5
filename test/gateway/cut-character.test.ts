/**
 * An answer the token limit cut in the middle of a multi-byte UTF-8 character, on the real gateway
 * on 127.0.0.1 with the embedded tiny model: the text the agent gets (JSON or streamed) is exactly
 * the decode of the recorded ids, the incomplete character as U+FFFD, and sent back verbatim it
 * continues from the sampled ids (the character's bytes), not from U+FFFD re-encoded.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startGateway, type StartedGateway } from '../../src/gateway/start.js';
import { LocalPolicy } from '../../src/rollout/local.js';

let policy: LocalPolicy;
let gw: StartedGateway;

before(async () => {
  policy = await LocalPolicy.load(undefined, { threads: 1 });
  gw = await startGateway(policy);
});

after(async () => {
  await gw?.close();
  policy?.dispose();
});

const QUESTION: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'what shapes are there?' }];

/** One attempt: an answer, then the same conversation with it sent back and a second question. */
async function twoTurns(seed: number, stream: boolean) {
  const ep = gw.gateway.openAttempt();
  const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: ep.key, maxRetries: 0 });
  const asked = { model: 'auto', messages: QUESTION, max_tokens: 3 + (seed % 5), temperature: 1.5, seed };
  let text = '';
  if (stream) {
    for await (const chunk of await client.chat.completions.create({ ...asked, stream: true }))
      text += chunk.choices[0]?.delta?.content ?? '';
  } else {
    text = (await client.chat.completions.create(asked)).choices[0]!.message.content ?? '';
  }
  await client.chat.completions.create({
    model: 'auto',
    messages: [...QUESTION, { role: 'assistant', content: text }, { role: 'user', content: 'sure?' }],
    max_tokens: 1,
    temperature: 0,
  });
  const [first, second] = ep.record.calls;
  return { text, first: first!, second: second! };
}

test('an answer cut inside a character: its text is the decode of its ids, and sent back it continues from them', async () => {
  const tok = policy.tokenizer;
  const specials = new Set(Object.values(tok.special));
  let cut = 0;
  // Seeds in order until several answers end inside a character (about one in four does);
  // sampling is a function of the seed, so the same seeds are tried on every run.
  for (let seed = 0; seed < 200 && cut < 6; seed++) {
    for (const stream of [false, true]) {
      const { text, first, second } = await twoTurns(seed, stream);
      const choice = first.choices[0]!;
      const ids = Array.from(choice.tokenIds);
      // Cut by the token limit, inside a character, with no special token (those are never put back).
      if (choice.finishReason !== 'length' || ids.some((t) => specials.has(t))) continue;
      const decoded = tok.decode(ids, { skipSpecialTokens: false });
      if (!decoded.endsWith('\uFFFD') || tok.encode(decoded).join() === ids.join()) continue;
      cut++;
      const what = `seed ${seed}${stream ? ' (streamed)' : ''}: ids ${ids.join(' ')}, text ${JSON.stringify(text)}`;
      assert.equal(text, decoded, `${what}: the text the agent got is the decode of the recorded ids`);
      assert.equal(choice.text, decoded, `${what}: the recorded text too`);
      const head = [...first.prompt.ids, ...ids];
      assert.deepEqual(
        Array.from(second.prompt.ids.slice(0, head.length)),
        head,
        `${what}: the next call continues from the sampled ids`,
      );
      assert.notDeepEqual(Array.from(second.prompt.ids), Array.from(second.templateIds), what);
    }
  }
  assert.ok(cut >= 6, `only ${cut} answers ended inside a character in 200 seeds`);
});
