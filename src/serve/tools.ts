/**
 * Native tool calling on `vqalab serve` (and so on the gateway's per-attempt URLs): OpenAI's
 * `tools`, assistant `tool_calls` and `role: "tool"` messages, in the Qwen chat template's tool
 * format (Qwen2.5's template, the one Qwen's VL models use for tools):
 *
 *   system      the system text (or "You are a helpful assistant."), then "# Tools" and each tool
 *               definition as JSON inside <tools></tools>, and how to call one
 *   assistant   its text, then each call as <tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>
 *   tool        consecutive results in one user turn, each <tool_response>\n…\n</tool_response>
 *
 * The request's messages are rewritten into plain system/user/assistant messages holding exactly
 * the text that template renders (its JSON through @huggingface/jinja's `tojson`, Python's
 * separators, as transformers renders it), so the model's own chat template — images included —
 * produces the same prompt as Qwen's tool template would. A completion's <tool_call> blocks come
 * back as `tool_calls` (finish_reason "tool_calls"); a block that is not a JSON object with a
 * string `name` stays in the text.
 */
import { randomBytes } from 'node:crypto';
import { Template } from '@huggingface/jinja';
import type { ChatMessage, ContentPart } from '../text/tokenizer.js';
import { badRequest } from './errors.js';

export interface ToolDef {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export const DEFAULT_SYSTEM = 'You are a helpful assistant.';
/** Most tool definitions per request. */
export const MAX_TOOLS = 128;

const TOOLS_SYSTEM = new Template(
  '{{- system }}{{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}' +
    '{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}' +
    '{{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>" }}',
);
const TOOL_CALL = new Template(
  '{{- "<tool_call>\\n{\\"name\\": \\"" }}{{- name }}{{- "\\", \\"arguments\\": " }}{{- arguments | tojson }}{{- "}\\n</tool_call>" }}',
);

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** Checks `tools` (OpenAI's shape); the definitions as given. */
export function parseTools(v: unknown): ToolDef[] {
  if (!Array.isArray(v))
    throw badRequest(
      `tools must be an array of {type: "function", function: {name, description?, parameters?}}; got ${typeName(v)}`,
      'tools',
      'invalid_type',
    );
  if (v.length > MAX_TOOLS)
    throw badRequest(`at most ${MAX_TOOLS} tools per request; got ${v.length}`, 'tools', 'invalid_value');
  const seen = new Set<string>();
  return v.map((t: unknown, i) => {
    const at = `tools[${i}]`;
    if (typeof t !== 'object' || t === null || (t as { type?: unknown }).type !== 'function')
      throw badRequest(`${at} must be {type: "function", function: {...}}`, at, 'invalid_value');
    const f = (t as { function?: unknown }).function;
    if (typeof f !== 'object' || f === null || Array.isArray(f))
      throw badRequest(
        `${at}.function must be an object {name, description?, parameters?}`,
        `${at}.function`,
        'invalid_type',
      );
    const fn = f as Record<string, unknown>;
    if (typeof fn.name !== 'string' || !NAME_RE.test(fn.name))
      throw badRequest(
        `${at}.function.name must be 1-64 characters [A-Za-z0-9_.-]; got ${JSON.stringify(fn.name)}`,
        `${at}.function.name`,
        'invalid_value',
      );
    if (seen.has(fn.name))
      throw badRequest(
        `${at}.function.name ${JSON.stringify(fn.name)} is defined twice`,
        `${at}.function.name`,
        'invalid_value',
      );
    seen.add(fn.name);
    if (fn.description !== undefined && typeof fn.description !== 'string')
      throw badRequest(`${at}.function.description must be a string`, `${at}.function.description`, 'invalid_type');
    if (
      fn.parameters !== undefined &&
      (typeof fn.parameters !== 'object' || fn.parameters === null || Array.isArray(fn.parameters))
    ) {
      throw badRequest(
        `${at}.function.parameters must be a JSON Schema object`,
        `${at}.function.parameters`,
        'invalid_type',
      );
    }
    return t as ToolDef;
  });
}

/** `tool_choice`: "auto" (default) and "none" are honoured; forcing a call needs constrained decoding, which the engine has not. */
export function parseToolChoice(v: unknown): 'auto' | 'none' {
  if (v === undefined || v === null || v === 'auto') return 'auto';
  if (v === 'none') return 'none';
  throw badRequest(
    `tool_choice ${JSON.stringify(v)?.slice(0, 80)} is not supported by vqalab serve: use "auto" or "none" (forcing a call needs constrained decoding)`,
    'tool_choice',
    'unsupported_parameter',
  );
}

function textOf(content: unknown, at: string): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  if (
    Array.isArray(content) &&
    content.every(
      (p) =>
        typeof p === 'object' &&
        p !== null &&
        (p as { type?: unknown }).type === 'text' &&
        typeof (p as { text?: unknown }).text === 'string',
    )
  ) {
    return content.map((p) => (p as { text: string }).text).join('');
  }
  throw badRequest(`${at} must be a string or text parts; got ${typeName(content)}`, at, 'invalid_type');
}

/** An assistant turn's tool calls as the text the model would have written. */
export function toolCallsText(calls: unknown, at: string): string {
  if (!Array.isArray(calls))
    throw badRequest(
      `${at} must be an array of {id, type: "function", function: {name, arguments}}; got ${typeName(calls)}`,
      at,
      'invalid_type',
    );
  return calls
    .map((c: unknown, j) => {
      const where = `${at}[${j}]`;
      const f = typeof c === 'object' && c !== null ? (c as { function?: unknown }).function : undefined;
      if (typeof f !== 'object' || f === null)
        throw badRequest(`${where}.function must be an object {name, arguments}`, `${where}.function`, 'invalid_type');
      const { name, arguments: args } = f as { name?: unknown; arguments?: unknown };
      if (typeof name !== 'string' || name === '')
        throw badRequest(`${where}.function.name must be a non-empty string`, `${where}.function.name`, 'invalid_type');
      let parsed: unknown = args ?? {};
      if (typeof args === 'string') {
        try {
          parsed = args.trim() === '' ? {} : JSON.parse(args);
        } catch (err) {
          throw badRequest(
            `${where}.function.arguments must be a JSON string; ${(err as Error).message}`,
            `${where}.function.arguments`,
            'invalid_value',
          );
        }
      }
      return TOOL_CALL.render({ name, arguments: parsed });
    })
    .join('\n');
}

/**
 * The conversation with tools in Qwen's format as plain messages: the tools block in the system
 * message (when `tools` is given), assistant tool calls as text, consecutive tool results as one
 * user turn. `raw` are the request's messages (already checked as far as roles go by the caller).
 */
export function toolConversation(
  raw: readonly unknown[],
  tools: readonly ToolDef[] | undefined,
  plain: (m: unknown, i: number) => ChatMessage,
): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (let i = 0; i < raw.length; i++) {
    const m = raw[i] as Record<string, unknown>;
    if (m.role === 'tool') {
      const results: string[] = [];
      for (; i < raw.length && (raw[i] as Record<string, unknown>).role === 'tool'; i++) {
        results.push(
          `<tool_response>\n${textOf((raw[i] as Record<string, unknown>).content, `messages[${i}].content`)}\n</tool_response>`,
        );
      }
      i--;
      out.push({ role: 'user', content: results.join('\n') });
    } else if (
      m.role === 'assistant' &&
      m.tool_calls !== undefined &&
      m.tool_calls !== null &&
      !(Array.isArray(m.tool_calls) && m.tool_calls.length === 0)
    ) {
      const text = textOf(m.content, `messages[${i}].content`);
      const calls = toolCallsText(m.tool_calls, `messages[${i}].tool_calls`);
      out.push({ role: 'assistant', content: text ? `${text}\n${calls}` : calls });
    } else {
      out.push(plain(m, i));
    }
  }
  if (tools && tools.length > 0) {
    const first = out[0];
    const sys =
      first?.role === 'system'
        ? typeof first.content === 'string'
          ? first.content
          : first.content.map((p: ContentPart) => (p.type === 'text' ? p.text : '')).join('')
        : DEFAULT_SYSTEM;
    const content = TOOLS_SYSTEM.render({ system: sys, tools });
    if (first?.role === 'system') out[0] = { role: 'system', content };
    else out.unshift({ role: 'system', content });
  }
  return out;
}

/** A completion's text split into its text and its tool calls (Qwen's <tool_call> blocks holding a JSON object with a string name). */
export function parseToolCalls(text: string): { content: string | null; toolCalls: ToolCall[] } {
  const calls: ToolCall[] = [];
  const rest = text.replace(/<tool_call>\s*([\s\S]*?)\s*<\/tool_call>/g, (block, body: string) => {
    let v: unknown;
    try {
      v = JSON.parse(body);
    } catch {
      return block;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v) || typeof (v as { name?: unknown }).name !== 'string')
      return block;
    const { name, arguments: args } = v as { name: string; arguments?: unknown };
    calls.push({
      id: `call_${randomBytes(12).toString('hex')}`,
      type: 'function',
      function: { name, arguments: typeof args === 'string' ? args : JSON.stringify(args ?? {}) },
    });
    return '';
  });
  const content = calls.length > 0 ? rest.trim() : rest;
  return { content: calls.length > 0 && content === '' ? null : content, toolCalls: calls };
}
