/** Sample card behaviour: click, Enter or Space zooms an image to real pixels (crisp), + and - change the zoom, Escape resets. */
import type { SamplePayload } from '../../src/display/types.js';
import type { Hydrated } from './common.js';

/** Zoom steps as multiples of the first zoomed size. */
const LEVELS = [1, 2, 4];

export function hydrateSample(root: HTMLElement, payload: SamplePayload): Hydrated {
  const cleanups: (() => void)[] = [];
  root.querySelectorAll<HTMLButtonElement>('button.vqa-zoom').forEach((button) => {
    const index = Number(button.dataset.vqaZoom);
    const ref = payload.images[index];
    const img = button.querySelector('img');
    const figure = button.closest('figure');
    if (!ref || !img || !figure) return;
    let level = 0;
    const apply = () => {
      const zoomed = level > 0;
      figure.classList.toggle('vqa-zoomed', zoomed);
      button.setAttribute('aria-pressed', String(zoomed));
      // First zoom: natural size, or enlarged by an integer factor to about 448 px for small images;
      // integer factors with pixelated rendering keep every source pixel square and sharp.
      const base = Math.max(1, Math.floor(448 / Math.max(ref.width, ref.height, 1)));
      const factor = zoomed ? base * LEVELS[level - 1]! : 0;
      img.style.width = zoomed ? `${ref.width * factor}px` : '';
      img.style.height = zoomed ? `${ref.height * factor}px` : '';
      const caption = figure.querySelector('figcaption');
      if (caption) caption.textContent = `${ref.width}×${ref.height}${zoomed ? ` · ${factor}×` : ''}`;
    };
    const onClick = () => { level = level > 0 ? 0 : 1; apply(); };
    const onKey = (e: KeyboardEvent) => {
      if (e.key === '+' || e.key === '=') level = Math.min(LEVELS.length, level + 1);
      else if (e.key === '-') level = Math.max(0, level - 1);
      else if (e.key === 'Escape') level = 0;
      else return;
      e.preventDefault();
      e.stopPropagation();
      apply();
    };
    button.addEventListener('click', onClick);
    button.addEventListener('keydown', onKey);
    cleanups.push(() => { button.removeEventListener('click', onClick); button.removeEventListener('keydown', onKey); });
  });
  return { dispose: () => cleanups.forEach((c) => c()) };
}
