/**
 * Which Qwen-VL family a tokenizer folder belongs to, and the check that it is the model's.
 *
 * The families share the BPE and the vision tokens but not the rest: Qwen2.5-VL adds `<tool_call>`
 * and the FIM tokens (151657–151664), Qwen3-VL also `<tool_response>`, `<think>`, `</think>`
 * (to 151668) and its own chat template (no default system turn). A folder that pairs one family's
 * config.json with another's tokenizer files would template prompts the model was not trained on
 * and decode its later tokens as nothing, silently; the processor_class that transformers writes
 * into tokenizer_config.json names the family, so a mismatch is refused with the fix.
 */
import type { VlmTokenizer } from './tokenizer.js';

/** config.json model_type of each processor_class a Qwen-VL tokenizer_config.json names. */
const FAMILY_OF_PROCESSOR: Readonly<Record<string, { modelType: string; name: string }>> = {
  Qwen2VLProcessor: { modelType: 'qwen2_vl', name: 'Qwen2-VL' },
  Qwen2_5_VLProcessor: { modelType: 'qwen2_5_vl', name: 'Qwen2.5-VL' },
  Qwen3VLProcessor: { modelType: 'qwen3_vl', name: 'Qwen3-VL' },
};

const NAME_OF_MODEL_TYPE: Readonly<Record<string, string>> = Object.fromEntries(
  Object.values(FAMILY_OF_PROCESSOR).map((f) => [f.modelType, f.name]),
);

/**
 * The model_type whose tokenizer this is, from tokenizer_config.json's processor_class; undefined
 * when it names none of ours (our embedded tiny tokenizer, custom folders): those are not checked.
 */
export function tokenizerFamily(tokenizer: VlmTokenizer): string | undefined {
  const cls = tokenizer.config.processor_class;
  return typeof cls === 'string' ? FAMILY_OF_PROCESSOR[cls]?.modelType : undefined;
}

/**
 * Throws when the tokenizer folder is another Qwen-VL family's than the model's (config.json
 * `model_type`); a tokenizer that names no family passes.
 */
export function checkTokenizerFamily(tokenizer: VlmTokenizer, modelType: string): void {
  const family = tokenizerFamily(tokenizer);
  if (family === undefined || family === modelType) return;
  const cls = tokenizer.config.processor_class as string;
  throw new Error(
    `${tokenizer.source}/tokenizer_config.json: processor_class ${cls} is a ${NAME_OF_MODEL_TYPE[family]} tokenizer, ` +
      `but the model's config.json has model_type ${modelType}${NAME_OF_MODEL_TYPE[modelType] ? ` (${NAME_OF_MODEL_TYPE[modelType]})` : ''}; ` +
      `its added tokens, chat template and stop ids are another family's. Use the tokenizer files of the model's own checkpoint ` +
      `(\`vqalab model init --preset\` writes each family's)`,
  );
}
