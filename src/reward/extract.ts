/** Finding the answer inside a completion (models trained with a format reward wrap it in tags). */

const ANSWER_TAG = /<answer>([\s\S]*?)<\/answer>/gi;

/**
 * The answer a completion gives: the text of its last `<answer>…</answer>` tag when it has one
 * (trimmed), else the whole completion. The built-in answer rewards use this unless given their
 * own `extract`.
 *
 * @example
 * extractAnswer('<think>two cats</think><answer>2</answer>') // '2'
 * extractAnswer('2') // '2'
 */
export function extractAnswer(completion: string): string {
  let last: string | undefined;
  for (const m of completion.matchAll(ANSWER_TAG)) last = m[1];
  return last === undefined ? completion : last.trim();
}

/** How an answer reward finds the answer in a completion. */
export type AnswerExtractor = (completion: string) => string;
