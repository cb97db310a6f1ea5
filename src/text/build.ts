/**
 * Builds a Qwen2-VL-shaped tokenizer folder (tokenizer.json, tokenizer_config.json,
 * generation_config.json) for a closed vocabulary: byte-level BPE, so any text still encodes, with
 * merges learned from a word list (each word alone and after a space, as it appears mid-sentence)
 * plus a few texts (the chat template's fixed words). Words of the corpus become single tokens.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { BYTE_ORDER, BYTE_TO_CHAR } from './byte-level.js';
import { trainBpe } from './bpe-train.js';
import {
  DEFAULT_SYSTEM_PROMPT,
  QWEN2_SPLIT_PATTERN,
  QWEN2VL_SPECIAL_TOKENS,
  QWEN2VL_STYLE_CHAT_TEMPLATE,
} from './qwen2vl.js';
import { invalidParameterError } from '../util/validate.js';

export interface TokenizerBuildOptions {
  /** Words that should each become one token (alone and with a leading space). */
  words: readonly string[];
  /** Whole texts added to the corpus as they are (pre-tokenized like any input). */
  texts?: readonly string[];
  /** Cap on the number of merges (default: until every corpus piece is one token). */
  maxMerges?: number;
  /** Longest sequence the model is configured for (tokenizer_config's model_max_length). */
  modelMaxLength?: number;
}

export interface TokenizerFiles {
  'tokenizer.json': Record<string, unknown>;
  'tokenizer_config.json': Record<string, unknown>;
  'generation_config.json': Record<string, unknown>;
}

/** Fixed text every prompt contains (the default system message and the role names). */
export const CHAT_TEMPLATE_TEXTS: readonly string[] = [
  `system\n${DEFAULT_SYSTEM_PROMPT}`,
  'user\n',
  'assistant\n',
  'Picture 1: ',
  'Video 1: ',
];

function preTokenizerJson(): Record<string, unknown> {
  return {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: QWEN2_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    ],
  };
}

function tokenizerJson(
  vocab: Record<string, number>,
  merges: string[],
  firstSpecialId: number,
): Record<string, unknown> {
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: QWEN2VL_SPECIAL_TOKENS.map((content, i) => ({
      id: firstSpecialId + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'NFC' },
    pre_tokenizer: preTokenizerJson(),
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** The Qwen2 pre-tokenizer alone (a byte-level BPE with no merges), to split corpus text exactly as encoding will. */
function splitter(): (text: string) => string[] {
  const vocab: Record<string, number> = {};
  BYTE_ORDER.forEach((b, i) => {
    vocab[BYTE_TO_CHAR[b]!] = i;
  });
  const t = new Tokenizer(tokenizerJson(vocab, [], 256), {});
  const pre = t.pre_tokenizer!;
  return (text) => pre.pre_tokenize_text(text.normalize('NFC'));
}

export function buildTokenizerFiles(options: TokenizerBuildOptions): TokenizerFiles {
  if (!Array.isArray(options.words) || options.words.some((w) => typeof w !== 'string' || w.trim() === '')) {
    throw invalidParameterError('words', 'an array of non-empty strings', options.words);
  }
  const split = splitter();
  const pieces = new Map<string, number>();
  const addText = (text: string) => {
    for (const p of split(text)) pieces.set(p, (pieces.get(p) ?? 0) + 1);
  };
  for (const w of options.words) {
    addText(w);
    addText(` ${w}`);
  }
  for (const t of [...CHAT_TEMPLATE_TEXTS, ...(options.texts ?? [])]) {
    // Special tokens are matched before pre-tokenization, so they never take part in merges.
    for (const chunk of t.split(/<\|[a-z_]+\|>/)) if (chunk) addText(chunk);
  }
  const { merges, tokens } = trainBpe(pieces, { maxMerges: options.maxMerges });
  const vocab: Record<string, number> = {};
  BYTE_ORDER.forEach((b, i) => {
    vocab[BYTE_TO_CHAR[b]!] = i;
  });
  let next = 256;
  for (const t of tokens) vocab[t] = next++;
  const firstSpecialId = next;
  const specialId = (s: (typeof QWEN2VL_SPECIAL_TOKENS)[number]) => firstSpecialId + QWEN2VL_SPECIAL_TOKENS.indexOf(s);

  const addedTokensDecoder: Record<string, unknown> = {};
  QWEN2VL_SPECIAL_TOKENS.forEach((content, i) => {
    addedTokensDecoder[String(firstSpecialId + i)] = {
      content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    };
  });
  return {
    'tokenizer.json': tokenizerJson(
      vocab,
      merges.map(([a, b]) => `${a} ${b}`),
      firstSpecialId,
    ),
    'tokenizer_config.json': {
      add_prefix_space: false,
      added_tokens_decoder: addedTokensDecoder,
      additional_special_tokens: QWEN2VL_SPECIAL_TOKENS.filter((s) => s !== '<|endoftext|>'),
      bos_token: null,
      chat_template: QWEN2VL_STYLE_CHAT_TEMPLATE,
      clean_up_tokenization_spaces: false,
      eos_token: '<|im_end|>',
      errors: 'replace',
      model_max_length: options.modelMaxLength ?? 1024,
      pad_token: '<|endoftext|>',
      padding_side: 'left',
      split_special_tokens: false,
      tokenizer_class: 'Qwen2Tokenizer',
      unk_token: null,
    },
    'generation_config.json': {
      bos_token_id: specialId('<|endoftext|>'),
      pad_token_id: specialId('<|endoftext|>'),
      eos_token_id: [specialId('<|im_end|>'), specialId('<|endoftext|>')],
      do_sample: false,
    },
  };
}
