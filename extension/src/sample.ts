/**
 * Sample card behaviour: click, Enter or Space zooms an image, + and - change the zoom, Escape
 * resets. Zoom factors are whole multiples of the image's real pixels for small images (drawn
 * pixelated, so every source pixel stays a sharp square) and ×1, ×2, ×4 of the natural size for
 * photographs.
 */
import type { SamplePayload } from '../../src/display/types.js';
import type { Hydrated } from './common.js';

const MAX_LEVEL = 3;

/** The scale at zoom level k (1..3) for an image shown at `fitScale` when not zoomed. */
export function zoomScale(fitScale: number, level: number): number {
  const base = fitScale >= 1 ? Math.max(1, Math.floor(fitScale)) * 2 : 1;
  return base * 2 ** (level - 1);
}

export function hydrateSample(root: HTMLElement, payload: SamplePayload): Hydrated {
  const cleanups: (() => void)[] = [];
  root.querySelectorAll<HTMLButtonElement>('button.vqa-zoom').forEach((button) => {
    const ref = payload.images[Number(button.dataset.vqaZoom)];
    const img = button.querySelector('img');
    const figure = button.closest('figure');
    if (!ref || !img || !figure) return;
    const fit = {
      width: img.getAttribute('width'),
      height: img.getAttribute('height'),
      scale: Number(img.dataset.scale || 1),
      px: img.classList.contains('vqa-px'),
    };
    const caption = figure.querySelector('figcaption');
    const fitCaption = caption?.textContent ?? '';
    let level = 0;
    const apply = () => {
      const zoomed = level > 0;
      figure.classList.toggle('vqa-zoomed', zoomed);
      button.setAttribute('aria-pressed', String(zoomed));
      const scale = zoomed ? zoomScale(fit.scale, level) : fit.scale;
      img.setAttribute('width', zoomed ? String(Math.round(ref.width * scale)) : fit.width!);
      img.setAttribute('height', zoomed ? String(Math.round(ref.height * scale)) : fit.height!);
      img.classList.toggle('vqa-px', zoomed ? scale >= 2 : fit.px);
      if (caption) caption.textContent = zoomed ? `${ref.width}×${ref.height} · zoom ${scale}×` : fitCaption;
    };
    const onClick = () => {
      level = level > 0 ? 0 : 1;
      apply();
    };
    const onKey = (e: KeyboardEvent) => {
      if (e.key === '+' || e.key === '=') level = Math.min(MAX_LEVEL, level + 1);
      else if (e.key === '-') level = Math.max(0, level - 1);
      else if (e.key === 'Escape' && level > 0)
        level = 0; // unzoomed, Escape belongs to the enclosing widget
      else return;
      e.preventDefault();
      e.stopPropagation();
      apply();
    };
    button.addEventListener('click', onClick);
    button.addEventListener('keydown', onKey);
    cleanups.push(() => {
      button.removeEventListener('click', onClick);
      button.removeEventListener('keydown', onKey);
    });
  });
  return { dispose: () => cleanups.forEach((c) => c()) };
}
