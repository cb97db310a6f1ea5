import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BYTE_TO_CHAR, fromByteLevel, toByteLevel } from '../../src/text/byte-level.js';
import { trainBpe } from '../../src/text/bpe-train.js';
import { buildTokenizerFiles } from '../../src/text/build.js';
import { VlmTokenizer } from '../../src/text/tokenizer.js';
import { QWEN2VL_SPECIAL_TOKENS } from '../../src/text/qwen2vl.js';

const WORDS = [
  'What',
  'color',
  'is',
  'the',
  'circle',
  'red',
  'dark',
  'How',
  'many',
  'circles',
  'are',
  'there',
  'two',
  'yes',
  'no',
  '?',
];

function tiny(): VlmTokenizer {
  const f = buildTokenizerFiles({ words: WORDS });
  return VlmTokenizer.fromObjects({
    tokenizerJson: f['tokenizer.json'],
    tokenizerConfig: f['tokenizer_config.json'],
    generationConfig: f['generation_config.json'],
  });
}

test('byte-level table: 256 distinct printable characters; space is Ġ, newline Ċ; round trip', () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  assert.equal(BYTE_TO_CHAR[32], 'Ġ');
  assert.equal(BYTE_TO_CHAR[10], 'Ċ');
  assert.equal(BYTE_TO_CHAR[65], 'A');
  assert.equal(toByteLevel(' é'), 'ĠÃ©');
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  assert.equal(toByteLevel('héllo wörld ✓'), toByteLevel('héllo wörld ✓'));
  assert.equal(fromByteLevel(toByteLevel('héllo wörld ✓ 🙂')), 'héllo wörld ✓ 🙂');
  assert.equal([...all].map((b) => BYTE_TO_CHAR[b]).join('').length, 256);
});

test('trainBpe merges the most frequent pair first, ties to the smallest pair', () => {
  // "aab"×2, "ab"×3: pairs aa:2, ab:5 → (a,b); then "a ab"×2 → (a,ab).
  const r = trainBpe(
    new Map([
      ['aab', 2],
      ['ab', 3],
    ]),
  );
  assert.deepEqual(r.merges, [
    ['a', 'b'],
    ['a', 'ab'],
  ]);
  assert.deepEqual(r.tokens, ['ab', 'aab']);
  // A tie between (a,b) and (c,d): (a,b) first.
  assert.deepEqual(
    trainBpe(
      new Map([
        ['cd', 1],
        ['ab', 1],
      ]),
    ).merges,
    [
      ['a', 'b'],
      ['c', 'd'],
    ],
  );
  assert.deepEqual(trainBpe(new Map([['abcd', 1]]), { maxMerges: 1 }).merges, [['a', 'b']]);
  assert.deepEqual(
    trainBpe(
      new Map([
        ['abcd', 1],
        ['xy', 2],
      ]),
      { minFrequency: 2 },
    ).merges,
    [['x', 'y']],
  );
});

test('every corpus word is one token, alone and after a space; any text still round-trips', () => {
  const t = tiny();
  for (const w of WORDS) {
    assert.equal(t.encode(w).length, 1, `"${w}" should be one token`);
    assert.equal(t.encode(` ${w}`).length, 1, `" ${w}" should be one token`);
  }
  for (const s of ['What color is the circle?', 'Ünïcödé 🙂 and\ttabs\nnewlines', '12345 + x = ?']) {
    assert.equal(t.decode(t.encode(s)), s);
  }
  assert.deepEqual(
    t.encode('What color is the circle?').map((i) => t.idToToken(i)),
    ['What', 'Ġcolor', 'Ġis', 'Ġthe', 'Ġcircle', '?'],
  );
});

test('special tokens come after the BPE vocabulary in Qwen2-VL order; stop ids are <|im_end|> and <|endoftext|>', () => {
  const t = tiny();
  const first = t.special.endOfText;
  QWEN2VL_SPECIAL_TOKENS.forEach((s, i) => assert.equal(t.tokenToId(s), first + i));
  assert.equal(t.vocabSize, first + QWEN2VL_SPECIAL_TOKENS.length);
  assert.deepEqual(t.stopTokenIds, [t.special.imEnd, t.special.endOfText]);
  assert.deepEqual(t.encode('<|im_start|>user'), [t.special.imStart, t.encode('user')[0]]);
  assert.equal(t.decode([t.special.imStart, ...t.encode('hi')]), 'hi');
  assert.equal(t.decode([t.special.imStart, ...t.encode('hi')], { skipSpecialTokens: false }), '<|im_start|>hi');
});

test('chat template renders the Qwen2-VL format', () => {
  const t = tiny();
  assert.equal(
    t.applyChatTemplate(VlmTokenizer.vqaMessages('What color is the circle?')),
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
      '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What color is the circle?<|im_end|>\n' +
      '<|im_start|>assistant\n',
  );
  assert.equal(
    t.applyChatTemplate(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'image' }, { type: 'image' }, { type: 'text', text: 'Same?' }] },
        { role: 'assistant', content: 'yes' },
      ],
      { addGenerationPrompt: false, addVisionId: true },
    ),
    '<|im_start|>system\nBe brief.<|im_end|>\n' +
      '<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Picture 2: <|vision_start|><|image_pad|><|vision_end|>Same?<|im_end|>\n' +
      '<|im_start|>assistant\nyes<|im_end|>\n',
  );
  assert.equal(
    t.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: false }),
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n',
  );
});

test('buildPrompt expands each <|image_pad|> to t·h·w/merge² pads, in image order', () => {
  const t = tiny();
  const img = (h: number, w: number) => ({
    pixels: new Float32Array(h * w * 1176),
    gridThw: [1, h, w] as [number, number, number],
  });
  const msgs = [
    {
      role: 'user',
      content: [{ type: 'image' as const }, { type: 'text' as const, text: 'and' }, { type: 'image' as const }],
    },
  ];
  const p = t.buildPrompt(msgs, [img(8, 8), img(4, 6)]);
  const ids = Array.from(p.ids);
  const pads = ids.filter((x) => x === t.special.imagePad).length;
  assert.equal(pads, 16 + 6);
  const firstStart = ids.indexOf(t.special.visionStart);
  assert.equal(ids[firstStart + 17], t.special.visionEnd);
  assert.equal(p.images.length, 2);
  assert.equal(ids.length, t.encode(t.applyChatTemplate(msgs)).length - 2 + 22);
  assert.throws(() => t.buildPrompt(msgs, [img(8, 8)]), {
    message: 'the conversation has 2 images but 1 image was given',
  });
  assert.throws(() => t.buildPrompt(msgs.slice(0, 1), [img(8, 8), img(3, 4)]), {
    message:
      'image 1: grid 1x3x4 is not divisible by the merge size 2 (height and width in patches must be multiples of it)',
  });
});

test('decodeCompletion stops at the first stop id', () => {
  const t = tiny();
  assert.deepEqual(t.decodeCompletion([...t.encode('dark red'), t.special.imEnd, ...t.encode('no')]), {
    text: 'dark red',
    stopped: true,
    length: 3,
  });
  assert.deepEqual(t.decodeCompletion(t.encode('red red')), { text: 'red red', stopped: false, length: 2 });
  assert.deepEqual(t.decodeCompletion([t.special.imEnd]), { text: '', stopped: true, length: 1 });
  assert.equal(t.decode([]), '');
  assert.deepEqual(Array.from(t.answerIds('two')), [t.encode('two')[0], t.special.imEnd]);
});

test('a folder loads with the template in tokenizer_config.json, chat_template.json or chat_template.jinja', () => {
  const f = buildTokenizerFiles({ words: WORDS });
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-tok-'));
  try {
    const { chat_template: template, ...configNoTemplate } = f['tokenizer_config.json'];
    writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(f['tokenizer.json']));
    const expected = tiny().applyChatTemplate(VlmTokenizer.vqaMessages('What?'));
    writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(f['tokenizer_config.json']));
    assert.equal(VlmTokenizer.load(dir).applyChatTemplate(VlmTokenizer.vqaMessages('What?')), expected);
    // Released Qwen2-VL-2B-Instruct keeps the template in chat_template.json (processor) too.
    writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(configNoTemplate));
    writeFileSync(path.join(dir, 'chat_template.json'), JSON.stringify({ chat_template: template }));
    assert.equal(VlmTokenizer.load(dir).applyChatTemplate(VlmTokenizer.vqaMessages('What?')), expected);
    rmSync(path.join(dir, 'chat_template.json'));
    writeFileSync(path.join(dir, 'chat_template.jinja'), String(template));
    const t = VlmTokenizer.load(dir);
    assert.equal(t.applyChatTemplate(VlmTokenizer.vqaMessages('What?')), expected);
    // No generation_config.json: stop ids fall back to <|im_end|>, <|endoftext|>.
    assert.deepEqual(t.stopTokenIds, [t.special.imEnd, t.special.endOfText]);
    rmSync(path.join(dir, 'chat_template.jinja'));
    assert.throws(
      () => VlmTokenizer.load(dir).applyChatTemplate(VlmTokenizer.vqaMessages('What?')),
      /no chat template/,
    );
    assert.throws(() => VlmTokenizer.load(path.join(dir, 'nope')), /no tokenizer.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a real Qwen2-VL tokenizer folder loads (set VQALAB_QWEN2VL_TOKENIZER to its path)', {
  skip: !process.env.VQALAB_QWEN2VL_TOKENIZER,
}, () => {
  const t = VlmTokenizer.load(process.env.VQALAB_QWEN2VL_TOKENIZER!);
  assert.equal(t.special.imagePad, 151655);
  assert.equal(t.special.visionStart, 151652);
  const p = t.buildPrompt(VlmTokenizer.vqaMessages('What color is the circle?'), [
    { pixels: new Float32Array(64 * 1176), gridThw: [1, 8, 8] },
  ]);
  assert.equal(Array.from(p.ids).filter((x) => x === 151655).length, 16);
  assert.equal(t.decode(t.encode('What color is the circle?')), 'What color is the circle?');
});
