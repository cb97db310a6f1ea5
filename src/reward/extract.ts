/** Finding the answer inside a completion (models trained with a format reward wrap it in tags). */

const ANSWER_TAG = /<answer>([\s\S]*?)<\/answer>/gi;
/** A reasoning block (Qwen3's `<think>` tokens, R1-style prompts); an unclosed one runs to the end. */
const THINK_BLOCK = /<think>[\s\S]*?(?:<\/think>|$)/gi;

/**
 * The answer a completion gives: the text of its last `<answer>…</answer>` tag when it has one
 * (trimmed), else the whole completion. Reasoning in `<think>…</think>` blocks is not the answer:
 * it is removed first (the rest trimmed), and a completion cut off inside `<think>` has answered
 * nothing (''). The built-in answer rewards use this unless given their own `extract`.
 *
 * @example
 * extractAnswer('<think>two cats</think><answer>2</answer>') // '2'
 * extractAnswer('<think>\nred, not blue\n</think>\n\nred') // 'red'
 * extractAnswer('2') // '2'
 */
export function extractAnswer(completion: string): string {
  const text = /<think>/i.test(completion) ? completion.replace(THINK_BLOCK, '').trim() : completion;
  let last: string | undefined;
  for (const m of text.matchAll(ANSWER_TAG)) last = m[1];
  return last === undefined ? text : last.trim();
}

/** How an answer reward finds the answer in a completion. */
export type AnswerExtractor = (completion: string) => string;
