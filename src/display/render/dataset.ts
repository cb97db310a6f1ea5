/**
 * Dataset browser: the dataset's identity and type counts, and a grid of sample cards. The static
 * HTML shows the first page; the browser code pages, filters by answer and question type, searches
 * the questions and opens a full sample card.
 */
import type { DatasetPayload, SamplePayload } from '../types.js';
import { countAnswers, esc, imgTag, truncate } from './html.js';
import type { RenderOptions } from './sample.js';

export const DEFAULT_PAGE_SIZE = 12;

export interface DatasetFilter {
  answerType?: string;
  questionType?: string;
  /** Case-insensitive substring of the question or an answer. */
  text?: string;
}

/** Indices (into `p.samples`) of the samples that pass the filter. */
export function filterSamples(p: DatasetPayload, f: DatasetFilter): number[] {
  const text = f.text?.trim().toLowerCase();
  const out: number[] = [];
  p.samples.forEach((s, i) => {
    if (f.answerType && s.answerType !== f.answerType) return;
    if (f.questionType && s.questionType !== f.questionType) return;
    if (text && !s.question.toLowerCase().includes(text) && !s.answers.some((a) => a.toLowerCase().includes(text)))
      return;
    out.push(i);
  });
  return out;
}

export function renderCard(s: SamplePayload, index: number, opts: RenderOptions): string {
  const img = s.images[0];
  const top = countAnswers(s.answers)[0];
  const inner =
    (img ? `<div class="vqa-thumb">${imgTag(img, 160, 110)}</div>` : '<div class="vqa-muted">(no image)</div>') +
    `<div class="vqa-card-q">${esc(truncate(s.question, 120))}</div>` +
    `<div>${top ? `${esc(top.answer)} <span class="vqa-muted">×${top.count}</span>` : ''} ` +
    `${s.answerType ? `<span class="vqa-badge">${esc(s.answerType)}</span>` : ''}</div>` +
    `<div class="vqa-muted">#${esc(s.id)}</div>`;
  return opts.interactive
    ? `<button type="button" class="vqa-card" data-sample="${index}" aria-pressed="false" aria-label="${esc(`Open sample ${s.id}: ${s.question}`)}">${inner}</button>`
    : `<div class="vqa-card">${inner}</div>`;
}

export function renderCards(p: DatasetPayload, indices: readonly number[], opts: RenderOptions): string {
  return (
    indices.map((i) => renderCard(p.samples[i]!, i, opts)).join('') || '<p class="vqa-muted">no sample matches</p>'
  );
}

function typeCounts(label: string, counts: Record<string, number>): string {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  if (entries.length === 0) return '';
  const shown = entries
    .slice(0, 12)
    .map(([k, n]) => `<span class="vqa-badge">${esc(k)} <span class="vqa-muted">${n}</span></span>`)
    .join('');
  return `<div class="vqa-typecounts"><span class="vqa-muted">${esc(label)}:</span> ${shown}${entries.length > 12 ? ` <span class="vqa-muted">+${entries.length - 12} more</span>` : ''}</div>`;
}

function select(cls: string, label: string, counts: Record<string, number>): string {
  const options = Object.entries(counts)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `<option value="${esc(k)}">${esc(k)} (${n})</option>`)
    .join('');
  return `<label>${esc(label)} <select class="${cls}"><option value="">all</option>${options}</select></label>`;
}

export function renderDataset(p: DatasetPayload, opts: RenderOptions = {}): string {
  const pageSize = p.pageSize ?? DEFAULT_PAGE_SIZE;
  const first = Array.from({ length: Math.min(pageSize, p.samples.length) }, (_, i) => i);
  const pages = Math.max(1, Math.ceil(p.samples.length / pageSize));
  const window =
    p.samples.length < p.total
      ? `samples ${p.offset + 1}–${p.offset + p.samples.length} of ${p.total} embedded`
      : `${p.total} samples`;
  const controls = opts.interactive
    ? `<div class="vqa-controls">${select('vqa-f-answer', 'answer type', p.answerTypes)}${select('vqa-f-question', 'question type', p.questionTypes)}` +
      `<label>search <input type="search" class="vqa-f-text" placeholder="question or answer"></label></div>` +
      `<div class="vqa-controls"><button type="button" class="vqa-prev" aria-label="previous page">‹ prev</button>` +
      `<span class="vqa-page" aria-live="polite">page 1 of ${pages}</span><button type="button" class="vqa-next" aria-label="next page">next ›</button>` +
      `<span class="vqa-muted vqa-matchcount">${p.samples.length} shown of ${p.samples.length}</span></div>`
    : p.samples.length > first.length
      ? `<p class="vqa-muted">first ${first.length} of ${p.samples.length} embedded samples; page and filter them in JupyterLab with the vqalab extension.</p>`
      : '';
  return (
    `<div class="vqa vqa-dataset" data-vqa="dataset"><h3>${esc(p.name)}</h3>` +
    `<div class="vqa-controls"><span class="vqa-badge">${esc(window)}</span><span class="vqa-muted" title="dataset fingerprint">${esc(p.fingerprint)}</span></div>` +
    typeCounts('answer types', p.answerTypes) +
    typeCounts('question types', p.questionTypes) +
    controls +
    `<div class="vqa-grid-cards">${renderCards(p, first, opts)}</div><div class="vqa-detail vqa-hidden" aria-live="polite"></div></div>`
  );
}

export function datasetText(p: DatasetPayload): string {
  const top = (c: Record<string, number>) =>
    Object.entries(c)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 5)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  const lines = [
    `Dataset ${p.name} (${p.fingerprint}): ${p.total} samples, ${p.samples.length} embedded from ${p.offset}`,
  ];
  if (Object.keys(p.answerTypes).length) lines.push(`  answer types: ${top(p.answerTypes)}`);
  if (Object.keys(p.questionTypes).length) lines.push(`  question types: ${top(p.questionTypes)}`);
  for (const s of p.samples.slice(0, 5))
    lines.push(`  #${s.id} ${JSON.stringify(truncate(s.question, 80))} → ${countAnswers(s.answers)[0]?.answer ?? '?'}`);
  return lines.join('\n');
}
