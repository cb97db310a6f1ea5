/**
 * Recording of an attempt's chat calls, token-exactly as the engine saw and produced them, and the
 * reverse: a conversation that sends back an answer the attempt got continues from the ids sampled
 * for it, so the model sees its own tokens and the attempt's calls form one sequence.
 */
import type { ImageInput, Prompt } from '../engine/types.js';
import type { LocalGeneration } from '../rollout/local.js';
import type { ChatRequest } from '../serve/protocol.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import type { AttemptRecord } from './records.js';

/**
 * The most recent call whose conversation this one continues with that call's first answer sent
 * back verbatim: its template ids, then the answer's text re-encoded, start the new template
 * ids. Those are replaced by the call's prompt as sampled and the answer's sampled ids (without
 * a final stop token: the template's own end-of-turn follows).
 */
export function sampledIdsBack(tok: VlmTokenizer | undefined, rec: AttemptRecord, prompt: Prompt): Prompt {
  if (!tok) return prompt;
  const q = prompt.ids;
  for (let k = rec.calls.length - 1; k >= 0; k--) {
    const call = rec.calls[k]!,
      choice = call.choices[0];
    if (!choice) continue;
    const t = call.templateIds;
    if (q.length <= t.length) continue;
    let same = true;
    for (let i = 0; i < t.length && same; i++) same = q[i] === t[i];
    if (!same) continue;
    const body =
      choice.finishReason === 'stop' &&
      choice.tokenIds.length > 0 &&
      tok.stopTokenIds.includes(choice.tokenIds[choice.tokenIds.length - 1]!)
        ? choice.tokenIds.subarray(0, choice.tokenIds.length - 1)
        : choice.tokenIds;
    // Only an answer whose ids decode to exactly the text sent: no stop string cut from it, no
    // special token in it (an image pad the model sampled would become an image slot).
    if (tok.decode(Array.from(body), { skipSpecialTokens: false }) !== choice.text) continue;
    const enc = tok.encode(choice.text);
    if (q.length < t.length + enc.length) continue;
    for (let i = 0; i < enc.length && same; i++) same = q[t.length + i] === enc[i];
    if (!same) continue;
    const ids = new Int32Array(call.prompt.ids.length + body.length + q.length - t.length - enc.length);
    ids.set(call.prompt.ids, 0);
    ids.set(body, call.prompt.ids.length);
    ids.set(q.subarray(t.length + enc.length), call.prompt.ids.length + body.length);
    return { ids, images: prompt.images };
  }
  return prompt;
}

/** Keep a finished call token-exactly on its attempt (copies: the engine may reuse its buffers). */
export function recordCall(
  ctx: { log: ((line: string) => void) | undefined; countCall(): void },
  rec: AttemptRecord,
  id: string,
  chat: ChatRequest,
  prompt: Prompt,
  templateIds: Int32Array,
  gen: LocalGeneration,
  weightVersion: number,
): void {
  if (rec.status !== 'running') {
    ctx.log?.(`gateway: a call of attempt ${rec.attemptId} completed after it finished; not recorded`);
    return;
  }
  const images: ImageInput[] = prompt.images.slice();
  rec.calls.push({
    index: rec.calls.length,
    id,
    messages: chat.messages,
    prompt: { ids: Int32Array.from(prompt.ids), images },
    templateIds: Int32Array.from(templateIds),
    choices: gen.choices.map((c) => ({
      text: c.text,
      tokenIds: Int32Array.from(c.tokenIds),
      logprobs: Float32Array.from(c.logprobs),
      finishReason: c.finishReason,
    })),
    sampling: {
      n: chat.n,
      temperature: chat.temperature,
      topP: chat.topP,
      topK: chat.topK,
      maxTokens: chat.maxTokens,
      seed: chat.seed,
      stream: chat.stream,
    },
    weightVersion,
    at: Date.now(),
  });
  ctx.countCall();
}
