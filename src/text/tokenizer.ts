/**
 * A Qwen2-VL tokenizer folder, loaded the way transformers loads one: tokenizer.json through
 * @huggingface/tokenizers, the chat template (tokenizer_config.json's `chat_template`, or
 * chat_template.jinja / chat_template.json beside it) through @huggingface/jinja, stop ids from
 * generation_config.json. Works the same for our embedded tiny tokenizer and a real Qwen2-VL one.
 *
 * Prompt building: chat messages (with image parts) → text by the template → ids, with each
 * image's single <|image_pad|> expanded to grid_t·grid_h·grid_w / merge² pads, as the Qwen2-VL
 * processor does, so the engine gets ids that line up with the vision tower's merged tokens.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import type { ImageInput, Prompt } from '../engine/types.js';
import { expectInteger, invalidParameterError } from '../util/validate.js';

export type ContentPart =
  | { type: 'image'; image?: unknown }
  | { type: 'video'; video?: unknown }
  | { type: 'text'; text: string };

export interface ChatMessage {
  role: string;
  content: string | ContentPart[];
}

export interface ChatTemplateOptions {
  /** End with the assistant header so the model answers next (default true). */
  addGenerationPrompt?: boolean;
  /** Qwen2-VL's "Picture 1: " labels before images (default false). */
  addVisionId?: boolean;
  /** Extra variables for custom templates. */
  variables?: Record<string, unknown>;
}

export interface PromptOptions extends ChatTemplateOptions {
  /** The vision tower's spatial merge size (config.json vision_config.spatial_merge_size; default 2). */
  mergeSize?: number;
}

/** The special tokens a Qwen2-VL prompt needs, by id. */
export interface SpecialIds {
  endOfText: number;
  imStart: number;
  imEnd: number;
  visionStart: number;
  visionEnd: number;
  imagePad: number;
  videoPad: number;
}

const IMAGE_PAD = '<|image_pad|>',
  VIDEO_PAD = '<|video_pad|>',
  VISION_START = '<|vision_start|>',
  VISION_END = '<|vision_end|>';
/** The placeholders the processor replaces, in the text's order (transformers' regex over both tokens). */
const PAD_RE = /<\|image_pad\|>|<\|video_pad\|>/g;

/**
 * Python's `f"{x:.1f}"` (Qwen3VLProcessor's timestamp text): the exact binary value rounded half to
 * even; JavaScript's toFixed rounds exact ties up, and ties at one decimal are m + 0.25 and m + 0.75.
 */
function formatTenths(x: number): string {
  if (Number.isInteger(x * 4) && !Number.isInteger(x * 2)) {
    const y = x * 10,
      r = Math.round(y);
    return ((r % 2 !== 0 && Math.abs(y % 1) === 0.5 ? r - 1 : r) / 10).toFixed(1);
  }
  return x.toFixed(1);
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${file}: cannot read JSON (${(err as Error).message})`);
  }
}

function pickTemplate(value: unknown, file: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    // Some folders list named templates: [{name: "default", template: "..."}, ...].
    const named = value as { name?: string; template?: string }[];
    const t = named.find((e) => e.name === 'default') ?? named[0];
    if (t && typeof t.template === 'string') return t.template;
  }
  throw new Error(`${file}: chat_template must be a string or a list of {name, template}`);
}

export class VlmTokenizer {
  readonly special: SpecialIds;
  /** Ids that end a completion: generation_config.json's eos_token_id, else <|im_end|> and <|endoftext|>. */
  readonly stopTokenIds: number[];
  /** Number of ids (BPE vocabulary plus added tokens); the model's vocab_size must be at least this. */
  readonly vocabSize: number;
  private readonly template: Template | undefined;

  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly config: Record<string, unknown>,
    readonly chatTemplate: string | undefined,
    generationConfig: Record<string, unknown> | undefined,
    readonly source: string,
  ) {
    const id = (s: string) => {
      const v = tokenizer.token_to_id(s);
      if (v === undefined) throw new Error(`${source}: the tokenizer has no ${s} token; a Qwen2-VL tokenizer needs it`);
      return v;
    };
    this.special = {
      endOfText: id('<|endoftext|>'),
      imStart: id('<|im_start|>'),
      imEnd: id('<|im_end|>'),
      visionStart: id(VISION_START),
      visionEnd: id(VISION_END),
      imagePad: id(IMAGE_PAD),
      videoPad: id(VIDEO_PAD),
    };
    const eos = generationConfig?.eos_token_id;
    const stops = Array.isArray(eos)
      ? eos
      : typeof eos === 'number'
        ? [eos]
        : [this.special.imEnd, this.special.endOfText];
    this.stopTokenIds = [...new Set(stops.map((v) => Number(v)))];
    let max = -1;
    for (const v of tokenizer.get_vocab(true).values()) if (v > max) max = v;
    this.vocabSize = max + 1;
    this.template = chatTemplate === undefined ? undefined : new Template(chatTemplate);
  }

  /** Build from the parsed files (for tests and generated assets). */
  static fromObjects(files: {
    tokenizerJson: Record<string, unknown>;
    tokenizerConfig?: Record<string, unknown>;
    chatTemplate?: string;
    generationConfig?: Record<string, unknown>;
    source?: string;
  }): VlmTokenizer {
    const config = files.tokenizerConfig ?? {};
    const source = files.source ?? '(in memory)';
    const template = files.chatTemplate ?? pickTemplate(config.chat_template, `${source}/tokenizer_config.json`);
    return new VlmTokenizer(
      new Tokenizer(files.tokenizerJson, config),
      config,
      template,
      files.generationConfig,
      source,
    );
  }

  /** Load a Hugging Face tokenizer folder (ours or a real Qwen2-VL checkpoint's). */
  static load(dir: string): VlmTokenizer {
    const tj = path.join(dir, 'tokenizer.json');
    if (!existsSync(tj)) throw new Error(`${dir}: no tokenizer.json (expected a Hugging Face tokenizer folder)`);
    const configFile = path.join(dir, 'tokenizer_config.json');
    const config = existsSync(configFile) ? readJson(configFile) : {};
    let chatTemplate = pickTemplate(config.chat_template, configFile);
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    const jsonFile = path.join(dir, 'chat_template.json');
    if (chatTemplate === undefined && existsSync(jinjaFile)) chatTemplate = readFileSync(jinjaFile, 'utf8');
    if (chatTemplate === undefined && existsSync(jsonFile))
      chatTemplate = pickTemplate(readJson(jsonFile).chat_template, jsonFile);
    const genFile = path.join(dir, 'generation_config.json');
    return VlmTokenizer.fromObjects({
      tokenizerJson: readJson(tj),
      tokenizerConfig: config,
      chatTemplate,
      generationConfig: existsSync(genFile) ? readJson(genFile) : undefined,
      source: dir,
    });
  }

  /** Token ids of `text`; special-token strings in it become their ids (as transformers does). */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? true });
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** The conversation as text, by the folder's chat template. */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.template)
      throw new Error(
        `${this.source}: no chat template (tokenizer_config.json chat_template, chat_template.jinja or chat_template.json)`,
      );
    if (!Array.isArray(messages) || messages.length === 0)
      throw invalidParameterError('messages', 'a non-empty array of chat messages', messages);
    return this.template.render({
      ...options.variables,
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      add_vision_id: options.addVisionId ?? false,
      bos_token: '',
      eos_token: this.config.eos_token ?? '<|im_end|>',
    });
  }

  /**
   * Prompt ids for the engine: the rendered conversation, each <|image_pad|> expanded to the
   * number of merged vision tokens of its image and each <|video_pad|> to its video's (inputs in
   * prompt order, videos marked `video: true`). A video with `timestamps` (Qwen3-VL) has its
   * <|video_pad|> replaced, as Qwen3VLProcessor (transformers 5) does, by one
   * `<t.t seconds><|vision_start|>` + the temporal patch's pads + `<|vision_end|>` per temporal patch;
   * the template's own <|vision_start|> and <|vision_end|> around it stay. The replacement is made in
   * the text before it is tokenized, as there, so the timestamp text tokenizes with its neighbours.
   */
  buildPrompt(messages: readonly ChatMessage[], images: readonly ImageInput[], options: PromptOptions = {}): Prompt {
    const merge = expectInteger('mergeSize', options.mergeSize ?? 2, 1);
    const text = this.applyChatTemplate(messages, options);
    const { imagePad, videoPad } = this.special;
    const pads = [...text.matchAll(PAD_RE)];
    const nPads = pads.filter((m) => m[0] === IMAGE_PAD).length,
      vpads = pads.length - nPads;
    const nImages = images.filter((im) => !im.video).length,
      nVideos = images.length - nImages;
    if (nPads !== nImages) {
      throw new Error(
        `the conversation has ${nPads} image${nPads === 1 ? '' : 's'} but ${nImages} image${nImages === 1 ? ' was' : 's were'} given`,
      );
    }
    if (vpads !== nVideos) {
      throw new Error(
        `the conversation has ${vpads} video${vpads === 1 ? '' : 's'} but ${nVideos} video${nVideos === 1 ? ' was' : 's were'} given`,
      );
    }
    images.forEach((img, i) => {
      const [t, h, w] = img.gridThw;
      if (h % merge !== 0 || w % merge !== 0) {
        throw new Error(
          `${img.video ? 'video' : 'image'} ${i}: grid ${t}x${h}x${w} is not divisible by the merge size ${merge} (height and width in patches must be multiples of it)`,
        );
      }
      if (img.timestamps && img.timestamps.length !== t)
        throw new Error(`video ${i}: ${img.timestamps.length} timestamps for ${t} temporal patches`);
    });
    // the text with each input's placeholder written out (one pad per run), and each run's length
    const runs: number[] = [];
    let expanded = '',
      last = 0;
    pads.forEach((m, next) => {
      const img = images[next]!,
        isVideo = m[0] === VIDEO_PAD;
      if (Boolean(img.video) !== isVideo) {
        throw new Error(
          `input ${next} is ${img.video ? 'a video' : 'an image'} but the conversation has ${isVideo ? 'a video' : 'an image'} there (give images and videos in the conversation's order)`,
        );
      }
      const [gt, gh, gw] = img.gridThw;
      const frame = (gh * gw) / (merge * merge);
      expanded += text.slice(last, m.index);
      last = m.index! + m[0].length;
      if (!img.timestamps) {
        expanded += m[0];
        runs.push(gt * frame);
        return;
      }
      for (const ts of img.timestamps) {
        expanded += `<${formatTenths(ts)} seconds>${VISION_START}${VIDEO_PAD}${VISION_END}`;
        runs.push(frame);
      }
    });
    expanded += text.slice(last);
    const out: number[] = [];
    let run = 0;
    for (const t of this.encode(expanded)) {
      if (t !== imagePad && t !== videoPad) {
        out.push(t);
        continue;
      }
      const n = runs[run++];
      if (n === undefined) break;
      for (let j = 0; j < n; j++) out.push(t);
    }
    if (run !== runs.length)
      throw new Error(
        `${this.source}: the tokenizer made ${run} image/video pad tokens of ${runs.length} placeholders (${IMAGE_PAD} and ${VIDEO_PAD} must be added tokens)`,
      );
    return { ids: Int32Array.from(out), images: [...images] };
  }

  /** The usual VQA turn: one user message with the image(s) or video(s) first, then the question. */
  static vqaMessages(
    question: string,
    images: number | readonly ('image' | 'video')[] = 1,
    system?: string,
  ): ChatMessage[] {
    const content: ContentPart[] = [];
    const kinds = typeof images === 'number' ? Array.from({ length: images }, () => 'image' as const) : images;
    for (const k of kinds) content.push(k === 'video' ? { type: 'video' } : { type: 'image' });
    content.push({ type: 'text', text: question });
    const msgs: ChatMessage[] = [];
    if (system !== undefined) msgs.push({ role: 'system', content: system });
    msgs.push({ role: 'user', content });
    return msgs;
  }

  /** Ids of an assistant answer as the model should produce it: the text, then <|im_end|>. */
  answerIds(text: string): Int32Array {
    return Int32Array.from([...this.encode(text), this.special.imEnd]);
  }

  /**
   * A sampled completion's text: ids up to (not including) the first stop id, decoded without
   * special tokens; `stopped` tells whether a stop id ended it.
   */
  decodeCompletion(ids: ArrayLike<number>): { text: string; stopped: boolean; length: number } {
    const arr = Array.from(ids);
    const stop = arr.findIndex((t) => this.stopTokenIds.includes(t));
    const body = stop < 0 ? arr : arr.slice(0, stop);
    return { text: this.decode(body).trim(), stopped: stop >= 0, length: stop < 0 ? arr.length : stop + 1 };
  }
}
