/**
 * A multi-turn VQA agent written to Agent Lightning's runner contract, with the openai package:
 * look at the image and answer, check the answer against the question, refine — at most 3 turns
 * (ChartQA-style observe → answer → check → refine). It knows nothing of vqalab: any trainer that
 * sets the contract's variables runs it unchanged.
 *
 *   AGL_OPENAI_BASE_URL, AGL_KEY     the OpenAI-compatible endpoint of this attempt, and its key
 *   AGL_EVENT_URL                    where the reward goes: {"event_type": "reward", "data": {"value": r}}
 *   QUESTION, ANSWER, IMAGE_PATH     the task (TASK_JSON has the whole row; its `answers` are used when present)
 *
 * Optional: AGENT_MODEL (default "auto"), AGENT_MAX_TOKENS (default 8), AGENT_TEMPERATURE (default 1),
 * AGENT_STREAM=1 (streamed completions), AGENT_ALWAYS_REFINE=1 (always take the third turn),
 * AGENT_FINAL=last (the last turn's answer is final; default: a vote, below).
 *
 * The final answer is a vote over the turns: the check and refine turns overturn the first answer
 * only when they agree with each other (2 of 3). Reward: 1 when the final answer matches a
 * reference answer after normalisation (case, punctuation, articles), else 0. Exit code 1 when something fails (the trainer then records the
 * attempt as failed, with this process's stderr).
 *
 * Build and run: `npm run build`, then `node dist/examples/agents/vqa-agent.js` with the variables set
 * (vqalab does: `vqalab train --agent "node dist/examples/agents/vqa-agent.js"`).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import OpenAI from 'openai';

function requiredEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required (Agent Lightning's runner sets it)`);
  return v;
}

/** Lower case, no punctuation, no articles, single spaces. */
export function normalize(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s]/gu, ' ')
    .replace(/\b(a|an|the)\b/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The answer in a completion: the text of its first line. */
export function answerOf(text: string): string {
  return normalize(text.split('\n')[0] ?? '');
}

const MIME: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
};

async function postReward(eventUrl: string, key: string, value: number): Promise<void> {
  const res = await fetch(eventUrl, {
    method: 'POST',
    signal: AbortSignal.timeout(10_000),
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ event_type: 'reward', data: { value } }),
  });
  if (!res.ok) throw new Error(`reward request failed with ${res.status}: ${await res.text()}`);
}

export async function run(): Promise<void> {
  const key = requiredEnv('AGL_KEY');
  const baseURL = requiredEnv('AGL_OPENAI_BASE_URL');
  const eventUrl = requiredEnv('AGL_EVENT_URL');
  const question = requiredEnv('QUESTION');
  const expected = requiredEnv('ANSWER');
  const imagePath = requiredEnv('IMAGE_PATH');
  let answers = [expected];
  if (process.env.TASK_JSON) {
    const row = JSON.parse(process.env.TASK_JSON) as { answers?: unknown };
    if (Array.isArray(row.answers) && row.answers.every((a) => typeof a === 'string') && row.answers.length > 0)
      answers = row.answers as string[];
  }
  const model = process.env.AGENT_MODEL ?? 'auto';
  const maxTokens = Number(process.env.AGENT_MAX_TOKENS ?? 8);
  const temperature = Number(process.env.AGENT_TEMPERATURE ?? 1);
  const stream = process.env.AGENT_STREAM === '1';
  const alwaysRefine = process.env.AGENT_ALWAYS_REFINE === '1';
  const vote = process.env.AGENT_FINAL === 'last' ? 'last' : 'vote';

  const client = new OpenAI({ apiKey: key, baseURL, maxRetries: 2 });
  const image = await readFile(imagePath);
  const dataUrl = `data:${MIME[path.extname(imagePath).toLowerCase()] ?? 'image/png'};base64,${image.toString('base64')}`;
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
    {
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url: dataUrl } },
        { type: 'text', text: question },
      ],
    },
  ];

  async function ask(): Promise<string> {
    if (stream) {
      const s = await client.chat.completions.create({
        model,
        messages,
        max_tokens: maxTokens,
        temperature,
        stream: true,
      });
      let text = '';
      for await (const chunk of s) text += chunk.choices[0]?.delta?.content ?? '';
      messages.push({ role: 'assistant', content: text });
      return text;
    }
    const r = await client.chat.completions.create({ model, messages, max_tokens: maxTokens, temperature });
    const text = r.choices[0]?.message?.content ?? '';
    messages.push({ role: 'assistant', content: text });
    return text;
  }

  // Turn 1: look and answer.
  const first = answerOf(await ask());
  // Turn 2: check the answer against the question.
  messages.push({
    role: 'user',
    content: `Check your answer "${first}" against the question: ${question} Reply with the answer again, corrected if it was wrong.`,
  });
  const checked = answerOf(await ask());
  // Turn 3: refine when the check disagreed (or always, when asked to).
  let refined: string | undefined;
  if (alwaysRefine || checked !== first) {
    messages.push({ role: 'user', content: `Your answers were "${first}" and "${checked}". Give your final answer.` });
    refined = answerOf(await ask());
  }
  // The final answer is a vote over the turns (self-consistency): the check and the refinement
  // overturn the first answer only when they agree with each other.
  const final =
    vote === 'last'
      ? (refined ?? checked)
      : refined !== undefined && refined === checked && refined !== first
        ? refined
        : first;
  const reward = answers.some((a) => normalize(a) === final) ? 1 : 0;
  await postReward(eventUrl, key, reward);
  process.stdout.write(
    `${JSON.stringify({ question, first, checked, refined, final, reward, turns: messages.filter((m) => m.role === 'assistant').length })}\n`,
  );
}

const invoked = process.argv[1] ? pathToFileURL(path.resolve(process.argv[1])).href : undefined;
if (invoked === import.meta.url) {
  run().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
