/**
 * Native tool calling (issue 16): OpenAI's `tools`, `tool_calls` and `role: "tool"` messages on
 * `vqalab serve` and the gateway, in the Qwen chat template's tool format.
 * - The prompt equals what Qwen2.5's tool template (below, as published, with Qwen2-VL's default
 *   system text) renders for the same conversation, through @huggingface/jinja.
 * - End to end with the openai package: the tiny model, taught one tool call by a short SFT, answers
 *   with `tool_calls` (JSON and streamed); the agent sends the call and its result back; the
 *   gateway records both calls as one token-exact sequence whose tool result is masked out.
 * - Bad tool input gets 400s naming the field.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Template } from '@huggingface/jinja';
import OpenAI from 'openai';
import { startGateway, type StartedGateway } from '../../src/gateway/start.js';
import { trajectorySegments } from '../../src/gateway/trajectory.js';
import { Trainer } from '../../src/grpo/trainer.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { parseChatRequest } from '../../src/serve/protocol.js';
import { toolConversation } from '../../src/serve/tools.js';
import { makeFixture, type Fixture } from '../rollout/fixtures.js';

/** Qwen2.5-Instruct's chat template (tool part as published; default system text: Qwen2-VL's). */
const QWEN25_TOOLS = `{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
`;

const TOOLS: OpenAI.Chat.ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'zoom',
      description: 'Zoom into the image',
      parameters: { type: 'object', properties: { factor: { type: 'number' } }, required: ['factor'] },
    },
  },
  {
    type: 'function',
    function: {
      name: 'crop',
      parameters: { type: 'object', properties: { box: { type: 'array', items: { type: 'integer' } } } },
    },
  },
];
const CALL = '<tool_call>\n{"name": "zoom", "arguments": {"factor": 2}}\n</tool_call>';

let fx: Fixture;
let policy: LocalPolicy;
let gw: StartedGateway;

before(async () => {
  fx = await makeFixture();
  policy = await LocalPolicy.load(undefined, { threads: 1 });
});

after(async () => {
  await gw?.close();
  policy?.dispose();
  fx?.cleanup();
});

const LIMITS = { maxN: 8, maxImages: 4 };

test("the prompt is Qwen's tool template's: tools in the system turn, calls as <tool_call>, consecutive results in one user turn", () => {
  const conversations: { messages: any[]; tools?: any[] }[] = [
    {
      tools: TOOLS,
      messages: [
        { role: 'user', content: 'what color is the circle?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'zoom', arguments: '{"factor": 2}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: 'the crop is red' },
        {
          role: 'assistant',
          content: 'Let me look closer.',
          tool_calls: [
            { id: 'c2', type: 'function', function: { name: 'crop', arguments: '{"box":[1,2,3,4]}' } },
            { id: 'c3', type: 'function', function: { name: 'zoom', arguments: '{"factor":0.5}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'c2', content: 'a crop' },
        { role: 'tool', tool_call_id: 'c3', content: 'a zoom' },
        { role: 'assistant', content: 'red' },
        { role: 'user', content: 'sure?' },
      ],
    },
    {
      tools: TOOLS,
      messages: [
        { role: 'system', content: 'Answer briefly.' },
        { role: 'user', content: 'hi' },
      ],
    },
    {
      messages: [
        { role: 'user', content: 'hi' },
        {
          role: 'assistant',
          content: '',
          tool_calls: [{ id: 'x', type: 'function', function: { name: 'zoom', arguments: '{}' } }],
        },
        { role: 'tool', content: 'ok' },
      ],
    },
  ];
  const reference = new Template(QWEN25_TOOLS);
  for (const [i, c] of conversations.entries()) {
    const chat = parseChatRequest({ model: 'm', messages: c.messages, ...(c.tools ? { tools: c.tools } : {}) }, LIMITS);
    const ours = policy.tokenizer.applyChatTemplate(chat.messages);
    // transformers hands the template tool-call arguments as objects.
    const asHf = c.messages.map((m) =>
      m.tool_calls
        ? {
            ...m,
            content: m.content ?? '',
            tool_calls: m.tool_calls.map((t: any) => ({
              ...t,
              function: { ...t.function, arguments: JSON.parse(t.function.arguments) },
            })),
          }
        : m,
    );
    const theirs = reference.render({
      messages: asHf,
      ...(c.tools ? { tools: c.tools } : {}),
      add_generation_prompt: true,
    });
    assert.equal(ours, theirs, `conversation ${i}`);
  }
  // tool_choice "none": the tools are not offered.
  const none = parseChatRequest(
    { model: 'm', messages: [{ role: 'user', content: 'hi' }], tools: TOOLS, tool_choice: 'none' },
    LIMITS,
  );
  assert.equal(none.tools, undefined);
  assert.deepEqual(none.messages, [{ role: 'user', content: 'hi' }]);
});

test('bad tool input: 400s naming the field', () => {
  const bad = (body: Record<string, unknown>, param: string, re: RegExp) => {
    assert.throws(
      () => parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'hi' }], ...body }, LIMITS),
      (err: any) => {
        assert.equal(err.status, 400);
        assert.equal(err.param, param);
        assert.match(err.message, re);
        return true;
      },
    );
  };
  bad({ tools: [{ type: 'function', function: { name: 'a b' } }] }, 'tools[0].function.name', /1-64 characters/);
  bad({ tools: [{ type: 'retrieval' }] }, 'tools[0]', /type: "function"/);
  bad({ tools: TOOLS, tool_choice: 'required' }, 'tool_choice', /forcing a call needs constrained decoding/);
  bad({ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'zoom' } } }, 'tool_choice', /not supported/);
  bad({ tools: [TOOLS[0], TOOLS[0]] }, 'tools[1].function.name', /defined twice/);
  assert.throws(
    () =>
      parseChatRequest(
        {
          model: 'm',
          messages: [
            { role: 'user', content: 'hi' },
            { role: 'assistant', tool_calls: [{ type: 'function', function: { name: 'zoom', arguments: '{factor' } }] },
          ],
        },
        LIMITS,
      ),
    (err: any) =>
      err.param === 'messages[1].tool_calls[0].function.arguments' && /must be a JSON string/.test(err.message),
  );
  assert.throws(
    () =>
      parseChatRequest(
        { model: 'm', messages: [{ role: 'tool', content: [{ type: 'image_url', image_url: { url: 'data:' } }] }] },
        LIMITS,
      ),
    (err: any) => err.param === 'messages[0].content' && /string or text parts/.test(err.message),
  );
});

test('end to end through the gateway with the openai package: tool_calls out, the call and its result back, one masked sequence', async () => {
  // Teach the tiny model one call for this prompt (the trainer's SFT with the tools' system turn).
  const system = toolConversation([{ role: 'user', content: '' }], TOOLS as any, (m) => m as any)[0]!.content as string;
  const samples = fx.samples.filter((s) => s.id.endsWith('c')).map((s) => ({ ...s, answer: CALL, answers: [CALL] }));
  await new Trainer({
    model: policy.model,
    tokenizer: policy.tokenizer,
    train: samples,
    rewards: [],
    systemPrompt: system,
    recordFacts: false,
    loadImages: async (s) => [await policy.image(s.imagePath)],
    config: { seed: 1 },
  }).sft({ steps: 24, batchSize: 1, learningRate: 1e-2 });
  gw = await startGateway(policy, { serve: { allowedMediaRoot: fx.dir } });
  const ep = gw.gateway.openAttempt();
  const client = new OpenAI({ baseURL: ep.baseUrl, apiKey: ep.key, maxRetries: 0 });
  const user: OpenAI.Chat.ChatCompletionMessageParam = {
    role: 'user',
    content: [
      { type: 'image_url', image_url: { url: fx.dataUrl } },
      { type: 'text', text: samples[0]!.question },
    ],
  };
  const r = await client.chat.completions.create({
    model: 'auto',
    messages: [user],
    tools: TOOLS,
    temperature: 0,
    max_tokens: 64,
  });
  const choice = r.choices[0]!;
  assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(choice));
  assert.equal(choice.message.content, null);
  assert.equal(choice.message.tool_calls?.length, 1);
  const call = choice.message.tool_calls![0]! as OpenAI.Chat.ChatCompletionMessageFunctionToolCall;
  assert.deepEqual(
    [call.type, call.function.name, JSON.parse(call.function.arguments)],
    ['function', 'zoom', { factor: 2 }],
  );
  assert.match(call.id, /^call_[0-9a-f]{24}$/);

  // Streamed: the same call in the chunks' tool_calls delta.
  const stream = await client.chat.completions.create({
    model: 'auto',
    messages: [user],
    tools: TOOLS,
    temperature: 0,
    max_tokens: 64,
    stream: true,
  });
  const deltas: any[] = [];
  let finish: string | null = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      if (c.delta.tool_calls) deltas.push(...c.delta.tool_calls);
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.deepEqual(
    deltas.map((d) => [d.index, d.function.name, d.function.arguments]),
    [[0, 'zoom', call.function.arguments]],
  );

  // The agent runs the tool and sends the call and its result back.
  const r2 = await client.chat.completions.create({
    model: 'auto',
    tools: TOOLS,
    temperature: 0,
    max_tokens: 4,
    messages: [
      user,
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: 'the zoomed crop is red' },
    ],
  });
  assert.equal(r2.choices.length, 1);
  const rec = gw.gateway.attempt(ep.rolloutId, ep.attemptId)!;
  assert.equal(rec.calls.length, 3);
  const [first, , third] = rec.calls;
  assert.equal(first!.choices[0]!.text, CALL);
  // The call went back as the ids sampled for it: calls 1 and 3 form one sequence.
  const head = [...first!.prompt.ids, ...first!.choices[0]!.tokenIds.slice(0, -1)];
  assert.deepEqual([...third!.prompt.ids.slice(0, head.length)], head);
  const segs = trajectorySegments([first!, third!]);
  assert.equal(segs.length, 1);
  const seg = segs[0]!;
  const between = seg.tokenIds.slice(
    first!.choices[0]!.tokenIds.length,
    seg.tokenIds.length - third!.choices[0]!.tokenIds.length,
  );
  assert.ok(
    seg.mask
      .slice(first!.choices[0]!.tokenIds.length, seg.tokenIds.length - third!.choices[0]!.tokenIds.length)
      .every((m) => m === 0),
  );
  assert.match(
    policy.tokenizer.decode([...between], { skipSpecialTokens: false }),
    /<tool_response>\nthe zoomed crop is red\n<\/tool_response>/,
  );
});
