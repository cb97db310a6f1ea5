/**
 * Image parts of a request → encoded image bytes, with the limits a public endpoint needs:
 * data URLs (strict base64), local files only under an allowed root (symlinks resolved, so a
 * link cannot lead out of it), no remote fetching (the server never becomes a proxy), a cap on
 * decoded bytes and on pixels (read from the header before anything is decoded).
 */
import { realpath, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { ApiError, badRequest } from './errors.js';

export interface MediaLimits {
  /** Folder local image paths must lie under (resolved); undefined: local paths refused. */
  allowedMediaRoot?: string;
  /** Most bytes of one encoded image (default 16 MiB). */
  maxImageBytes: number;
  /** Most pixels (width × height) of one image (default 4096 × 4096). */
  maxImagePixels: number;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

function fmtBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} bytes`;
}

/** Decode a data: URL's payload; errors name the part. */
export function decodeDataUrl(url: string, param: string, maxBytes: number): Buffer {
  const comma = url.indexOf(',');
  if (comma < 0) throw badRequest(`${param}: a data URL needs "data:<mime>;base64,<data>"`, param, 'invalid_image_url');
  const meta = url.slice(5, comma);
  if (!/;base64$/i.test(meta))
    throw badRequest(
      `${param}: only base64 data URLs are accepted (data:image/png;base64,...)`,
      param,
      'invalid_image_url',
    );
  const mime = meta.slice(0, -7).toLowerCase();
  if (mime !== '' && !mime.startsWith('image/'))
    throw badRequest(`${param}: the data URL's type is "${mime}", not an image`, param, 'invalid_image_url');
  const data = url.slice(comma + 1).replace(/\s+/g, '');
  // Four base64 characters per three bytes: refuse before allocating anything large.
  const estimate = Math.floor((data.length * 3) / 4);
  if (estimate > maxBytes) {
    throw new ApiError(
      400,
      `${param}: the image is ${fmtBytes(estimate)}, more than this server's limit of ${fmtBytes(maxBytes)} per image`,
      'invalid_request_error',
      param,
      'image_too_large',
    );
  }
  const standard = BASE64.test(data) && data.length % 4 === 0;
  if (!standard && !BASE64URL.test(data)) {
    const bad = data.search(/[^A-Za-z0-9+/=_-]/);
    throw badRequest(
      `${param}: the data URL is not valid base64${bad >= 0 ? ` (character ${JSON.stringify(data[bad])} at offset ${bad})` : ' (bad length or padding)'}`,
      param,
      'invalid_base64',
    );
  }
  const bytes = Buffer.from(data, standard ? 'base64' : 'base64url');
  if (bytes.length === 0) throw badRequest(`${param}: the data URL is empty`, param, 'invalid_image_url');
  return bytes;
}

/** A local path from a file: URL or an absolute path, checked against the allowed root. */
async function readLocal(ref: string, param: string, limits: MediaLimits): Promise<Buffer> {
  if (!limits.allowedMediaRoot) {
    throw new ApiError(
      403,
      `${param}: this server does not read local files; send the image as a data URL (or start it with --allowed-media-root)`,
      'permission_error',
      param,
      'local_media_disabled',
    );
  }
  let file: string;
  try {
    file = ref.startsWith('file:') ? fileURLToPath(ref) : ref;
  } catch (err) {
    throw badRequest(`${param}: ${(err as Error).message}`, param, 'invalid_image_url');
  }
  if (!path.isAbsolute(file)) throw badRequest(`${param}: local paths must be absolute`, param, 'invalid_image_url');
  const root = await realpath(limits.allowedMediaRoot);
  let real: string;
  try {
    real = await realpath(file);
  } catch {
    // Do not tell whether a path outside the root exists.
    const inside = path.resolve(file).startsWith(root + path.sep);
    if (!inside)
      throw new ApiError(
        403,
        `${param}: ${file} is outside the allowed media root`,
        'permission_error',
        param,
        'media_outside_root',
      );
    throw badRequest(`${param}: ${file}: no such file`, param, 'image_not_found');
  }
  if (real !== root && !real.startsWith(root + path.sep)) {
    throw new ApiError(
      403,
      `${param}: ${file} is outside the allowed media root`,
      'permission_error',
      param,
      'media_outside_root',
    );
  }
  const st = await stat(real);
  if (!st.isFile()) throw badRequest(`${param}: ${file} is not a file`, param, 'invalid_image_url');
  if (st.size > limits.maxImageBytes) {
    throw new ApiError(
      400,
      `${param}: the image is ${fmtBytes(st.size)}, more than this server's limit of ${fmtBytes(limits.maxImageBytes)} per image`,
      'invalid_request_error',
      param,
      'image_too_large',
    );
  }
  return readFile(real);
}

/** An image part, checked: its bytes and its size as the processor will see it (EXIF orientation applied). */
export interface CheckedImage {
  bytes: Buffer;
  width: number;
  height: number;
  param: string;
}

/** The encoded bytes of one image_url part, checked to be a decodable image within the limits (its header only: cheap). */
export async function loadImagePart(url: string, param: string, limits: MediaLimits): Promise<CheckedImage> {
  let bytes: Buffer;
  if (url.startsWith('data:')) bytes = decodeDataUrl(url, param, limits.maxImageBytes);
  else if (url.startsWith('file:') || path.isAbsolute(url)) bytes = await readLocal(url, param, limits);
  else if (/^https?:/i.test(url))
    throw badRequest(
      `${param}: this server does not fetch remote images; send the image as a data URL`,
      param,
      'remote_media_disabled',
    );
  else
    throw badRequest(
      `${param}: expected a data URL (data:image/png;base64,...) or a file URL; got ${JSON.stringify(url.slice(0, 40))}`,
      param,
      'invalid_image_url',
    );
  let meta: { width?: number; height?: number; autoOrient?: { width: number; height: number } };
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw badRequest(
      `${param}: cannot decode the image (${(err as Error).message.split('\n')[0]})`,
      param,
      'invalid_image',
    );
  }
  const w = meta.width ?? 0,
    h = meta.height ?? 0;
  if (!(w > 0 && h > 0))
    throw badRequest(`${param}: cannot decode the image (no size in its header)`, param, 'invalid_image');
  if (w * h > limits.maxImagePixels) {
    throw new ApiError(
      400,
      `${param}: the image is ${w}x${h} = ${(w * h).toLocaleString('en-US')} pixels, more than this server's limit of ${limits.maxImagePixels.toLocaleString('en-US')}`,
      'invalid_request_error',
      param,
      'image_too_large',
    );
  }
  return { bytes, width: meta.autoOrient?.width ?? w, height: meta.autoOrient?.height ?? h, param };
}
