/**
 * Images for payloads (Node side, sharp): a file or buffer becomes an inline data URL of bounded
 * size, and a sample becomes a PNG card (image + question + answers + prediction) for viewers that
 * show only images.
 */
import sharp, { type OverlayOptions } from 'sharp';
import type { ImageRef, SamplePayload } from './types.js';
import { countAnswers, fmt, truncate } from './render/html.js';
import { predictionMatches } from './render/sample.js';
import { invalidParameterError } from '../util/validate.js';

export interface ImageRefOptions {
  alt: string;
  /** Longest side after downscaling (never upscaled here; the widget zooms crisply). Default 448. */
  maxSide?: number;
  /** JPEG quality for photographs; images with transparency or few pixels stay PNG. Default 85. */
  quality?: number;
}

/** Read an image (path or encoded bytes), bound its size, and return it as a self-contained ImageRef. */
export async function imageRef(input: string | Uint8Array, opts: ImageRefOptions): Promise<ImageRef> {
  if (typeof input !== 'string' && !(input instanceof Uint8Array))
    throw invalidParameterError('input', 'image path or encoded image bytes', input);
  if (typeof opts?.alt !== 'string') throw invalidParameterError('alt', 'string (alt text for the image)', opts?.alt);
  const maxSide = opts.maxSide ?? 448;
  let img = sharp(input, { failOn: 'error' }).rotate();
  let meta;
  try {
    meta = await sharp(input).metadata();
  } catch (err) {
    const where = typeof input === 'string' ? input : `${input.length} bytes`;
    throw new Error(`cannot read image ${where}: ${(err as Error).message}`);
  }
  const w = meta.width ?? 0,
    h = meta.height ?? 0;
  if (Math.max(w, h) > maxSide) img = img.resize({ width: maxSide, height: maxSide, fit: 'inside' });
  // PNG/GIF sources (synthetic shapes, diagrams), transparent and tiny images stay lossless so
  // zooming shows their real pixels; photographs (JPEG, WebP, ...) become JPEG.
  const lossless = Boolean(meta.hasAlpha) || meta.format === 'png' || meta.format === 'gif' || w * h <= 128 * 128;
  const { data, info } = lossless
    ? await img.png().toBuffer({ resolveWithObject: true })
    : await img.jpeg({ quality: opts.quality ?? 85, mozjpeg: true }).toBuffer({ resolveWithObject: true });
  return {
    src: `data:image/${lossless ? 'png' : 'jpeg'};base64,${data.toString('base64')}`,
    width: info.width,
    height: info.height,
    alt: opts.alt,
  };
}

/** The bytes of a data URL produced by `imageRef`. */
export function dataUrlBytes(src: string): Buffer {
  const comma = src.indexOf(',');
  return Buffer.from(src.slice(comma + 1), 'base64');
}

function xml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Greedy word wrap by character count (the card font is close to monospaced in width per glyph). */
export function wrap(text: string, width: number, maxLines: number): string[] {
  const words = text.split(/\s+/).filter(Boolean);
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    const w = word.length > width ? `${word.slice(0, width - 1)}…` : word;
    if (line && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  if (lines.length > maxLines) {
    lines.length = maxLines;
    lines[maxLines - 1] = truncate(`${lines[maxLines - 1]} …`, width);
  }
  return lines;
}

const CARD_IMAGE = 320;
const PANEL = 380;

/**
 * The sample card as a PNG: the (first) image scaled to fit 320 px (small images are enlarged by an
 * integer factor with nearest-neighbour so pixels stay crisp) beside a text panel.
 */
export async function samplePng(p: SamplePayload): Promise<Buffer> {
  const first = p.images[0];
  let imgBuf: Buffer | undefined,
    iw = 0,
    ih = 0;
  if (first) {
    const src = dataUrlBytes(first.src);
    const side = Math.max(first.width, first.height, 1);
    const pipeline =
      side < CARD_IMAGE / 2
        ? sharp(src).resize({ width: first.width * Math.floor(CARD_IMAGE / side), kernel: 'nearest' })
        : sharp(src).resize({ width: CARD_IMAGE, height: CARD_IMAGE, fit: 'inside' });
    const out = await pipeline.png().toBuffer({ resolveWithObject: true });
    imgBuf = out.data;
    iw = out.info.width;
    ih = out.info.height;
  }
  const lines: { text: string; size: number; weight?: string; colour?: string }[] = [];
  lines.push({ text: `#${p.id}${p.answerType ? ` · ${p.answerType}` : ''}`, size: 12, colour: '#57606a' });
  for (const l of wrap(p.question, 38, 4)) lines.push({ text: l, size: 16, weight: 'bold' });
  const answers = countAnswers(p.answers)
    .slice(0, 6)
    .map(({ answer, count }) => `${truncate(answer, 20)} ×${count}`);
  lines.push({ text: 'answers:', size: 12, colour: '#57606a' });
  for (const l of wrap(answers.join(', '), 46, 3)) lines.push({ text: l, size: 13 });
  if (p.prediction !== undefined) {
    const n = predictionMatches(p);
    for (const l of wrap(`prediction: ${p.prediction} (${n}/${p.answers.length})`, 44, 2))
      lines.push({ text: l, size: 14, weight: 'bold', colour: n >= 3 ? '#1a7f37' : n > 0 ? '#9a6700' : '#cf222e' });
  }
  for (const r of (p.rewards ?? []).slice(0, 6))
    lines.push({ text: truncate(`${r.name}: ${r.error ? 'error' : fmt(r.score)}`, 46), size: 13 });
  let y = 14;
  const texts = lines
    .map((l) => {
      y += l.size + 6;
      return `<text x="12" y="${y}" font-size="${l.size}"${l.weight ? ` font-weight="${l.weight}"` : ''} fill="${l.colour ?? '#1f2328'}">${xml(l.text)}</text>`;
    })
    .join('');
  const height = Math.max(ih + 16, y + 14, 120);
  const width = (imgBuf ? iw + 16 : 0) + PANEL;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${PANEL}" height="${height}" font-family="DejaVu Sans, sans-serif">${texts}</svg>`;
  const layers: OverlayOptions[] = [{ input: Buffer.from(svg), left: imgBuf ? iw + 16 : 0, top: 0 }];
  if (imgBuf) layers.push({ input: imgBuf, left: 8, top: 8 });
  return sharp({ create: { width, height, channels: 3, background: '#ffffff' } })
    .composite(layers)
    .png({ compressionLevel: 9 })
    .toBuffer();
}
