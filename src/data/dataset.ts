/**
 * {@link VqaDataset}: the dataset API notebooks and the trainer use.
 *
 * ```ts
 * const ds = await VqaDataset.fromParquet('data/vqav2_val.parquet');
 * ds.size;                                   // rows
 * ds.get(0);                                 // a VqaSample (no image decoded)
 * const { train, val } = ds.split({ train: 0.9, val: 0.1 }, { seed: 1 });
 * for (const batch of train.shuffle(7).batches(16)) { ... }   // samples, no pixels
 * const colours = ds.filter({ questionType: 'what color is the' });
 * const rgb = await ds.image(0);             // decoded on demand, LRU-cached
 * ds.fingerprint();                          // content hash for reports
 * ```
 *
 * A dataset is an immutable view: a source (an Arrow table read from Parquet, or an array of
 * samples) plus the row order. shuffle, split, filter, slice and select return new views that
 * share the source; nothing is copied.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type * as arrow from 'apache-arrow';
import { invalidParameterError, expectInteger } from '../util/validate.js';
import type { RgbImage } from '../vision/qwen2vl.js';
import { defaultImageCache, type ImageCache } from './images.js';
import { readParquetTable, writeParquetAtomic, type ParquetWriteOptions, type ParquetWriteResult } from './parquet.js';
import { permutation } from '../util/rng.js';
import { VqaTableBuilder, VqaTableReader, type ExtraColumnType } from './schema.js';
import type { VqaSample } from './types.js';

/** Where samples come from: by row number. */
interface SampleSource {
  readonly size: number;
  readonly name: string;
  sample(i: number): VqaSample;
  /** Names of the source's extra columns (kept in `sample.extra`). */
  readonly extraColumns: string[];
  readonly metadata: Record<string, string>;
}

class ArrowSource implements SampleSource {
  private readonly reader: VqaTableReader;
  constructor(
    table: arrow.Table,
    readonly name: string,
    baseDir: string,
    readonly metadata: Record<string, string>,
  ) {
    this.reader = new VqaTableReader(table, name, baseDir);
  }
  get size(): number {
    return this.reader.size;
  }
  get extraColumns(): string[] {
    return this.reader.extraColumns;
  }
  sample(i: number): VqaSample {
    return this.reader.sample(i);
  }
}

class ArraySource implements SampleSource {
  readonly extraColumns: string[];
  readonly metadata: Record<string, string> = {};
  constructor(
    private readonly samples: readonly VqaSample[],
    readonly name: string,
  ) {
    const extras = new Set<string>();
    for (const s of samples) for (const k of Object.keys(s.extra ?? {})) extras.add(k);
    this.extraColumns = [...extras];
  }
  get size(): number {
    return this.samples.length;
  }
  sample(i: number): VqaSample {
    return { ...this.samples[i]!, row: this.samples[i]!.row ?? i };
  }
}

/** Selects samples by their VQA fields; every given condition must hold. */
export interface SampleFilter {
  /** e.g. "yes/no", "number", "other", or several. */
  answerType?: string | string[];
  /** Exact question type(s) ("what color is the") or a pattern. */
  questionType?: string | string[] | RegExp;
  /** Reference answer(s), or a pattern. */
  answer?: string | string[] | RegExp;
  /** A pattern over the question text. */
  question?: RegExp;
  /** Only samples with (true) or without (false) annotator answers. */
  hasAnswers?: boolean;
  /** Only samples with this many images or more. */
  minImages?: number;
}

function matchesValue(value: string | undefined, cond: string | string[] | RegExp): boolean {
  if (value === undefined) return false;
  if (cond instanceof RegExp) return cond.test(value);
  return Array.isArray(cond) ? cond.includes(value) : value === cond;
}

function compileFilter(f: SampleFilter): (s: VqaSample) => boolean {
  const known = ['answerType', 'questionType', 'answer', 'question', 'hasAnswers', 'minImages'];
  for (const k of Object.keys(f))
    if (!known.includes(k)) throw invalidParameterError('filter', `an object with keys among ${known.join(', ')}`, k);
  return (s) =>
    (f.answerType === undefined || matchesValue(s.answerType, f.answerType)) &&
    (f.questionType === undefined || matchesValue(s.questionType, f.questionType)) &&
    (f.answer === undefined || matchesValue(s.answer, f.answer)) &&
    (f.question === undefined || f.question.test(s.question)) &&
    (f.hasAnswers === undefined || s.answers.length > 0 === f.hasAnswers) &&
    (f.minImages === undefined || (s.imagePaths?.length ?? 1) >= f.minImages);
}

export interface SplitOptions {
  /** Shuffle seed; the same seed and fractions give the same splits. Default 0. */
  seed?: number;
}

export class VqaDataset implements Iterable<VqaSample> {
  private constructor(
    private readonly src: SampleSource,
    /** Row order of this view; undefined = all rows in order. */
    private readonly order: Uint32Array | undefined,
    readonly imageCache: ImageCache,
  ) {}

  /**
   * Load a Parquet file of the VQA schema (see src/data/schema.ts): any file with the columns
   * id, image_path, question, answer loads; other columns are kept in `sample.extra`. Relative
   * image paths resolve against the file's folder. Throws naming the file and the column or row.
   */
  static async fromParquet(
    file: string,
    { imageCache = defaultImageCache }: { imageCache?: ImageCache } = {},
  ): Promise<VqaDataset> {
    const { table, metadata } = await readParquetTable(file);
    return new VqaDataset(
      new ArrowSource(table, file, path.dirname(path.resolve(file)), metadata),
      undefined,
      imageCache,
    );
  }

  /** Wrap an Arrow table of the VQA schema. `baseDir` resolves relative image paths (default: cwd). */
  static fromArrow(
    table: arrow.Table,
    {
      source = '<arrow table>',
      baseDir = process.cwd(),
      imageCache = defaultImageCache,
    }: { source?: string; baseDir?: string; imageCache?: ImageCache } = {},
  ): VqaDataset {
    return new VqaDataset(new ArrowSource(table, source, baseDir, {}), undefined, imageCache);
  }

  /** Wrap samples already in memory (they are not copied). */
  static fromSamples(
    samples: readonly VqaSample[],
    { source = '<samples>', imageCache = defaultImageCache }: { source?: string; imageCache?: ImageCache } = {},
  ): VqaDataset {
    if (!Array.isArray(samples)) throw invalidParameterError('samples', 'an array of VqaSample', samples);
    return new VqaDataset(new ArraySource(samples, source), undefined, imageCache);
  }

  /** Where the rows come from (a file path, or a label). */
  get source(): string {
    return this.src.name;
  }

  /** Footer metadata of the Parquet file (e.g. the synth generator's parameters). */
  get metadata(): Record<string, string> {
    return { ...this.src.metadata };
  }

  /** Number of samples in this view. */
  get size(): number {
    return this.order ? this.order.length : this.src.size;
  }

  /** Same as size, for code that expects arrays. */
  get length(): number {
    return this.size;
  }

  private rowOf(i: number): number {
    return this.order ? this.order[i]! : i;
  }

  /** The i-th sample of this view (0-based; negative counts from the end). Images are not decoded. */
  get(i: number): VqaSample {
    expectInteger('index', i, -this.size, this.size - 1);
    return this.src.sample(this.rowOf(i < 0 ? this.size + i : i));
  }

  *[Symbol.iterator](): Iterator<VqaSample> {
    for (let i = 0; i < this.size; i++) yield this.src.sample(this.rowOf(i));
  }

  /** Samples in batches of `size` (the last may be shorter unless dropLast). Images are not decoded. */
  *batches(size: number, { dropLast = false }: { dropLast?: boolean } = {}): Generator<VqaSample[]> {
    expectInteger('batch size', size, 1);
    for (let i = 0; i < this.size; i += size) {
      const end = Math.min(i + size, this.size);
      if (dropLast && end - i < size) return;
      const batch: VqaSample[] = [];
      for (let j = i; j < end; j++) batch.push(this.src.sample(this.rowOf(j)));
      yield batch;
    }
  }

  private view(order: Uint32Array): VqaDataset {
    return new VqaDataset(this.src, order, this.imageCache);
  }

  private rows(): Uint32Array {
    if (this.order) return this.order;
    const o = new Uint32Array(this.src.size);
    for (let i = 0; i < o.length; i++) o[i] = i;
    return o;
  }

  /** A view in a seeded random order (Fisher–Yates over mulberry32): same seed, same order. */
  shuffle(seed: number): VqaDataset {
    expectInteger('seed', seed);
    const rows = this.rows();
    const p = permutation(rows.length, seed);
    const out = new Uint32Array(rows.length);
    for (let i = 0; i < out.length; i++) out[i] = rows[p[i]!]!;
    return this.view(out);
  }

  /**
   * Split into named parts by fractions (which must sum to 1 within 1e-9): shuffles with the seed,
   * then cuts in the order given; rounding goes to the last part. Deterministic for a seed.
   * `ds.split({ train: 0.8, val: 0.1, test: 0.1 }, { seed: 0 })`
   */
  split<K extends string>(fractions: Record<K, number>, { seed = 0 }: SplitOptions = {}): Record<K, VqaDataset> {
    const names = Object.keys(fractions) as K[];
    if (names.length === 0) throw invalidParameterError('fractions', 'at least one named fraction', fractions);
    let total = 0;
    for (const k of names) {
      const f = fractions[k];
      if (typeof f !== 'number' || !(f >= 0 && f <= 1))
        throw invalidParameterError(`fractions.${k}`, 'number between 0 and 1', f);
      total += f;
    }
    if (Math.abs(total - 1) > 1e-9)
      throw invalidParameterError('fractions', 'fractions summing to 1', `a sum of ${total}` as unknown);
    const shuffled = this.shuffle(seed).rows();
    const out = {} as Record<K, VqaDataset>;
    let at = 0,
      acc = 0;
    names.forEach((k, idx) => {
      acc += fractions[k];
      const end = idx === names.length - 1 ? shuffled.length : Math.round(acc * shuffled.length);
      out[k] = this.view(shuffled.slice(at, end));
      at = end;
    });
    return out;
  }

  /** Samples matching a {@link SampleFilter} or a predicate, in this view's order. */
  filter(f: SampleFilter | ((s: VqaSample, i: number) => boolean)): VqaDataset {
    const pred = typeof f === 'function' ? f : f && typeof f === 'object' ? compileFilter(f) : undefined;
    if (!pred) throw invalidParameterError('filter', 'a SampleFilter object or a function', f);
    const keep: number[] = [];
    for (let i = 0; i < this.size; i++) {
      const r = this.rowOf(i);
      if (pred(this.src.sample(r), i)) keep.push(r);
    }
    return this.view(Uint32Array.from(keep));
  }

  /** Samples start..end-1 of this view (like Array.prototype.slice). */
  slice(start = 0, end = this.size): VqaDataset {
    const rows = this.rows();
    return this.view(rows.slice(start, end));
  }

  /** The first n samples. */
  take(n: number): VqaDataset {
    expectInteger('n', n, 0);
    return this.slice(0, n);
  }

  /** The samples at these positions of this view, in the order given. */
  select(indices: readonly number[]): VqaDataset {
    const out = new Uint32Array(indices.length);
    indices.forEach((i, k) => {
      expectInteger(`indices[${k}]`, i, 0, this.size - 1);
      out[k] = this.rowOf(i);
    });
    return this.view(out);
  }

  /** Counts of a field's values (answerType, questionType, answer, ...), largest first. */
  countBy(
    field: 'answerType' | 'questionType' | 'answer' | 'multipleChoiceAnswer' | ((s: VqaSample) => string | undefined),
  ): Map<string, number> {
    const get = typeof field === 'function' ? field : (s: VqaSample) => s[field] as string | undefined;
    const counts = new Map<string, number>();
    for (const s of this) {
      const v = get(s) ?? '(none)';
      counts.set(v, (counts.get(v) ?? 0) + 1);
    }
    return new Map([...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)));
  }

  /** Image paths of sample i, in prompt order. */
  imagePaths(i: number): string[] {
    const s = this.get(i);
    return s.imagePaths && s.imagePaths.length > 0 ? s.imagePaths : [s.imagePath];
  }

  /** The k-th image of sample i, decoded to 8-bit RGB (cached). Errors name the sample and file. */
  async image(i: number, k = 0): Promise<RgbImage> {
    const paths = this.imagePaths(i);
    expectInteger('image index', k, 0, paths.length - 1);
    try {
      return await this.imageCache.get(paths[k]!);
    } catch (err) {
      const s = this.get(i);
      throw new Error(`${this.source}: sample ${s.id} (row ${s.row}): image_path: ${(err as Error).message}`);
    }
  }

  /** Every image of sample i, decoded, in prompt order. */
  async images(i: number): Promise<RgbImage[]> {
    const n = this.imagePaths(i).length;
    const out: RgbImage[] = [];
    for (let k = 0; k < n; k++) out.push(await this.image(i, k));
    return out;
  }

  /**
   * A content hash of this view (sha256, hex): each sample's id, question, answers, answer and
   * question types and image file names (not folders, so a moved dataset keeps its fingerprint),
   * in view order. Same content and order, same fingerprint.
   */
  fingerprint(): string {
    const h = createHash('sha256');
    h.update(`vqalab-dataset-v1\n${this.size}\n`);
    for (const s of this) {
      const names = (s.imagePaths && s.imagePaths.length > 0 ? s.imagePaths : [s.imagePath]).map((p) =>
        path.basename(p),
      );
      h.update(
        JSON.stringify([s.id, names, s.question, s.answer, s.answers, s.answerType ?? null, s.questionType ?? null]),
      );
      h.update('\n');
    }
    return h.digest('hex');
  }

  /** Like fingerprint(), also hashing every image file's bytes (reads all images). */
  async fingerprintWithImages(): Promise<string> {
    const h = createHash('sha256');
    h.update(this.fingerprint());
    for (let i = 0; i < this.size; i++) {
      for (const p of this.imagePaths(i)) {
        try {
          h.update(readFileSync(p));
        } catch (err) {
          throw new Error(`${this.source}: sample ${this.get(i).id}: image_path: ${p}: ${(err as Error).message}`);
        }
      }
    }
    return h.digest('hex');
  }

  /**
   * Write this view to Parquet (atomically, in row groups). Image and video paths are written as
   * they are (absolute), or relative to the output's folder with `relativePaths`; rows with videos
   * keep them (`video_paths`, `video_fps`).
   */
  async writeParquet(
    file: string,
    options: ParquetWriteOptions & { relativePaths?: boolean } = {},
  ): Promise<ParquetWriteResult> {
    let multi = false,
      vqa = false,
      videos = false;
    for (const s of this) {
      if (s.imagePaths && s.imagePaths.length > 1) multi = true;
      if ((s.videoPaths && s.videoPaths.length > 0) || s.videoFps !== undefined) videos = true;
      if (
        s.answerType !== undefined ||
        s.questionType !== undefined ||
        s.multipleChoiceAnswer !== undefined ||
        s.imageId !== undefined
      )
        vqa = true;
    }
    const extras: Record<string, ExtraColumnType> = {};
    for (const c of this.src.extraColumns) {
      let type: ExtraColumnType = 'string';
      for (const s of this) {
        const v = s.extra?.[c];
        if (v === null || v === undefined) continue;
        type =
          typeof v === 'number'
            ? Number.isInteger(v) && Math.abs(v) < 2 ** 31
              ? 'int32'
              : 'float64'
            : typeof v === 'boolean'
              ? 'bool'
              : 'string';
        break;
      }
      extras[c] = type;
    }
    const builder = new VqaTableBuilder({
      imagePaths: multi,
      vqaColumns: vqa,
      videos,
      extras,
      relativeTo: options.relativePaths ? path.dirname(path.resolve(file)) : undefined,
    });
    const groupSize = options.rowGroupSize ?? 65_536;
    return writeParquetAtomic(
      file,
      async (write) => {
        for (const s of this) {
          builder.add(s);
          if (builder.length >= groupSize) await write(builder.build());
        }
        if (builder.length > 0 || this.size === 0) await write(builder.build());
      },
      options,
    );
  }

  /** A short text description: source, size, answer types. */
  toString(): string {
    const types = [...this.countBy('answerType')].map(([k, v]) => `${k}: ${v}`).join(', ');
    return `VqaDataset(${this.source}, ${this.size} samples${types ? `; ${types}` : ''})`;
  }
}
