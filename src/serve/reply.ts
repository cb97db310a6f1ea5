/**
 * The non-streamed reply (`chat.completion`) and the pieces the streamed one shares with it:
 * per-token log-prob entries and usage.
 */
import type { ServerResponse } from 'node:http';
import { type LocalChoice, type LocalGeneration, type LocalPolicy, tokenBytes } from '../rollout/local.js';
import type { ServeContext } from './context.js';
import { sendJson } from './errors.js';
import type { ChatRequest } from './protocol.js';
import { parseToolCalls } from './tools.js';
import { WEIGHT_VERSION_HEADER } from './weights.js';

type Tokenizer = LocalPolicy['tokenizer'];

/** A token as text, or as `token_id:N` when the client asked for ids (text alone can be ambiguous). */
function tokenText(tokenizer: Tokenizer, id: number, asIds: boolean): string {
  return asIds ? `token_id:${id}` : tokenizer.decode([id], { skipSpecialTokens: false });
}

/** One entry of OpenAI's `logprobs.content`. */
export function tokenEntry(
  tokenizer: Tokenizer,
  id: number,
  logprob: number,
  top: { id: number; logprob: number }[],
  asIds: boolean,
) {
  return {
    token: tokenText(tokenizer, id, asIds),
    logprob,
    bytes: [...tokenBytes(tokenizer, id)],
    top_logprobs: top.map((t) => ({
      token: tokenText(tokenizer, t.id, asIds),
      logprob: t.logprob,
      bytes: [...tokenBytes(tokenizer, t.id)],
    })),
  };
}

/** The log-prob entry of the k-th token of a finished choice. */
export function logprobEntry(tokenizer: Tokenizer, choice: LocalChoice, k: number, asIds: boolean) {
  return tokenEntry(tokenizer, choice.tokenIds[k]!, choice.logprobs[k]!, choice.topLogprobs?.[k] ?? [], asIds);
}

export function usageOf(gen: LocalGeneration) {
  const completionTokens = gen.choices.reduce((a, c) => a + c.tokenIds.length, 0);
  return {
    prompt_tokens: gen.promptTokens,
    completion_tokens: completionTokens,
    total_tokens: gen.promptTokens + completionTokens,
  };
}

/** The whole completion as one JSON body (tool calls parsed out of the text when tools were offered). */
export function replyJson(
  ctx: Pick<ServeContext, 'policy' | 'modelName'>,
  res: ServerResponse,
  chat: ChatRequest,
  id: string,
  gen: LocalGeneration,
  version: number,
): void {
  const tokenizer = ctx.policy.tokenizer;
  sendJson(
    res,
    200,
    {
      id,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: ctx.modelName,
      system_fingerprint: 'vqalab',
      weight_version: version,
      choices: gen.choices.map((c, index) => {
        const calls = chat.tools ? parseToolCalls(c.text) : undefined;
        const tool = calls && calls.toolCalls.length > 0;
        return {
          index,
          message: {
            role: 'assistant',
            content: tool ? calls!.content : c.text,
            refusal: null,
            ...(tool ? { tool_calls: calls!.toolCalls } : {}),
          },
          logprobs: chat.logprobs
            ? { content: c.tokenIds.map((_t, k) => logprobEntry(tokenizer, c, k, chat.tokensAsIds)), refusal: null }
            : null,
          finish_reason: tool && c.finishReason === 'stop' ? 'tool_calls' : c.finishReason,
          ...(chat.returnTokenIds ? { token_ids: c.tokenIds } : {}),
        };
      }),
      usage: usageOf(gen),
      ...(chat.returnTokenIds ? { prompt_token_ids: null } : {}),
    },
    { [WEIGHT_VERSION_HEADER]: String(version) },
  );
}
