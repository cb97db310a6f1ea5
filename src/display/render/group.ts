/**
 * Group view: the G completions of one prompt, sorted by reward, with sign-coloured advantage bars,
 * length, clipping and per-token log-probs (hover).
 */
import type { GroupCompletion, GroupPayload } from '../types.js';
import { classes, esc, fmt, fmtPercent, fmtSigned, imgTag, meanStd, truncate } from './html.js';
import type { RenderOptions } from './sample.js';
import { renderAnswers, renderSampleMeta } from './sample.js';

/** Completions by reward, highest first; failed rewards (null) last; ties keep their order. */
export function sortCompletions(completions: readonly GroupCompletion[]): { c: GroupCompletion; index: number }[] {
  return completions
    .map((c, index) => ({ c, index }))
    .sort((a, b) => {
      const ra = a.c.reward,
        rb = b.c.reward;
      if (ra === null && rb === null) return a.index - b.index;
      if (ra === null) return 1;
      if (rb === null) return -1;
      return rb - ra || a.index - b.index;
    });
}

/** Token spans: the less likely a token was under the policy, the stronger its tint. */
export function renderTokens(tokens: readonly string[], logprobs: readonly number[], opts: RenderOptions): string {
  return tokens
    .map((t, i) => {
      const lp = logprobs[i]!;
      const p = Math.exp(lp);
      const tint = `background:rgba(var(--vqa-accent-rgb),${((1 - p) * 0.5).toFixed(3)})`;
      // Static HTML shows the value through the title tooltip; the browser code draws its own.
      const title = opts.interactive
        ? ''
        : ` title="${esc(`${JSON.stringify(t)} logp ${lp.toFixed(3)} p ${p.toFixed(3)}`)}"`;
      return `<span class="vqa-tok" data-i="${i}" data-lp="${lp}" style="${tint}"${title}>${esc(t)}</span>`;
    })
    .join('');
}

function advantageBar(a: number, maxAbs: number): string {
  const pct = maxAbs > 0 ? (50 * Math.abs(a)) / maxAbs : 0;
  const bar = a === 0 ? '' : `<span class="${a > 0 ? 'vqa-pos' : 'vqa-neg'}" style="width:${pct.toFixed(1)}%"></span>`;
  return `<div class="vqa-adv" role="img" aria-label="advantage ${esc(fmtSigned(a))}">${bar}</div>`;
}

export function groupStats(p: GroupPayload): { mean: number; std: number; zeroVariance: boolean; failed: number } {
  const rewards = p.completions.map((c) => c.reward);
  const { mean, std, n } = meanStd(rewards);
  return { mean, std, zeroVariance: n > 1 && std === 0, failed: rewards.length - n };
}

export function renderGroup(p: GroupPayload, opts: RenderOptions = {}): string {
  const s = p.sample;
  const maxAbs = Math.max(0, ...p.completions.map((c) => Math.abs(c.advantage)));
  const rewardNames = [...new Set(p.completions.flatMap((c) => (c.rewards ?? []).map((r) => r.name)))];
  const stats = groupStats(p);
  const head = [
    p.title ? `<h3>${esc(p.title)}</h3>` : `<h3>Group${p.step !== undefined ? ` at step ${p.step}` : ''}</h3>`,
    `<div class="vqa-group-head">`,
    s.images[0] ? imgTag(s.images[0], 128, 96) : '',
    `<div>${renderSampleMeta(s)}<p class="vqa-question">${esc(s.question)}</p>`,
    `<details><summary class="vqa-muted">reference answers</summary>${renderAnswers(s.answers, undefined)}</details></div></div>`,
    `<div class="vqa-controls"><span class="vqa-badge">G = ${p.completions.length}</span>`,
    `<span class="vqa-badge">mean reward ${fmt(stats.mean)}</span><span class="vqa-badge">std ${fmt(stats.std)}</span>`,
    stats.zeroVariance
      ? '<span class="vqa-badge vqa-warnb" title="all completions got the same reward: advantages are 0">zero variance: no learning signal</span>'
      : '',
    stats.failed
      ? `<span class="vqa-badge vqa-bad">${stats.failed} reward failure${stats.failed > 1 ? 's' : ''}</span>`
      : '',
    `</div>`,
  ].join('');
  const header =
    `<tr><th class="vqa-num">rank</th><th class="vqa-num">#</th><th class="vqa-num">reward</th><th>advantage</th>` +
    `<th class="vqa-num">len</th><th>flags</th>${rewardNames.map((n) => `<th class="vqa-num">${esc(n)}</th>`).join('')}<th>completion</th></tr>`;
  const rows = sortCompletions(p.completions)
    .map(({ c, index }, rank) => {
      const flags = [
        c.clippedFraction
          ? `<span class="vqa-badge vqa-warnb" title="fraction of tokens whose ratio was clipped">clipped ${fmtPercent(c.clippedFraction, 0)}</span>`
          : '',
        c.finishReason && c.finishReason !== 'stop'
          ? `<span class="vqa-badge" title="finish reason">${esc(c.finishReason)}</span>`
          : '',
        c.errors?.length
          ? `<span class="vqa-badge vqa-bad" title="${esc(c.errors.join('\n'))}">${c.errors.length} error${c.errors.length > 1 ? 's' : ''}</span>`
          : '',
      ].join('');
      const byName = new Map((c.rewards ?? []).map((r) => [r.name, r]));
      const perReward = rewardNames
        .map((n) => {
          const r = byName.get(n);
          const parts = r?.parts
            ? Object.entries(r.parts)
                .map(([k, v]) => `${k}=${fmt(v)}`)
                .join(', ')
            : '';
          const tip = r?.error ? `error: ${r.error}` : parts;
          return `<td class="vqa-num"${tip ? ` title="${esc(tip)}"` : ''}>${r ? fmt(r.score) : ''}${r?.error ? ' <span class="vqa-badge vqa-bad">!</span>' : ''}</td>`;
        })
        .join('');
      const text = c.tokens && c.tokenLogprobs ? renderTokens(c.tokens, c.tokenLogprobs, opts) : esc(c.text);
      return (
        `<tr class="${classes(c.clippedFraction ? 'vqa-clipped' : '')}" data-index="${index}"><td class="vqa-num">${rank + 1}</td><td class="vqa-num">${index}</td>` +
        `<td class="vqa-num">${fmt(c.reward)}</td><td>${advantageBar(c.advantage, maxAbs)}<span class="vqa-muted">${fmtSigned(c.advantage)}</span></td>` +
        `<td class="vqa-num">${c.length}</td><td>${flags}</td>${perReward}<td class="vqa-text">${text}</td></tr>`
      );
    })
    .join('');
  return `<div class="vqa vqa-group" data-vqa="group">${head}<table class="vqa-completions"><thead>${header}</thead><tbody>${rows}</tbody></table></div>`;
}

/** One line per completion, for text/plain. */
export function groupText(p: GroupPayload): string {
  const st = groupStats(p);
  const lines = [
    `Group${p.step !== undefined ? ` at step ${p.step}` : ''}: ${JSON.stringify(truncate(p.sample.question, 80))} ` +
      `(G=${p.completions.length}, mean reward ${fmt(st.mean)}, std ${fmt(st.std)}${st.zeroVariance ? ', zero variance' : ''})`,
  ];
  for (const { c, index } of sortCompletions(p.completions)) {
    lines.push(
      `  #${String(index).padEnd(3)} reward ${fmt(c.reward).padStart(6)}  adv ${fmtSigned(c.advantage).padStart(7)}  len ${String(c.length).padStart(4)}` +
        `${c.clippedFraction ? `  clipped ${fmtPercent(c.clippedFraction)}` : ''}  ${JSON.stringify(truncate(c.text, 100))}`,
    );
  }
  return lines.join('\n');
}
