/**
 * Group view behaviour: a tooltip with each token's log-prob and probability, on hover and from the
 * keyboard (focus a completion, then ←/→ walk its tokens).
 */
import type { GroupPayload } from '../../src/display/types.js';
import { hideTip, showTip, type Hydrated } from './common.js';

function describe(tok: HTMLElement): string {
  const lp = Number(tok.dataset.lp);
  return `${JSON.stringify(tok.textContent ?? '')}\nlogp ${lp.toFixed(3)}   p ${Math.exp(lp).toFixed(3)}`;
}

export function hydrateGroup(root: HTMLElement, _payload: GroupPayload): Hydrated {
  const over = (e: MouseEvent) => {
    const tok = (e.target as HTMLElement).closest<HTMLElement>('.vqa-tok');
    if (tok && root.contains(tok)) showTip(describe(tok), e.clientX, e.clientY);
  };
  const out = (e: MouseEvent) => {
    if ((e.target as HTMLElement).closest('.vqa-tok')) hideTip();
  };
  root.addEventListener('mouseover', over);
  root.addEventListener('mouseout', out);
  const cells = [...root.querySelectorAll<HTMLElement>('td.vqa-text')].filter((td) => td.querySelector('.vqa-tok'));
  const keyHandlers: [HTMLElement, (e: KeyboardEvent) => void, () => void][] = [];
  for (const td of cells) {
    td.tabIndex = 0;
    td.setAttribute('aria-label', 'completion tokens: use left and right arrows for log-probs');
    let active = -1;
    const toks = [...td.querySelectorAll<HTMLElement>('.vqa-tok')];
    const key = (e: KeyboardEvent) => {
      if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft' && e.key !== 'Escape') return;
      e.preventDefault();
      e.stopPropagation();
      toks[active]?.style.removeProperty('outline');
      if (e.key === 'Escape') {
        active = -1;
        hideTip();
        return;
      }
      active = Math.max(0, Math.min(toks.length - 1, active + (e.key === 'ArrowRight' ? 1 : -1)));
      const tok = toks[active]!;
      tok.style.outline = '1px solid var(--vqa-accent)';
      const r = tok.getBoundingClientRect();
      showTip(describe(tok), r.left, r.top);
    };
    const blur = () => {
      toks[active]?.style.removeProperty('outline');
      active = -1;
      hideTip();
    };
    td.addEventListener('keydown', key);
    td.addEventListener('blur', blur);
    keyHandlers.push([td, key, blur]);
  }
  return {
    dispose() {
      hideTip();
      root.removeEventListener('mouseover', over);
      root.removeEventListener('mouseout', out);
      for (const [td, key, blur] of keyHandlers) {
        td.removeEventListener('keydown', key);
        td.removeEventListener('blur', blur);
      }
    },
  };
}
