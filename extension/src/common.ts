/**
 * Shared by the browser code of every widget: the hydrate contract, the one-time CSS injection,
 * theme colours for plots, and the floating tooltip.
 */
import { VQA_CSS } from '../../src/display/render/style.js';
import type { PlotTheme } from '../../src/display/render/metrics.js';

/** What `hydrate` returns: live updates (true when handled in place) and cleanup. */
export interface Hydrated {
  /** Apply a new payload of the same type without rebuilding the DOM; false means "rebuild me". */
  update?(payload: unknown): boolean;
  /** The container changed size (JupyterLab panel resize). */
  resize?(): void;
  dispose(): void;
}

export const NOTHING: Hydrated = { dispose() {} };

/** Add the widgets' CSS to the document once. */
export function ensureStyle(doc: Document = document): void {
  if (doc.getElementById('vqalab-css')) return;
  const style = doc.createElement('style');
  style.id = 'vqalab-css';
  style.textContent = VQA_CSS;
  doc.head.appendChild(style);
}

/** Plot colours from the element's resolved theme variables (JupyterLab light/dark, or the fallbacks). */
export function plotTheme(el: Element): PlotTheme {
  const cs = getComputedStyle(el);
  const v = (name: string, fallback: string) => cs.getPropertyValue(name).trim() || fallback;
  return {
    fg: v('--vqa-fg', '#1f2328'),
    grid: v('--vqa-border', '#d0d7de'),
    bg: 'rgba(0,0,0,0)',
    font: cs.fontFamily || 'sans-serif',
  };
}

/** Call `fn` when the theme switches: JupyterLab flips attributes on <body>, a report page sets data-theme on <html>. */
export function onThemeChange(fn: () => void): () => void {
  const obs = new MutationObserver(() => fn());
  obs.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-light', 'data-jp-theme-name'] });
  obs.observe(document.documentElement, { attributes: true, attributeFilter: ['data-theme'] });
  return () => obs.disconnect();
}

let tip: HTMLDivElement | undefined;

/** One floating tooltip per document, for token log-probs. */
export function showTip(text: string, x: number, y: number): void {
  if (!tip || !tip.isConnected) {
    tip = document.createElement('div');
    tip.className = 'vqa vqa-tip';
    tip.setAttribute('role', 'tooltip');
    document.body.appendChild(tip);
  }
  tip.textContent = text;
  tip.style.display = 'block';
  const w = tip.offsetWidth;
  tip.style.left = `${Math.max(4, Math.min(x + 12, window.innerWidth - w - 4))}px`;
  tip.style.top = `${y + 16}px`;
}

export function hideTip(): void {
  if (tip) tip.style.display = 'none';
}

/** querySelector that insists: a missing element is a renderer bug, reported as such. */
export function must<T extends Element>(root: ParentNode, selector: string): T {
  const el = root.querySelector<T>(selector);
  if (!el) throw new Error(`vqalab: element ${selector} missing from the rendered widget`);
  return el;
}
