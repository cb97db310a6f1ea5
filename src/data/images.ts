/**
 * Decoded images on demand, with a shared LRU cache bounded in bytes. Datasets never decode an
 * image until asked; a training loop that revisits samples (GRPO groups, epochs) decodes each
 * image once while it stays in the cache. Decoding is the vision processor's (sharp, EXIF
 * orientation, alpha dropped), so a cached image gives the same patches as a path would.
 */
import { decodeRgb, type RgbImage } from '../vision/qwen2vl.js';
import { expectInteger } from '../util/validate.js';

export class ImageCache {
  private readonly entries = new Map<string, RgbImage>();
  private readonly pending = new Map<string, Promise<RgbImage>>();
  private used = 0;
  hits = 0;
  misses = 0;

  /** `maxBytes`: decoded RGB bytes kept (default 256 MiB); 0 disables caching. */
  constructor(readonly maxBytes = 256 << 20) {
    expectInteger('maxBytes', maxBytes, 0);
  }

  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The decoded image at `file` (8-bit RGB), from the cache or decoded now. */
  async get(file: string): Promise<RgbImage> {
    const hit = this.entries.get(file);
    if (hit) {
      this.entries.delete(file);
      this.entries.set(file, hit); // most recently used last
      this.hits++;
      return hit;
    }
    const inflight = this.pending.get(file);
    if (inflight) return inflight;
    this.misses++;
    const p = decodeRgb(file).then(
      (img) => {
        this.pending.delete(file);
        this.put(file, img);
        return img;
      },
      (err) => {
        this.pending.delete(file);
        throw err;
      },
    );
    this.pending.set(file, p);
    return p;
  }

  private put(file: string, img: RgbImage): void {
    const size = img.data.byteLength;
    if (size > this.maxBytes) return;
    this.entries.set(file, img);
    this.used += size;
    for (const [k, v] of this.entries) {
      if (this.used <= this.maxBytes) break;
      this.entries.delete(k);
      this.used -= v.data.byteLength;
    }
  }

  clear(): void {
    this.entries.clear();
    this.used = 0;
  }
}

/** The cache datasets share unless given their own. */
export const defaultImageCache = new ImageCache();
