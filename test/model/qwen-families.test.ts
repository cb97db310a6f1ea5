/**
 * The tokenizer-side files of each Qwen-VL family (src/model/qwen-tokenizer.ts) and how the runtime
 * uses them: added tokens and their `special` flags, tokenizer_config.json, stop ids, the rendered
 * prompt of a one-image question (expected strings worked out by hand from each template), a
 * Qwen3-VL tool-call turn, the trainer's prompt ids for a Qwen3-VL folder, `<think>` in
 * completions, and a tokenizer of one family refused beside a model of another.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  QWEN2VL_CHAT_TEMPLATE,
  QWEN3VL_CHAT_TEMPLATE,
  qwenTokenizerFiles,
  type QwenFamily,
} from '../../src/model/qwen-tokenizer.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { checkTokenizerFamily, tokenizerFamily } from '../../src/text/family.js';
import { PromptBuilder } from '../../src/grpo/rollout.js';
import { checkTrainerOptions } from '../../src/grpo/options.js';
import { LocalPolicy } from '../../src/rollout/local.js';
import { extractAnswer } from '../../src/reward/extract.js';
import type { EngineModel, ImageInput } from '../../src/engine/types.js';
import type { TrainerOptions } from '../../src/grpo/options.js';
import { presetLayout } from '../../src/model/init-folder.js';
import { processorOptionsFrom, videoProcessorOptionsFrom } from '../../src/vision/processor-config.js';

const work = mkdtempSync(path.join(tmpdir(), 'vqalab-qwen-families-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

/** A folder with only the family's tokenizer-side files, loaded as the runtime loads one (once per family). */
const loaded = new Map<QwenFamily, VlmTokenizer>();
const written = new Map<QwenFamily, ReturnType<typeof qwenTokenizerFiles>>();
function filesOf(family: QwenFamily): ReturnType<typeof qwenTokenizerFiles> {
  if (!written.has(family)) written.set(family, qwenTokenizerFiles(family));
  return written.get(family)!;
}
function folder(family: QwenFamily): VlmTokenizer {
  const hit = loaded.get(family);
  if (hit) return hit;
  const dir = path.join(work, family);
  mkdirSync(dir, { recursive: true });
  for (const [name, value] of Object.entries(filesOf(family)))
    writeFileSync(path.join(dir, name), JSON.stringify(value));
  const tok = VlmTokenizer.load(dir);
  loaded.set(family, tok);
  return tok;
}

const IM_START = 151644,
  IM_END = 151645,
  END_OF_TEXT = 151643,
  VISION_START = 151652,
  VISION_END = 151653,
  IMAGE_PAD = 151655;

const LATER = [
  ['<tool_call>', 151657],
  ['</tool_call>', 151658],
  ['<|fim_prefix|>', 151659],
  ['<|fim_middle|>', 151660],
  ['<|fim_suffix|>', 151661],
  ['<|fim_pad|>', 151662],
  ['<|repo_name|>', 151663],
  ['<|file_sep|>', 151664],
  ['<tool_response>', 151665],
  ['</tool_response>', 151666],
  ['<think>', 151667],
  ['</think>', 151668],
] as const;

const FAMILIES: Record<QwenFamily, { last: number; maxLength: number; processor: string; chatTemplateJson: boolean }> =
  {
    qwen2_vl: { last: 151656, maxLength: 32768, processor: 'Qwen2VLProcessor', chatTemplateJson: false },
    qwen2_5_vl: { last: 151664, maxLength: 131072, processor: 'Qwen2_5_VLProcessor', chatTemplateJson: true },
    qwen3_vl: { last: 151668, maxLength: 262144, processor: 'Qwen3VLProcessor', chatTemplateJson: true },
  };

test('the chat templates are the pinned released texts', () => {
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  // Qwen2-VL / Qwen2.5-VL: the one-line template with the default system turn
  assert.equal(sha(QWEN2VL_CHAT_TEMPLATE), 'a0bc6f6fc7a29a80017a433e8f03a1cc1236e838a944a2d034295a60c4f2fddb');
  // Qwen3-VL-Instruct's chat_template.json, as two public copies give it
  assert.equal(sha(QWEN3VL_CHAT_TEMPLATE), '3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4');
  assert.equal(QWEN3VL_CHAT_TEMPLATE.length, 5292);
});

for (const [family, want] of Object.entries(FAMILIES) as [QwenFamily, (typeof FAMILIES)[QwenFamily]][]) {
  test(`${family}: added tokens, special flags, tokenizer_config.json, stop ids`, () => {
    const files = filesOf(family);
    const added = (files['tokenizer.json']!.added_tokens as { id: number; content: string; special: boolean }[]).map(
      (t) => [t.id, t.content, t.special],
    );
    const expected: [number, string, boolean][] = [
      [151643, '<|endoftext|>', true],
      [151644, '<|im_start|>', true],
      [151645, '<|im_end|>', true],
      [151646, '<|object_ref_start|>', true],
      [151647, '<|object_ref_end|>', true],
      [151648, '<|box_start|>', true],
      [151649, '<|box_end|>', true],
      [151650, '<|quad_start|>', true],
      [151651, '<|quad_end|>', true],
      [151652, '<|vision_start|>', true],
      [151653, '<|vision_end|>', true],
      [151654, '<|vision_pad|>', true],
      [151655, '<|image_pad|>', true],
      [151656, '<|video_pad|>', true],
      ...LATER.filter(([, id]) => id <= want.last).map(([c, id]): [number, string, boolean] => [id, c, false]),
    ];
    assert.deepEqual(added, expected);
    const config = files['tokenizer_config.json']!;
    const decoder = config.added_tokens_decoder as Record<string, { content: string; special: boolean }>;
    assert.deepEqual(
      Object.entries(decoder).map(([id, t]) => [Number(id), t.content, t.special]),
      expected,
    );
    assert.equal(config.eos_token, '<|im_end|>');
    assert.equal(config.pad_token, '<|endoftext|>');
    assert.equal(config.model_max_length, want.maxLength);
    assert.equal(config.processor_class, want.processor);
    assert.equal(config.chat_template, family === 'qwen3_vl' ? QWEN3VL_CHAT_TEMPLATE : QWEN2VL_CHAT_TEMPLATE);
    assert.equal('chat_template.json' in files, want.chatTemplateJson);
    if (want.chatTemplateJson) assert.equal(files['chat_template.json']!.chat_template, config.chat_template);
    assert.deepEqual(files['generation_config.json']!.eos_token_id, [IM_END, END_OF_TEXT]);

    const tok = folder(family);
    assert.equal(tok.vocabSize, want.last + 1);
    assert.deepEqual(tok.stopTokenIds, [IM_END, END_OF_TEXT]);
    assert.equal(tokenizerFamily(tok), family);
    // a later token is one id only where the family has it; elsewhere it is plain text
    for (const [content, id] of LATER) {
      const ids = tok.encode(content);
      if (id <= want.last) assert.deepEqual(ids, [id], content);
      else assert.ok(ids.length > 1 && !ids.includes(id), `${family}: ${content} → ${ids}`);
    }
    // non-special tokens survive decoding; special ones do not
    assert.equal(tok.decode([...tok.encode('a'), IM_END]), 'a');
    if (want.last >= 151667) assert.equal(tok.decode(tok.encode('<think>x</think>')), '<think>x</think>');
  });
}

test('the rendered prompt of a one-image question, per family (worked out from each template)', () => {
  const q = 'What colour is the square?';
  const image = '<|vision_start|><|image_pad|><|vision_end|>';
  // Qwen2-VL and Qwen2.5-VL: a first message that is not a system one gets the default system turn
  const withSystem = `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n${image}${q}<|im_end|>\n<|im_start|>assistant\n`;
  assert.equal(folder('qwen2_vl').applyChatTemplate(VlmTokenizer.vqaMessages(q)), withSystem);
  assert.equal(folder('qwen2_5_vl').applyChatTemplate(VlmTokenizer.vqaMessages(q)), withSystem);
  // Qwen3-VL: no default system turn; a given one is written as is
  const q3 = folder('qwen3_vl');
  assert.equal(
    q3.applyChatTemplate(VlmTokenizer.vqaMessages(q)),
    `<|im_start|>user\n${image}${q}<|im_end|>\n<|im_start|>assistant\n`,
  );
  assert.equal(
    q3.applyChatTemplate(VlmTokenizer.vqaMessages(q, 1, 'Answer in one word.')),
    `<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n${image}${q}<|im_end|>\n<|im_start|>assistant\n`,
  );
  assert.equal(
    q3.applyChatTemplate(VlmTokenizer.vqaMessages(q, 2), { addVisionId: true }),
    `<|im_start|>user\nPicture 1: ${image}Picture 2: ${image}${q}<|im_end|>\n<|im_start|>assistant\n`,
  );
});

test('qwen3_vl: tools, an assistant tool call after a <think> block, and tool responses', () => {
  const tok = folder('qwen3_vl');
  const tool = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } };
  const messages = [
    { role: 'system', content: 'Answer briefly.' },
    { role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Weather?' }] },
    {
      role: 'assistant',
      content: '<think>\nlook it up\n</think>\n\nChecking.',
      tool_calls: [{ type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }],
    },
    { role: 'tool', content: '{"temp": 21}' },
    { role: 'tool', content: '{"rain": 0}' },
  ];
  const text = tok.applyChatTemplate(messages as never, { variables: { tools: [tool] } });
  const expected =
    '<|im_start|>system\nAnswer briefly.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
    'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n' +
    '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}\n</tools>\n\n' +
    'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' +
    '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Weather?<|im_end|>\n' +
    // the Instruct template writes assistant text as given (no <think> handling), then "\n" + each call
    '<|im_start|>assistant\n<think>\nlook it up\n</think>\n\nChecking.\n' +
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
    // consecutive tool messages share one user turn
    '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\n{"rain": 0}\n</tool_response><|im_end|>\n' +
    '<|im_start|>assistant\n';
  assert.equal(text, expected);
  const ids = tok.encode(text);
  for (const id of [151657, 151658, 151665, 151666, 151667, 151668]) assert.ok(ids.includes(id), `id ${id}`);
  // without tools and without a system message, no system turn at all
  assert.equal(
    tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: false }),
    '<|im_start|>user\nhi<|im_end|>\n',
  );
});

test('qwen3_vl: the trainer builds the prompt ids its template gives; <think> in completions', async () => {
  const tok = folder('qwen3_vl');
  const image: ImageInput = { pixels: new Float32Array(0), gridThw: [1, 4, 6] };
  const builder = new PromptBuilder({ tokenizer: tok, loadImages: async () => [image], mergeSize: 2 });
  const sample = { id: 's1', imagePath: 'x.png', question: 'What colour is the square?', answers: ['red'] };
  const { prompt, text } = await builder.promptFor(sample as never);
  assert.equal(
    text,
    '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is the square?<|im_end|>\n<|im_start|>assistant\n',
  );
  const expected = [
    IM_START,
    ...tok.encode('user\n'),
    VISION_START,
    ...Array.from({ length: (4 * 6) / 4 }, () => IMAGE_PAD),
    VISION_END,
    ...tok.encode('What colour is the square?'),
    IM_END,
    ...tok.encode('\n'),
    IM_START,
    ...tok.encode('assistant\n'),
  ];
  assert.deepEqual([...prompt.ids], expected);

  // a completion that reasons first: the decoded text keeps the block, the answer is what follows it
  const completion = [...tok.encode('<think>\nthe square is red\n</think>\n\nred'), IM_END, 1, 2];
  assert.equal(completion[0], 151667);
  const done = tok.decodeCompletion(completion);
  assert.deepEqual(done, {
    text: '<think>\nthe square is red\n</think>\n\nred',
    stopped: true,
    length: completion.length - 2,
  });
  assert.equal(extractAnswer(done.text), 'red');
  // cut off while thinking: no answer yet
  assert.equal(extractAnswer(tok.decodeCompletion(tok.encode('<think>\nthe square is')).text), '');
});

test('a tokenizer of one family beside a model of another is refused, naming both and the fix', () => {
  const q2 = folder('qwen2_vl'),
    q3 = folder('qwen3_vl');
  assert.throws(() => checkTokenizerFamily(q2, 'qwen3_vl'), {
    message: new RegExp(
      `^${path.join(work, 'qwen2_vl').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/tokenizer_config\\.json: processor_class Qwen2VLProcessor is a Qwen2-VL tokenizer, but the model's config\\.json has model_type qwen3_vl \\(Qwen3-VL\\); .*vqalab model init --preset`,
    ),
  });
  assert.throws(
    () => checkTokenizerFamily(q3, 'qwen2_5_vl'),
    /Qwen3VLProcessor is a Qwen3-VL tokenizer.*qwen2_5_vl \(Qwen2\.5-VL\)/,
  );
  checkTokenizerFamily(q3, 'qwen3_vl');
  // a tokenizer naming no family (our embedded tiny one, custom folders) is not checked
  const bare = VlmTokenizer.fromObjects({ tokenizerJson: filesOf('qwen2_vl')['tokenizer.json']! });
  assert.equal(tokenizerFamily(bare), undefined);
  checkTokenizerFamily(bare, 'qwen3_vl');

  // where it is checked: the local policy and the trainer, before anything runs
  const model = (modelType: string) =>
    ({
      config: { modelType, vocabSize: 151936, vision: { spatialMergeSize: 2 } },
      sample: async () => ({}),
    }) as unknown as EngineModel;
  assert.throws(() => new LocalPolicy({ model: model('qwen3_vl'), tokenizer: q2 }), /Qwen2-VL tokenizer/);
  assert.equal(new LocalPolicy({ model: model('qwen3_vl'), tokenizer: q3 }).tokenizer, q3);
  const trainer = (modelType: string, tokenizer: VlmTokenizer) =>
    ({
      model: model(modelType),
      tokenizer,
      train: [],
      rewards: {},
      loadImages: async () => [],
    }) as unknown as TrainerOptions;
  assert.throws(() => checkTrainerOptions(trainer('qwen2_5_vl', q3)), /Qwen3-VL tokenizer/);
  checkTrainerOptions(trainer('qwen2_5_vl', folder('qwen2_5_vl')));
});

test('qwen3_vl: the processor configs as released, read by the image and video processors', () => {
  const layout = presetLayout('qwen3-vl-2b');
  assert.deepEqual(layout.preprocessor, {
    size: { longest_edge: 16777216, shortest_edge: 65536 },
    patch_size: 16,
    temporal_patch_size: 2,
    merge_size: 2,
    image_mean: [0.5, 0.5, 0.5],
    image_std: [0.5, 0.5, 0.5],
    processor_class: 'Qwen3VLProcessor',
    image_processor_type: 'Qwen2VLImageProcessorFast',
  });
  assert.deepEqual(layout.videoPreprocessor?.size, { longest_edge: 25165824, shortest_edge: 4096 });
  assert.equal(presetLayout('qwen2.5-vl-3b').videoPreprocessor, undefined);
  assert.equal(presetLayout('qwen2.5-vl-3b').preprocessor.max_pixels, 12845056);
  const dir = path.join(work, 'q3-processor');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify(layout.preprocessor));
  writeFileSync(path.join(dir, 'video_preprocessor_config.json'), JSON.stringify(layout.videoPreprocessor));
  assert.deepEqual(processorOptionsFrom(dir), {
    minPixels: 65536,
    maxPixels: 16777216,
    patchSize: 16,
    temporalPatchSize: 2,
    mergeSize: 2,
    imageMean: [0.5, 0.5, 0.5],
    imageStd: [0.5, 0.5, 0.5],
  });
  assert.deepEqual(videoProcessorOptionsFrom(dir), { minPixels: 4096, maxPixels: 25165824 });
  assert.deepEqual(videoProcessorOptionsFrom(work), {}, 'no video_preprocessor_config.json: the family defaults');
});
