/** Finding the answer inside a completion (models trained with a format reward wrap it in tags). */
import { answerAfterThinking } from '../eval/thinking.js';

const ANSWER_TAG = /<answer>([\s\S]*?)<\/answer>/gi;

/**
 * The answer a completion gives: the text of its last `<answer>…</answer>` tag when it has one
 * (trimmed), else the whole completion. Reasoning is not the answer: only the text after the last
 * `</think>` is read ({@link answerAfterThinking}: a `</think>` whose `<think>` was in the prompt, as
 * Qwen3's thinking templates put it, counts too), and a completion cut off inside `<think>` has
 * answered nothing (''). The built-in answer rewards use this unless given their own `extract`.
 *
 * @example
 * extractAnswer('<think>two cats</think><answer>2</answer>') // '2'
 * extractAnswer('<think>\nred, not blue\n</think>\n\nred') // 'red'
 * extractAnswer('red, not blue\n</think>\n\nred') // 'red'
 * extractAnswer('2') // '2'
 */
export function extractAnswer(completion: string): string {
  const text = answerAfterThinking(completion);
  let last: string | undefined;
  for (const m of text.matchAll(ANSWER_TAG)) last = m[1];
  return last === undefined ? text : last.trim();
}

/** How an answer reward finds the answer in a completion. */
export type AnswerExtractor = (completion: string) => string;
