/**
 * What makes a tokenizer folder "Qwen2-VL shaped": the special tokens (same strings, same order, so
 * the model's config can name them by id), the pre-tokenizer split pattern of Qwen2's byte-level
 * BPE, and a chat template that renders conversations exactly as Qwen2-VL's does:
 *
 *     <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
 *     <|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What color is the circle?<|im_end|>\n
 *     <|im_start|>assistant\n
 *
 * The template below is our own text; test/text/chat-template.test.ts pins its output.
 */

/** Qwen2-VL's added tokens in id order (151643.. in the released vocabulary; after the BPE vocabulary in ours). */
export const QWEN2VL_SPECIAL_TOKENS = [
  '<|endoftext|>',
  '<|im_start|>',
  '<|im_end|>',
  '<|object_ref_start|>',
  '<|object_ref_end|>',
  '<|box_start|>',
  '<|box_end|>',
  '<|quad_start|>',
  '<|quad_end|>',
  '<|vision_start|>',
  '<|vision_end|>',
  '<|vision_pad|>',
  '<|image_pad|>',
  '<|video_pad|>',
] as const;

/**
 * Qwen2's pre-tokenizer: contractions (case-insensitive), a letter run with at most one leading
 * non-letter, single digits, punctuation runs with trailing newlines, newline runs, whitespace.
 */
export const QWEN2_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const DEFAULT_SYSTEM_PROMPT = 'You are a helpful assistant.';

/**
 * Chat template (Jinja, rendered by @huggingface/jinja here and by transformers/vLLM elsewhere).
 * Variables: `messages` (role + content, content a string or a list of parts `{type: "image"}`,
 * `{type: "video"}`, `{type: "text", text}`), `add_generation_prompt`, `add_vision_id` ("Picture 1: "
 * before each image). A conversation without a system message gets Qwen2-VL's default one.
 */
export const QWEN2VL_STYLE_CHAT_TEMPLATE = [
  '{%- set seen = namespace(images=0, videos=0) -%}',
  '{%- for message in messages -%}',
  "{%- if loop.first and message['role'] != 'system' -%}",
  "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}",
  '{%- endif -%}',
  "{{- '<|im_start|>' + message['role'] + '\\n' -}}",
  "{%- if message['content'] is string -%}",
  "{{- message['content'] -}}",
  '{%- else -%}',
  "{%- for part in message['content'] -%}",
  "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}",
  '{%- set seen.images = seen.images + 1 -%}',
  "{%- if add_vision_id -%}{{- 'Picture ' + (seen.images | string) + ': ' -}}{%- endif -%}",
  "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}",
  "{%- elif part['type'] == 'video' or 'video' in part -%}",
  '{%- set seen.videos = seen.videos + 1 -%}',
  "{%- if add_vision_id -%}{{- 'Video ' + (seen.videos | string) + ': ' -}}{%- endif -%}",
  "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}",
  "{%- elif 'text' in part -%}",
  "{{- part['text'] -}}",
  '{%- endif -%}',
  '{%- endfor -%}',
  '{%- endif -%}',
  "{{- '<|im_end|>\\n' -}}",
  '{%- endfor -%}',
  "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
].join('');
