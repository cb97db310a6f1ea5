/** Sample card: the image, the question, the reference answers with counts, the prediction and its rewards. */
import type { ImageRef, RewardScore, SamplePayload } from '../types.js';
import { classes, countAnswers, esc, fitImage, fmt, imgTag, normalizeAnswer } from './html.js';

/** The box a sample card fits its images into (px). */
export const CARD_BOX = 320;

export interface RenderOptions {
  /** Draw controls that only work with the browser code (buttons, pagers); false for static HTML. */
  interactive?: boolean;
}

export function renderImage(img: ImageRef, index: number, opts: RenderOptions): string {
  const tag = imgTag(img, CARD_BOX, CARD_BOX);
  const body = opts.interactive
    ? `<button type="button" class="vqa-zoom" data-vqa-zoom="${index}" aria-label="${esc(`Zoom image ${index + 1}: ${img.alt}`)}" aria-pressed="false">${tag}</button>`
    : tag;
  const f = fitImage(img.width, img.height, CARD_BOX, CARD_BOX);
  const shown = f.scale === 1 ? '' : ` · shown ${f.pixelated ? `${f.scale}×` : `${Math.round(f.scale * 100)}%`}`;
  return `<figure class="vqa-figure">${body}<figcaption>${img.width}×${img.height}${shown}</figcaption></figure>`;
}

/** One reward per row: score (×weight), parts as `name=value`, or the error it raised. */
export function renderRewardScores(rewards: readonly RewardScore[]): string {
  if (rewards.length === 0) return '';
  const rows = rewards
    .map((r) => {
      const parts = r.parts
        ? Object.entries(r.parts)
            .map(([k, v]) => `${esc(k)}=${fmt(v)}`)
            .join(', ')
        : '';
      const weight = r.weight !== undefined ? ` <span class="vqa-muted">×${fmt(r.weight)}</span>` : '';
      const detail = r.error ? `<span class="vqa-badge vqa-bad">error</span> ${esc(r.error)}` : parts;
      return `<tr><td>${esc(r.name)}${weight}</td><td class="vqa-num">${fmt(r.score)}</td><td class="vqa-parts">${detail}</td></tr>`;
    })
    .join('');
  return `<table class="vqa-reward-scores"><thead><tr><th>reward</th><th class="vqa-num">score</th><th>parts</th></tr></thead><tbody>${rows}</tbody></table>`;
}

export function renderAnswers(answers: readonly string[], prediction: string | undefined): string {
  const counted = countAnswers(answers);
  if (counted.length === 0) return '<p class="vqa-muted">no reference answers</p>';
  const pred = prediction !== undefined ? normalizeAnswer(prediction) : undefined;
  const max = counted[0]!.count;
  const rows = counted
    .map(({ answer, count, key }) => {
      const match = key === pred;
      return (
        `<tr class="${classes(match && 'vqa-match')}"><td>${esc(answer)}${match ? ' <span class="vqa-badge vqa-good">= prediction</span>' : ''}</td>` +
        `<td class="vqa-num">${count}</td><td class="vqa-bar"><span style="width:${Math.round((80 * count) / max)}px"></span></td></tr>`
      );
    })
    .join('');
  return (
    `<table class="vqa-answers"><caption class="vqa-muted" style="text-align:left">${answers.length} reference answer${answers.length === 1 ? '' : 's'}</caption>` +
    `<thead><tr><th>answer</th><th class="vqa-num">count</th><th></th></tr></thead><tbody>${rows}</tbody></table>`
  );
}

/** How many annotators gave the prediction (normalised); VQA accuracy is min(1, matches / 3). */
export function predictionMatches(p: SamplePayload): number {
  if (p.prediction === undefined) return 0;
  const pred = normalizeAnswer(p.prediction);
  return p.answers.filter((a) => normalizeAnswer(a) === pred).length;
}

export function renderSampleMeta(p: SamplePayload): string {
  const bits = [`<span class="vqa-muted">#${esc(p.id)}</span>`];
  if (p.answerType) bits.push(`<span class="vqa-badge" title="answer type">${esc(p.answerType)}</span>`);
  if (p.questionType) bits.push(`<span class="vqa-badge" title="question type">${esc(p.questionType)}</span>`);
  return `<div class="vqa-meta">${bits.join(' ')}</div>`;
}

export function renderSample(p: SamplePayload, opts: RenderOptions = {}): string {
  const images = p.images.length
    ? `<div class="vqa-images">${p.images.map((img, i) => renderImage(img, i, opts)).join('')}</div>`
    : '<div class="vqa-images vqa-muted">(no image)</div>';
  let prediction = '';
  if (p.prediction !== undefined) {
    const n = predictionMatches(p);
    const verdict = n >= 3 ? 'vqa-good' : n > 0 ? 'vqa-warnb' : 'vqa-bad';
    prediction =
      `<p class="vqa-prediction">Prediction: <q>${esc(p.prediction)}</q> ` +
      `<span class="vqa-badge ${verdict}">${n}/${p.answers.length} annotators</span></p>`;
  }
  const title = p.title ? `<h3>${esc(p.title)}</h3>` : '';
  return (
    `<div class="vqa vqa-sample" data-vqa="sample">${images}<div class="vqa-sample-body">${title}${renderSampleMeta(p)}` +
    `<p class="vqa-question">${esc(p.question)}</p>${renderAnswers(p.answers, p.prediction)}${prediction}` +
    `${p.rewards ? renderRewardScores(p.rewards) : ''}</div></div>`
  );
}

export function sampleText(p: SamplePayload): string {
  const answers = countAnswers(p.answers)
    .map(({ answer, count }) => (count > 1 ? `${answer} ×${count}` : answer))
    .join(', ');
  const lines = [
    `Sample #${p.id}${p.answerType ? ` (${p.answerType})` : ''}: ${p.question}`,
    `  answers: ${answers || '(none)'}`,
  ];
  if (p.images.length)
    lines.push(
      `  image${p.images.length > 1 ? 's' : ''}: ${p.images.map((i) => `${i.width}×${i.height} ${JSON.stringify(i.alt)}`).join('; ')}`,
    );
  if (p.prediction !== undefined)
    lines.push(
      `  prediction: ${JSON.stringify(p.prediction)} (${predictionMatches(p)}/${p.answers.length} annotators)`,
    );
  for (const r of p.rewards ?? []) {
    const parts = r.parts
      ? ` [${Object.entries(r.parts)
          .map(([k, v]) => `${k}=${fmt(v)}`)
          .join(', ')}]`
      : '';
    lines.push(`  ${r.name}: ${r.error ? `error: ${r.error}` : fmt(r.score)}${parts}`);
  }
  return lines.join('\n');
}
