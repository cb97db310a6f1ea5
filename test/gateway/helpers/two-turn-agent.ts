/**
 * A small two-turn agent written to the contract, with fetch: it answers, is asked one more
 * thing, answers again, and posts `reward` — a JavaScript expression over the final answer `text`.
 * Written to a file and run with node, once per attempt.
 */
export function twoTurnAgent(reward: string): string {
  return `
const base = process.env.AGL_OPENAI_BASE_URL, key = process.env.AGL_KEY;
const image = 'data:image/png;base64,' + (await import('node:fs')).readFileSync(process.env.IMAGE_PATH).toString('base64');
const messages = [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } }, { type: 'text', text: process.env.QUESTION }] }];
let text = '';
for (const next of ['Name its colours.', null]) {
  const r = await fetch(base + '/chat/completions', { method: 'POST', headers: { authorization: 'Bearer ' + key, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'auto', messages, max_tokens: 8, temperature: 1 }) });
  if (!r.ok) throw new Error('chat ' + r.status + ' ' + await r.text());
  const j = await r.json();
  text = j.choices[0].message.content;
  messages.push({ role: 'assistant', content: text });
  if (next) messages.push({ role: 'user', content: next });
}
const value = ${reward};
const e = await fetch(process.env.AGL_EVENT_URL, { method: 'POST', headers: { authorization: 'Bearer ' + key, 'content-type': 'application/json' },
  body: JSON.stringify({ event_type: 'reward', data: { value } }) });
if (!e.ok) throw new Error('reward ' + e.status);
`;
}

/** Colour words in the final answer (0, ¼, ½, … capped at 1). */
export const COLOUR_REWARD =
  'Math.min(1, (text.match(/red|green|blue|yellow|black|white|purple|orange|gray|brown|pink/g) ?? []).length / 4)';
