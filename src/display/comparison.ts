/**
 * Views of a policy comparison (src/rollout/compare.ts `evaluatePolicies`): the summary table as
 * text and HTML, running accuracy / latency / tokens as a metrics plot, and per-question accuracy
 * as a reward table.
 */
import type { PolicyComparison } from '../rollout/compare.js';
import { bundleFor } from './bundle.js';
import { emit, type DisplaySink } from './output.js';
import { esc } from './render/html.js';
import { VQA_CSS } from './render/style.js';
import { pearson } from './reward-lab.js';
import { MIME, type MetricsPayload, type MimeBundle, type RewardTablePayload } from './types.js';

const f2 = (x: number | null | undefined, d = 2) =>
  x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d);
const fcost = (x: number | null) => (x === null ? '—' : x < 0.01 ? `$${x.toFixed(5)}` : `$${x.toFixed(2)}`);

/** Header and rows of the summary table (shared by the text and HTML views). */
function summaryCells(c: PolicyComparison): { head: string[]; rows: string[][] } {
  const head = [
    'policy',
    'overall',
    ...c.answerTypes,
    'exact',
    'errors',
    'p50 ms',
    'p99 ms',
    'prompt tok',
    'compl tok',
    'cost',
    'seconds',
  ];
  const rows = c.policies.map((p) => [
    p.name,
    f2(p.overall),
    ...c.answerTypes.map((t) => f2(p.perAnswerType[t])),
    f2(p.exactMatch),
    `${p.errors}/${p.questions}`,
    f2(p.latencyMs.p50, 0),
    f2(p.latencyMs.p99, 0),
    p.tokens.known ? String(p.tokens.prompt) : '—',
    p.tokens.known ? String(p.tokens.completion) : '—',
    fcost(p.cost),
    f2(p.seconds, 1),
  ]);
  return { head, rows };
}

/** The comparison as a plain-text table. */
export function comparisonText(c: PolicyComparison): string {
  const { head, rows } = summaryCells(c);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ');
  const out = [
    `VQA accuracy (official metric, %) on ${c.questions} questions of ${c.dataset}`,
    line(head),
    ...rows.map(line),
  ];
  for (const p of c.policies)
    if (p.errorMessages.length) out.push('', `${p.name}: ${p.errors} failed request(s), e.g. ${p.errorMessages[0]}`);
  if (c.notes.length) out.push('', ...c.notes.map((n) => `note: ${n}`));
  return out.join('\n') + '\n';
}

/** The summary table as a text/html + text/plain bundle. */
export function comparisonTableBundle(c: PolicyComparison): MimeBundle {
  const { head, rows } = summaryCells(c);
  const best = (col: number, higher: boolean) => {
    const vals = rows.map((r) => Number(r[col]));
    const finite = vals.filter((v) => Number.isFinite(v));
    if (finite.length < 2) return -1;
    const target = higher ? Math.max(...finite) : Math.min(...finite);
    return vals.filter((v) => v === target).length === 1 ? vals.indexOf(target) : -1; // no winner on a tie
  };
  const highlight = new Map<number, number>([[1, best(1, true)]]);
  const th = head.map((h, i) => `<th${i > 0 ? ' class="vqa-num"' : ''}>${esc(h)}</th>`).join('');
  const body = rows
    .map(
      (r, ri) =>
        `<tr>${r.map((cell, i) => `<td${i > 0 ? ' class="vqa-num"' : ''}>${highlight.get(i) === ri ? `<b>${esc(cell)}</b>` : esc(cell)}</td>`).join('')}</tr>`,
    )
    .join('');
  const notes = c.notes.map((n) => `<p class="vqa-muted">${esc(n)}</p>`).join('');
  const errs = c.policies
    .filter((p) => p.errorMessages.length)
    .map(
      (p) => `<p class="vqa-muted">${esc(p.name)}: ${p.errors} failed request(s), e.g. ${esc(p.errorMessages[0])}</p>`,
    )
    .join('');
  const html =
    `<style>${VQA_CSS}</style><div class="vqa vqa-comparison"><h3>${esc(`Policy comparison on ${c.dataset} (${c.questions} questions)`)}</h3>` +
    `<p class="vqa-muted">Official VQA accuracy in %, overall and per answer type; latency per request; cost from the price table.</p>` +
    `<table class="vqa-stats"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>${errs}${notes}</div>`;
  return { 'text/html': html, 'text/plain': comparisonText(c) };
}

/** Running accuracy, latency and tokens per question, one run per policy (the metrics widget). */
export function comparisonMetrics(c: PolicyComparison): MetricsPayload {
  return {
    title: `Policy comparison on ${c.dataset}: running accuracy, latency and tokens per question`,
    keys: ['accuracy', 'latency_ms', 'completion_tokens'],
    runs: c.policies.map((p) => {
      let sum = 0;
      return {
        name: p.name,
        points: p.rows.map((r, i) => {
          sum += r.accuracy;
          const pt: { step: number; [k: string]: number } = { step: i + 1, accuracy: sum / (i + 1) };
          if (r.latencyMs !== null && r.error === undefined) pt.latency_ms = r.latencyMs;
          if (r.completionTokens !== null && r.error === undefined) pt.completion_tokens = r.completionTokens;
          return pt;
        }),
      };
    }),
  };
}

/** Per question: each policy's accuracy as a column of the reward-table widget (disagreement = spread). */
export function comparisonTable(c: PolicyComparison): RewardTablePayload {
  const names = c.policies.map((p) => p.name);
  const scores = c.policies.map((p) => p.rows.map((r) => r.accuracy));
  const rows = c.policies[0]!.rows.map((r0, i) => {
    const s = Object.fromEntries(names.map((n, k) => [n, scores[k]![i]!]));
    const vals = Object.values(s);
    const errors = Object.fromEntries(
      c.policies.filter((p) => p.rows[i]!.error !== undefined).map((p) => [p.name, p.rows[i]!.error!]),
    );
    return {
      sampleId: r0.id,
      question: r0.question,
      completion: c.policies
        .map(
          (p) => `${p.name} → ${p.rows[i]!.error !== undefined ? '(failed)' : JSON.stringify(p.rows[i]!.prediction)}`,
        )
        .join('  |  '),
      scores: s,
      disagreement: Math.max(...vals) - Math.min(...vals),
      ...(Object.keys(errors).length ? { errors } : {}),
    };
  });
  const ms = (xs: number[]) => {
    const m = xs.reduce((a, b) => a + b, 0) / xs.length;
    return { mean: m, std: Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length) };
  };
  return {
    title: `Per-question official accuracy on ${c.dataset}`,
    rewards: names,
    rows,
    stats: {
      mean: Object.fromEntries(names.map((n, k) => [n, ms(scores[k]!).mean])),
      std: Object.fromEntries(names.map((n, k) => [n, ms(scores[k]!).std])),
      correlation: scores.map((a) => scores.map((b) => pearson(a, b))),
      zeroVarianceGroupFraction: {},
    },
  };
}

/** The three bundles of a comparison: summary table, plot, per-question table. */
export function comparisonBundles(c: PolicyComparison): { table: MimeBundle; plot: MimeBundle; questions: MimeBundle } {
  return {
    table: comparisonTableBundle(c),
    plot: bundleFor(MIME.metrics, comparisonMetrics(c)),
    questions: bundleFor(MIME.rewards, comparisonTable(c)),
  };
}

/** Display a comparison in a notebook (through the installed sink); returns the bundles. */
export function showComparison(c: PolicyComparison, options: { sink?: DisplaySink } = {}): MimeBundle[] {
  const b = comparisonBundles(c);
  return [b.table, b.plot, b.questions].map((x) => emit(x, undefined, options.sink));
}
