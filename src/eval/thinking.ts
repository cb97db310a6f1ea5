/**
 * The answer of a thinking model's completion, for accuracy: its reasoning is not its answer.
 * Qwen3-style models write `<think>…</think>` (the tags decode as text) and then answer.
 */

const THINK_OPEN = /<think>/i;
const THINK_CLOSE = /<\/think>/gi;

/**
 * The text after the last `</think>` (trimmed); '' when a `<think>` was never closed (the token
 * limit cut the completion while it was still thinking: it answered nothing); the completion as it
 * is when it has neither tag. A `</think>` without its `<think>` counts as well: Qwen3's thinking
 * templates put the opening tag in the prompt.
 *
 * @example
 * answerAfterThinking('<think>\nblue? no, red\n</think>\n\nred') // 'red'
 * answerAfterThinking('<think>\nblue? no') // ''
 * answerAfterThinking('red') // 'red'
 */
export function answerAfterThinking(completion: string): string {
  let end = -1;
  for (const m of completion.matchAll(THINK_CLOSE)) end = m.index! + m[0].length;
  if (end >= 0) return completion.slice(end).trim();
  return THINK_OPEN.test(completion) ? '' : completion;
}
