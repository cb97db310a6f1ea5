/**
 * Dataset browser behaviour: filter by answer type, question type and text; page through the
 * embedded samples; open one as a full sample card (Escape closes it).
 */
import { filterSamples, renderCards, DEFAULT_PAGE_SIZE } from '../../src/display/render/dataset.js';
import { renderSample } from '../../src/display/render/sample.js';
import type { DatasetPayload } from '../../src/display/types.js';
import { must, type Hydrated } from './common.js';
import { hydrateSample } from './sample.js';

export function hydrateDataset(root: HTMLElement, payload: DatasetPayload): Hydrated {
  const pageSize = payload.pageSize ?? DEFAULT_PAGE_SIZE;
  const grid = must<HTMLElement>(root, '.vqa-grid-cards');
  const detail = must<HTMLElement>(root, '.vqa-detail');
  const answer = must<HTMLSelectElement>(root, 'select.vqa-f-answer');
  const question = must<HTMLSelectElement>(root, 'select.vqa-f-question');
  const text = must<HTMLInputElement>(root, 'input.vqa-f-text');
  const prev = must<HTMLButtonElement>(root, 'button.vqa-prev');
  const next = must<HTMLButtonElement>(root, 'button.vqa-next');
  const pageLabel = must<HTMLElement>(root, '.vqa-page');
  const matchCount = must<HTMLElement>(root, '.vqa-matchcount');
  let page = 0;
  let matches = filterSamples(payload, {});
  let open: { index: number; hydrated: Hydrated } | undefined;

  const closeDetail = () => {
    open?.hydrated.dispose();
    open = undefined;
    detail.replaceChildren();
    detail.classList.add('vqa-hidden');
    grid.querySelectorAll('.vqa-card[aria-pressed="true"]').forEach((c) => c.setAttribute('aria-pressed', 'false'));
  };
  const draw = () => {
    const pages = Math.max(1, Math.ceil(matches.length / pageSize));
    page = Math.min(page, pages - 1);
    grid.innerHTML = renderCards(payload, matches.slice(page * pageSize, (page + 1) * pageSize), { interactive: true });
    pageLabel.textContent = `page ${page + 1} of ${pages}`;
    matchCount.textContent = `${matches.length} shown of ${payload.samples.length}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    if (open) grid.querySelector(`.vqa-card[data-sample="${open.index}"]`)?.setAttribute('aria-pressed', 'true');
  };
  const refilter = () => {
    matches = filterSamples(payload, {
      answerType: answer.value || undefined,
      questionType: question.value || undefined,
      text: text.value,
    });
    page = 0;
    draw();
  };
  const onGrid = (e: Event) => {
    const card = (e.target as HTMLElement).closest<HTMLButtonElement>('button.vqa-card');
    if (!card) return;
    const index = Number(card.dataset.sample);
    if (open?.index === index) {
      closeDetail();
      return;
    }
    closeDetail();
    detail.innerHTML = renderSample(payload.samples[index]!, { interactive: true });
    detail.classList.remove('vqa-hidden');
    open = { index, hydrated: hydrateSample(detail.firstElementChild as HTMLElement, payload.samples[index]!) };
    card.setAttribute('aria-pressed', 'true');
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === 'Escape' && open) {
      e.stopPropagation();
      closeDetail();
    }
  };
  const onPrev = () => {
    page = Math.max(0, page - 1);
    draw();
  };
  const onNext = () => {
    page += 1;
    draw();
  };
  grid.addEventListener('click', onGrid);
  root.addEventListener('keydown', onKey);
  answer.addEventListener('change', refilter);
  question.addEventListener('change', refilter);
  text.addEventListener('input', refilter);
  prev.addEventListener('click', onPrev);
  next.addEventListener('click', onNext);
  draw();
  return {
    dispose() {
      closeDetail();
      grid.removeEventListener('click', onGrid);
      root.removeEventListener('keydown', onKey);
      answer.removeEventListener('change', refilter);
      question.removeEventListener('change', refilter);
      text.removeEventListener('input', refilter);
      prev.removeEventListener('click', onPrev);
      next.removeEventListener('click', onNext);
    },
  };
}
