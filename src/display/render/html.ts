/**
 * Small helpers for building HTML strings. Everything the renderers take from a payload goes
 * through `esc` (text and attribute values alike), so no payload can inject markup or script.
 * This module, like all of src/display/render, uses no DOM and no Node API: it runs in Node (the
 * text/html fallback), in JupyterLab and in a report page.
 */

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escape text for element content and for quoted attribute values. */
export function esc(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** Format a number for display: `—` for null/NaN, fixed digits otherwise, integers as is. */
export function fmt(value: number | null | undefined, digits = 3): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  if (!Number.isFinite(value)) return value > 0 ? '∞' : '−∞';
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value).replace(/^-/, '−');
  const abs = Math.abs(value);
  const s = abs !== 0 && (abs < 10 ** -digits || abs >= 1e6) ? value.toExponential(2) : value.toFixed(digits);
  return s.replace(/^-/, '−');
}

/** Like `fmt` with an explicit sign (advantages). */
export function fmtSigned(value: number | null | undefined, digits = 3): string {
  const s = fmt(value, digits);
  return value !== null && value !== undefined && value > 0 ? `+${s}` : s;
}

export function fmtPercent(fraction: number, digits = 0): string {
  return `${(fraction * 100).toFixed(digits)}%`;
}

/** Seconds as `12.3s`, `4m05s`, `2h10m` (also used for ETA). */
export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
  const m = Math.floor(seconds / 60),
    s = Math.round(seconds % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** Build `class="a b"` from names, skipping falsy ones. */
export function classes(...names: (string | false | null | undefined)[]): string {
  return names.filter(Boolean).join(' ');
}

/** Shorten long text for summaries (whole text stays in the payload). */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/** Clamp into [lo, hi]. */
export function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/**
 * A background colour for a value in [-1, 1]: green for positive, red for negative, alpha by
 * magnitude. Uses theme variables so it follows JupyterLab's light and dark themes.
 */
export function signedTint(x: number): string {
  const a = clamp(Math.abs(x), 0, 1) * 0.45;
  const colour = x >= 0 ? 'var(--vqa-pos-rgb)' : 'var(--vqa-neg-rgb)';
  return `background: rgba(${colour}, ${a.toFixed(3)})`;
}

/**
 * The size to show an image at inside a box: small images are enlarged by a whole factor (drawn
 * with square pixels: `pixelated`), large ones scaled down to fit, smoothly.
 */
export function fitImage(
  width: number,
  height: number,
  boxW: number,
  boxH: number,
): { width: number; height: number; scale: number; pixelated: boolean } {
  const w = Math.max(1, width),
    h = Math.max(1, height);
  let scale = Math.min(boxW / w, boxH / h);
  if (scale >= 1) scale = Math.floor(scale);
  return {
    width: Math.max(1, Math.round(w * scale)),
    height: Math.max(1, Math.round(h * scale)),
    scale,
    pixelated: scale >= 2,
  };
}

/** An <img> of an ImageRef-like value fitted into a box (alt and src escaped). */
export function imgTag(
  img: { src: string; width: number; height: number; alt: string },
  boxW: number,
  boxH: number,
  extra = '',
): string {
  const f = fitImage(img.width, img.height, boxW, boxH);
  return `<img src="${esc(img.src)}" alt="${esc(img.alt)}" width="${f.width}" height="${f.height}"${f.pixelated ? ' class="vqa-px"' : ''} data-scale="${Number(f.scale.toFixed(4))}" loading="lazy"${extra}>`;
}

/** Normalise an answer the way VQA compares them loosely: case, surrounding space and punctuation. */
export function normalizeAnswer(answer: string): string {
  return answer
    .toLowerCase()
    .trim()
    .replace(/[.!?,;:]+$/g, '')
    .replace(/\s+/g, ' ');
}

/** Count duplicate answers; most frequent first, ties in first-seen order. */
export function countAnswers(answers: readonly string[]): { answer: string; count: number; key: string }[] {
  const byKey = new Map<string, { answer: string; count: number; key: string; first: number }>();
  answers.forEach((a, i) => {
    const key = normalizeAnswer(a);
    const entry = byKey.get(key);
    if (entry) entry.count++;
    else byKey.set(key, { answer: a, count: 1, key, first: i });
  });
  return [...byKey.values()]
    .sort((x, y) => y.count - x.count || x.first - y.first)
    .map(({ answer, count, key }) => ({ answer, count, key }));
}

/** Mean and population standard deviation of the finite values (NaN for none). */
export function meanStd(values: readonly (number | null | undefined)[]): { mean: number; std: number; n: number } {
  const xs = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (xs.length === 0) return { mean: NaN, std: NaN, n: 0 };
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  return { mean, std: Math.sqrt(variance), n: xs.length };
}
