/**
 * Reward table: several rewards side by side on the same completions, rows where they disagree
 * highlighted, and the reward lab's statistics (mean, std, correlation, zero-variance groups).
 */
import type { RewardTablePayload } from '../types.js';
import { classes, esc, fmt, fmtPercent, signedTint, truncate } from './html.js';
import type { RenderOptions } from './sample.js';

/** Rows whose normalised scores spread by at least this much are called disagreements. */
export const DISAGREEMENT_THRESHOLD = 0.5;
/** Static HTML stops after this many rows (the vendor payload keeps them all). */
export const STATIC_ROW_LIMIT = 500;

function columnRange(p: RewardTablePayload, name: string): { lo: number; hi: number } {
  let lo = Infinity,
    hi = -Infinity;
  for (const row of p.rows) {
    const v = row.scores[name];
    if (typeof v === 'number') {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  return { lo, hi };
}

function sortHeader(label: string, col: number, numeric: boolean, opts: RenderOptions): string {
  const cls = numeric ? ' class="vqa-num"' : '';
  if (!opts.interactive) return `<th${cls}>${esc(label)}</th>`;
  return `<th${cls} aria-sort="none"><button type="button" class="vqa-sort" data-col="${col}" data-numeric="${numeric}">${esc(label)}</button></th>`;
}

export function renderStats(p: RewardTablePayload): string {
  const st = p.stats;
  const rows = p.rewards
    .map(
      (r) =>
        `<tr><td>${esc(r)}</td><td class="vqa-num">${fmt(st.mean[r])}</td><td class="vqa-num">${fmt(st.std[r])}</td>` +
        `<td class="vqa-num">${typeof st.zeroVarianceGroupFraction[r] === 'number' ? fmtPercent(st.zeroVarianceGroupFraction[r]!, 1) : '—'}</td></tr>`,
    )
    .join('');
  const corrHead = p.rewards.map((r) => `<th class="vqa-num">${esc(r)}</th>`).join('');
  const corrRows = p.rewards
    .map(
      (r, i) =>
        `<tr><th>${esc(r)}</th>${st.correlation[i]!.map(
          (c) => `<td class="vqa-num" style="${c === null ? '' : signedTint(c)}">${fmt(c, 2)}</td>`,
        ).join('')}</tr>`,
    )
    .join('');
  return (
    `<div class="vqa-controls" style="align-items:flex-start">` +
    `<table class="vqa-stats"><thead><tr><th>reward</th><th class="vqa-num">mean</th><th class="vqa-num">std</th>` +
    `<th class="vqa-num" title="groups where every completion got the same score: no learning signal">zero-variance groups</th></tr></thead><tbody>${rows}</tbody></table>` +
    (p.rewards.length > 1
      ? `<table class="vqa-corr"><caption class="vqa-muted" style="text-align:left">Pearson correlation</caption><thead><tr><th></th>${corrHead}</tr></thead><tbody>${corrRows}</tbody></table>`
      : '') +
    `</div>`
  );
}

export function renderRewardTable(p: RewardTablePayload, opts: RenderOptions = {}): string {
  const ranges = new Map(p.rewards.map((r) => [r, columnRange(p, r)]));
  const disagreements = p.rows.filter((r) => r.disagreement >= DISAGREEMENT_THRESHOLD).length;
  const groups = new Set(p.rows.map((r) => r.groupId).filter((g) => g !== undefined)).size;
  const limit = opts.interactive ? p.rows.length : Math.min(p.rows.length, STATIC_ROW_LIMIT);
  const headers = ['sample', 'question', 'completion', ...p.rewards, 'disagreement'];
  const numeric = (col: number) => col >= 3;
  const head = `<tr>${headers.map((h, i) => sortHeader(h, i, numeric(i), opts)).join('')}</tr>`;
  const body = p.rows
    .slice(0, limit)
    .map((row) => {
      const cells = p.rewards
        .map((r) => {
          const v = row.scores[r]!;
          const { lo, hi } = ranges.get(r)!;
          const norm = v === null || hi <= lo ? 0 : (v - lo) / (hi - lo);
          const parts = row.parts?.[r]
            ? Object.entries(row.parts[r]!)
                .map(([k, x]) => `${k}=${fmt(x)}`)
                .join(', ')
            : '';
          const error = row.errors?.[r];
          const tip = [error ? `error: ${error}` : '', parts].filter(Boolean).join('\n');
          const style = v === null ? '' : ` style="background:rgba(var(--vqa-accent-rgb),${(0.35 * norm).toFixed(3)})"`;
          const badge =
            v === null
              ? '<span class="vqa-badge vqa-bad">failed</span>'
              : `${fmt(v)}${error ? ' <span class="vqa-badge vqa-bad">!</span>' : ''}`;
          return `<td class="vqa-num" data-v="${v ?? ''}"${style}${tip ? ` title="${esc(tip)}"` : ''}>${badge}</td>`;
        })
        .join('');
      const dis = row.disagreement >= DISAGREEMENT_THRESHOLD;
      return (
        `<tr class="${classes(dis && 'vqa-disagree')}"${row.groupId !== undefined ? ` data-group="${esc(row.groupId)}"` : ''}>` +
        `<td data-v="${esc(row.sampleId)}">${esc(row.sampleId)}</td><td data-v="${esc(row.question)}">${esc(row.question)}</td>` +
        `<td class="vqa-text" data-v="${esc(row.completion)}">${esc(row.completion)}</td>${cells}` +
        `<td class="vqa-num vqa-dis" data-v="${row.disagreement}">${fmt(row.disagreement, 2)}</td></tr>`
      );
    })
    .join('');
  const more =
    limit < p.rows.length ? `<p class="vqa-muted">${p.rows.length - limit} more rows in the vqalab view.</p>` : '';
  const controls = opts.interactive
    ? `<label><input type="checkbox" class="vqa-only-dis"> only disagreements</label><span class="vqa-muted vqa-rowcount">${p.rows.length} rows</span>`
    : '';
  return (
    `<div class="vqa vqa-rewards" data-vqa="rewards"><h3>${esc(p.title ?? 'Rewards side by side')}</h3>` +
    `<div class="vqa-controls"><span class="vqa-badge">${p.rows.length} completions</span>` +
    (groups ? `<span class="vqa-badge">${groups} groups</span>` : '') +
    `<span class="vqa-badge ${disagreements ? 'vqa-bad' : ''}">${disagreements} disagreement${disagreements === 1 ? '' : 's'} (spread ≥ ${DISAGREEMENT_THRESHOLD})</span></div>` +
    renderStats(p) +
    `<div class="vqa-controls">${controls}</div>` +
    `<table class="vqa-rewards-table"><thead>${head}</thead><tbody>${body}</tbody></table>${more}</div>`
  );
}

export function rewardTableText(p: RewardTablePayload): string {
  const st = p.stats;
  const lines = [`${p.title ?? 'Rewards'}: ${p.rows.length} completions, rewards ${p.rewards.join(', ')}`];
  for (const r of p.rewards) {
    lines.push(
      `  ${r}: mean ${fmt(st.mean[r])} std ${fmt(st.std[r])} zero-variance groups ${typeof st.zeroVarianceGroupFraction[r] === 'number' ? fmtPercent(st.zeroVarianceGroupFraction[r]!, 1) : '—'}`,
    );
  }
  const dis = p.rows.filter((r) => r.disagreement >= DISAGREEMENT_THRESHOLD);
  lines.push(`  ${dis.length} disagreements (spread >= ${DISAGREEMENT_THRESHOLD})`);
  for (const row of dis.slice(0, 5)) {
    lines.push(
      `    ${row.sampleId} ${JSON.stringify(truncate(row.completion, 60))}: ${p.rewards.map((r) => `${r}=${fmt(row.scores[r])}`).join(' ')}`,
    );
  }
  return lines.join('\n');
}
