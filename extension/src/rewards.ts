/**
 * Reward table behaviour: sort by any column (click or Enter on its header; again to reverse; failed
 * scores always last) and show only the rows where the rewards disagree.
 */
import type { RewardTablePayload } from '../../src/display/types.js';
import { must, type Hydrated } from './common.js';

/** Compare two cells' sort values; empty (failed) last whatever the direction. */
export function compareCells(a: string, b: string, numeric: boolean, dir: 1 | -1): number {
  if (a === '' || b === '') return a === b ? 0 : a === '' ? 1 : -1;
  return dir * (numeric ? Number(a) - Number(b) : a.localeCompare(b));
}

export function hydrateRewards(root: HTMLElement, _payload: RewardTablePayload): Hydrated {
  const table = must<HTMLTableElement>(root, 'table.vqa-rewards-table');
  const body = table.tBodies[0]!;
  const original = [...body.rows];
  const headers = [...table.querySelectorAll<HTMLTableCellElement>('thead th')];
  const only = root.querySelector<HTMLInputElement>('input.vqa-only-dis');
  const countEl = root.querySelector<HTMLElement>('.vqa-rowcount');
  let sortCol = -1,
    dir: 1 | -1 = 1;

  const onSort = (e: Event) => {
    const button = (e.target as HTMLElement).closest<HTMLButtonElement>('button.vqa-sort');
    if (!button) return;
    const col = Number(button.dataset.col);
    const numeric = button.dataset.numeric === 'true';
    // Numbers start high-to-low (best reward, biggest disagreement first), text A to Z.
    dir = col === sortCol ? (dir === 1 ? -1 : 1) : numeric ? -1 : 1;
    sortCol = col;
    const rows = original
      .slice()
      .sort(
        (r1, r2) =>
          compareCells(r1.cells[col]?.dataset.v ?? '', r2.cells[col]?.dataset.v ?? '', numeric, dir) ||
          original.indexOf(r1) - original.indexOf(r2),
      );
    body.replaceChildren(...rows);
    headers.forEach((th, i) =>
      th.setAttribute('aria-sort', i === col ? (dir === 1 ? 'ascending' : 'descending') : 'none'),
    );
  };
  const onFilter = () => {
    let shown = 0;
    for (const row of original) {
      const hide = Boolean(only?.checked) && !row.classList.contains('vqa-disagree');
      row.classList.toggle('vqa-hidden', hide);
      if (!hide) shown++;
    }
    if (countEl) countEl.textContent = `${shown} of ${original.length} rows`;
  };
  table.tHead?.addEventListener('click', onSort);
  only?.addEventListener('change', onFilter);
  return {
    dispose() {
      table.tHead?.removeEventListener('click', onSort);
      only?.removeEventListener('change', onFilter);
    },
  };
}
