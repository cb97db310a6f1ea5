/**
 * The VQA table schema and its mapping onto {@link VqaSample}.
 *
 * Required columns (the seed's): `id` (string; integers are accepted and read as strings),
 * `image_path` (string: absolute, or relative to the Parquet file's folder), `question` (string),
 * `answer` (string, null when unknown: test splits).
 * Known optional columns: `answers` (list of strings: the 10 annotator answers), `image_paths`
 * (list of strings: every image of a multi-image sample, in prompt order), `multiple_choice_answer`,
 * `answer_type`, `question_type` (strings), `image_id` (integer), `video_path` (string: a folder of
 * frames, src/vision/video.ts) or `video_paths` (list of them), `video_fps` (number: the frames'
 * rate when the folder has no video.json). A video row's `image_path` names a still (its first
 * frame, for previews and image-only tools).
 * Any other column is kept, value by value, in `VqaSample.extra`.
 */
import path from 'node:path';
import * as arrow from 'apache-arrow';
import type { VqaSample } from './types.js';

export const REQUIRED_COLUMNS = ['id', 'image_path', 'question', 'answer'] as const;
export const OPTIONAL_COLUMNS = [
  'answers',
  'image_paths',
  'multiple_choice_answer',
  'answer_type',
  'question_type',
  'image_id',
  'video_path',
  'video_paths',
  'video_fps',
] as const;
const KNOWN = new Set<string>([...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS]);

type Kind = 'string' | 'string-or-int' | 'string-list' | 'int' | 'number';

const EXPECTED: Record<string, Kind> = {
  id: 'string-or-int',
  image_path: 'string',
  question: 'string',
  answer: 'string',
  answers: 'string-list',
  image_paths: 'string-list',
  multiple_choice_answer: 'string',
  answer_type: 'string',
  question_type: 'string',
  image_id: 'int',
  video_path: 'string',
  video_paths: 'string-list',
  video_fps: 'number',
};

const KIND_TEXT: Record<Kind, string> = {
  string: 'strings',
  'string-or-int': 'strings or integers',
  'string-list': 'lists of strings',
  int: 'integers',
  number: 'numbers',
};

function isString(t: arrow.DataType): boolean {
  if (arrow.DataType.isDictionary(t)) return isString(t.dictionary);
  return arrow.DataType.isUtf8(t) || arrow.DataType.isLargeUtf8(t);
}

function matches(kind: Kind, t: arrow.DataType): boolean {
  switch (kind) {
    case 'string':
      return isString(t);
    case 'int':
      return arrow.DataType.isInt(t);
    case 'number':
      return arrow.DataType.isInt(t) || arrow.DataType.isFloat(t);
    case 'string-or-int':
      return isString(t) || arrow.DataType.isInt(t);
    case 'string-list':
      return arrow.DataType.isList(t) && isString(t.children[0]!.type);
  }
}

/** JS value of an Arrow cell as plain JSON-like data (bigints to numbers when safe, lists to arrays). */
export function plainValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof arrow.Vector) return [...v].map(plainValue);
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, plainValue);
  if (typeof v === 'object' && typeof (v as { toJSON?: () => unknown }).toJSON === 'function')
    return (v as { toJSON: () => unknown }).toJSON();
  return v;
}

/**
 * Reads samples out of an Arrow table of the VQA schema. Construction checks the schema (and
 * nulls in required columns) and throws naming the source, the column, the row and what was
 * expected.
 */
export class VqaTableReader {
  readonly size: number;
  readonly columns: string[];
  readonly extraColumns: string[];
  private readonly cols: Record<string, arrow.Vector | undefined> = {};

  constructor(
    readonly table: arrow.Table,
    readonly source: string,
    private readonly baseDir: string,
  ) {
    this.size = table.numRows;
    this.columns = table.schema.fields.map((f) => f.name);
    const missing = REQUIRED_COLUMNS.filter((c) => !this.columns.includes(c));
    if (missing.length > 0) {
      throw new Error(
        `${source}: missing required column${missing.length > 1 ? 's' : ''} ${missing.map((c) => `"${c}"`).join(', ')}; a VQA table needs id, image_path, question, answer (it has: ${this.columns.join(', ') || 'no columns'})`,
      );
    }
    for (const f of table.schema.fields) {
      const kind = EXPECTED[f.name];
      if (kind && !matches(kind, f.type))
        throw new Error(`${source}: column "${f.name}" holds ${f.type}; expected ${KIND_TEXT[kind]}`);
      this.cols[f.name] = table.getChild(f.name) ?? undefined;
    }
    for (const c of ['id', 'image_path', 'question'] as const) {
      const v = this.cols[c]!;
      if (v.nullCount > 0) {
        let row = 0;
        while (row < v.length && v.isValid(row)) row++;
        throw new Error(
          `${source}: row ${row}: column "${c}" is null; expected ${c === 'id' ? 'an id' : c === 'question' ? 'a question' : 'an image path'}`,
        );
      }
    }
    this.extraColumns = this.columns.filter((c) => !KNOWN.has(c));
  }

  private str(name: string, i: number): string | undefined {
    const v = this.cols[name]?.get(i);
    return v === null || v === undefined ? undefined : String(v);
  }

  private resolve(p: string): string {
    return path.isAbsolute(p) ? p : path.resolve(this.baseDir, p);
  }

  /** The value of one column at row i, as plain data. */
  value(name: string, i: number): unknown {
    return plainValue(this.cols[name]?.get(i));
  }

  sample(i: number): VqaSample {
    const answer = this.str('answer', i) ?? '';
    const answersVal = this.cols.answers?.get(i) as arrow.Vector | null | undefined;
    const answers = answersVal
      ? [...answersVal].filter((a) => a !== null).map(String)
      : this.cols.answer?.isValid(i)
        ? [answer]
        : [];
    const imagePath = this.resolve(this.str('image_path', i)!);
    const s: VqaSample = {
      id: this.str('id', i)!,
      imagePath,
      question: this.str('question', i)!,
      answer,
      answers,
      row: i,
    };
    const ipv = this.cols.image_paths?.get(i) as arrow.Vector | null | undefined;
    if (ipv && ipv.length > 0) s.imagePaths = [...ipv].map((p) => this.resolve(String(p)));
    const vps = this.cols.video_paths?.get(i) as arrow.Vector | null | undefined;
    const vp = this.str('video_path', i);
    if (vps && vps.length > 0) s.videoPaths = [...vps].map((p) => this.resolve(String(p)));
    else if (vp !== undefined) s.videoPaths = [this.resolve(vp)];
    const fps = this.cols.video_fps?.get(i);
    if (fps !== null && fps !== undefined) {
      const f = Number(fps);
      if (!(f > 0 && Number.isFinite(f)))
        throw new Error(`${this.source}: row ${i}: column "video_fps" is ${f}; expected a positive frame rate`);
      s.videoFps = f;
    }
    const mc = this.str('multiple_choice_answer', i);
    if (mc !== undefined) s.multipleChoiceAnswer = mc;
    const at = this.str('answer_type', i);
    if (at !== undefined) s.answerType = at;
    const qt = this.str('question_type', i);
    if (qt !== undefined) s.questionType = qt;
    const iid = this.cols.image_id?.get(i);
    if (iid !== null && iid !== undefined) s.imageId = Number(iid);
    if (this.extraColumns.length > 0) {
      s.extra = {};
      for (const c of this.extraColumns) s.extra[c] = this.value(c, i);
    }
    return s;
  }
}

/**
 * A Utf8 column from JS strings, encoded straight into one buffer (arrow's generic builder costs
 * ~6 µs a string; this, ~0.1).
 */
export function utf8Data(values: readonly (string | null)[]): arrow.Data<arrow.Utf8> {
  const n = values.length;
  let total = 0,
    nulls = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) nulls++;
    else total += Buffer.byteLength(v, 'utf8');
  }
  const bytes = Buffer.allocUnsafe(total);
  const offsets = new Int32Array(n + 1);
  const bitmap = nulls > 0 ? new Uint8Array((n + 7) >> 3) : undefined;
  let at = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v !== null && v !== undefined) {
      at += bytes.write(v, at, 'utf8');
      if (bitmap) bitmap[i >> 3]! |= 1 << (i & 7);
    }
    offsets[i + 1] = at;
  }
  return arrow.makeData({
    type: new arrow.Utf8(),
    length: n,
    nullCount: nulls,
    valueOffsets: offsets,
    data: new Uint8Array(bytes.buffer, bytes.byteOffset, total),
    nullBitmap: bitmap,
  });
}

/** A List<Utf8> column from arrays of strings (no null lists). */
export function utf8ListData(values: readonly (readonly string[])[]): arrow.Data<arrow.List<arrow.Utf8>> {
  const n = values.length;
  const offsets = new Int32Array(n + 1);
  const flat: string[] = [];
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    for (let k = 0; k < v.length; k++) flat.push(v[k]!);
    offsets[i + 1] = flat.length;
  }
  return arrow.makeData({
    type: new arrow.List(new arrow.Field('item', new arrow.Utf8(), true)),
    length: n,
    nullCount: 0,
    valueOffsets: offsets,
    child: utf8Data(flat),
  });
}

/** Column types for extra columns written by {@link VqaTableBuilder}. */
export type ExtraColumnType = 'string' | 'int32' | 'float64' | 'bool';

export interface VqaTableBuilderOptions {
  /** Write `answers` (default true). */
  answers?: boolean;
  /** Write `image_paths` (multi-image datasets). */
  imagePaths?: boolean;
  /** Write the VQAv2 columns multiple_choice_answer, answer_type, question_type, image_id. */
  vqaColumns?: boolean;
  /** Extra columns, in order, with their types; values come from `sample.extra[name]`. */
  extras?: Record<string, ExtraColumnType>;
  /** Write `video_paths` (each row's frame folders; empty for a row without video) and `video_fps`. */
  videos?: boolean;
  /** Write image (and video) paths relative to this folder (portable datasets); default: as given. */
  relativeTo?: string;
}

/**
 * Appends strings straight into a growing UTF-8 buffer with offsets (and a null bitmap when
 * needed): rows become bytes as they arrive, so a row group's worth of JS strings is never kept
 * alive (less old-generation garbage than holding arrays of strings until the group is full).
 */
export class Utf8ColumnBuilder {
  private bytes = Buffer.allocUnsafe(1 << 16);
  private used = 0;
  private offsets = new Int32Array(1024);
  private bitmap: Uint8Array | undefined;
  private nulls = 0;
  length = 0;

  append(v: string | null | undefined): void {
    const n = this.length;
    if (n + 2 > this.offsets.length) {
      const o = new Int32Array(this.offsets.length * 2);
      o.set(this.offsets);
      this.offsets = o;
    }
    if (v === null || v === undefined) {
      if (!this.bitmap) {
        this.bitmap = new Uint8Array(Math.max(128, this.offsets.length >> 3));
        this.bitmap.fill(0xff, 0, (n + 7) >> 3);
      }
      this.nulls++;
    } else {
      const need = this.used + v.length * 3;
      if (need > this.bytes.length) {
        const b = Buffer.allocUnsafe(Math.max(need, this.bytes.length * 2));
        this.bytes.copy(b, 0, 0, this.used);
        this.bytes = b;
      }
      this.used += this.bytes.write(v, this.used, 'utf8');
    }
    if (this.bitmap) {
      if (n >> 3 >= this.bitmap.length) {
        const bm = new Uint8Array(this.bitmap.length * 2);
        bm.set(this.bitmap);
        this.bitmap = bm;
      }
      if (v === null || v === undefined) this.bitmap[n >> 3]! &= ~(1 << (n & 7));
      else this.bitmap[n >> 3]! |= 1 << (n & 7);
    }
    this.offsets[n + 1] = this.used;
    this.length = n + 1;
  }

  /** The column so far as Arrow data; the builder starts over. */
  finish(): arrow.Data<arrow.Utf8> {
    const n = this.length;
    const data = arrow.makeData({
      type: new arrow.Utf8(),
      length: n,
      nullCount: this.nulls,
      valueOffsets: this.offsets.slice(0, n + 1),
      data: new Uint8Array(this.bytes.subarray(0, this.used)),
      nullBitmap: this.bitmap ? this.bitmap.slice(0, (n + 7) >> 3) : undefined,
    });
    this.used = 0;
    this.length = 0;
    this.nulls = 0;
    this.bitmap = undefined;
    this.offsets = new Int32Array(1024);
    return data;
  }
}

/** A List<Utf8> column built row by row (no null lists). */
export class Utf8ListColumnBuilder {
  private readonly child = new Utf8ColumnBuilder();
  private offsets: number[] = [0];

  get length(): number {
    return this.offsets.length - 1;
  }

  append(values: readonly string[]): void {
    for (let i = 0; i < values.length; i++) this.child.append(values[i]!);
    this.offsets.push(this.child.length);
  }

  finish(): arrow.Data<arrow.List<arrow.Utf8>> {
    const n = this.length;
    const data = arrow.makeData({
      type: new arrow.List(new arrow.Field('item', new arrow.Utf8(), true)),
      length: n,
      nullCount: 0,
      valueOffsets: Int32Array.from(this.offsets),
      child: this.child.finish(),
    });
    this.offsets = [0];
    return data;
  }
}

/**
 * Collects samples and builds Arrow tables of the VQA schema, one per call to `build()` (a
 * Parquet row group's worth at a time when streaming). The column set is fixed at construction
 * so that every table has the same schema.
 */
export class VqaTableBuilder {
  private ids = new Utf8ColumnBuilder();
  private paths = new Utf8ColumnBuilder();
  private questions = new Utf8ColumnBuilder();
  private answer = new Utf8ColumnBuilder();
  private answers = new Utf8ListColumnBuilder();
  private imagePaths = new Utf8ListColumnBuilder();
  private mc = new Utf8ColumnBuilder();
  private at = new Utf8ColumnBuilder();
  private qt = new Utf8ColumnBuilder();
  private imageIds: (number | null)[] = [];
  private videoPaths = new Utf8ListColumnBuilder();
  private videoFps: (number | null)[] = [];
  private extras: Record<string, unknown[]> = {};

  constructor(private readonly o: VqaTableBuilderOptions = {}) {
    for (const k of Object.keys(o.extras ?? {})) this.extras[k] = [];
  }

  get length(): number {
    return this.ids.length;
  }

  private rel(p: string): string {
    return this.o.relativeTo ? path.relative(this.o.relativeTo, p).split(path.sep).join('/') : p;
  }

  /** Add one sample; `answer` null writes a null answer (unknown, e.g. test splits). */
  add(s: Omit<VqaSample, 'answer'> & { answer: string | null }): void {
    this.ids.append(s.id);
    this.paths.append(this.rel(s.imagePath));
    this.questions.append(s.question);
    this.answer.append(s.answer);
    if (this.o.answers ?? true) this.answers.append(s.answers);
    if (this.o.imagePaths) this.imagePaths.append((s.imagePaths ?? [s.imagePath]).map((p) => this.rel(p)));
    if (this.o.vqaColumns) {
      this.mc.append(s.multipleChoiceAnswer ?? null);
      this.at.append(s.answerType ?? null);
      this.qt.append(s.questionType ?? null);
      this.imageIds.push(s.imageId ?? null);
    }
    if (this.o.videos) {
      this.videoPaths.append((s.videoPaths ?? []).map((p) => this.rel(p)));
      this.videoFps.push(s.videoFps ?? null);
    }
    for (const k of Object.keys(this.extras)) this.extras[k]!.push(s.extra?.[k] ?? null);
  }

  /** The rows added since the last build, as an Arrow table; the builder is then empty. */
  build(): arrow.Table {
    const str = (v: (string | null)[]) => arrow.makeVector(utf8Data(v));
    const n = this.length;
    const cols: Record<string, arrow.Vector> = {
      id: arrow.makeVector(this.ids.finish()),
      image_path: arrow.makeVector(this.paths.finish()),
      question: arrow.makeVector(this.questions.finish()),
      answer: arrow.makeVector(this.answer.finish()),
    };
    if (this.o.answers ?? true) cols.answers = arrow.makeVector(this.answers.finish());
    if (this.o.imagePaths) cols.image_paths = arrow.makeVector(this.imagePaths.finish());
    if (this.o.vqaColumns) {
      cols.multiple_choice_answer = arrow.makeVector(this.mc.finish());
      cols.answer_type = arrow.makeVector(this.at.finish());
      cols.question_type = arrow.makeVector(this.qt.finish());
      const ids = new BigInt64Array(n);
      let bitmap: Uint8Array | undefined,
        nulls = 0;
      this.imageIds.forEach((v, i) => {
        if (v === null) {
          bitmap ??= new Uint8Array((n + 7) >> 3).fill(0xff);
          bitmap[i >> 3]! &= ~(1 << (i & 7));
          nulls++;
        } else ids[i] = BigInt(v);
      });
      cols.image_id = arrow.makeVector(
        arrow.makeData({ type: new arrow.Int64(), length: n, nullCount: nulls, data: ids, nullBitmap: bitmap }),
      );
    }
    if (this.o.videos) {
      cols.video_paths = arrow.makeVector(this.videoPaths.finish());
      cols.video_fps = arrow.vectorFromArray(this.videoFps, new arrow.Float64() as arrow.DataType);
      this.videoFps = [];
    }
    for (const [k, type] of Object.entries(this.o.extras ?? {})) {
      const raw = this.extras[k]!;
      if (type === 'string') {
        cols[k] = str(raw.map((v) => (v === null || v === undefined ? null : String(v))));
        continue;
      }
      const t = type === 'int32' ? new arrow.Int32() : type === 'float64' ? new arrow.Float64() : new arrow.Bool();
      cols[k] = arrow.vectorFromArray(
        raw.map((v) => (v === null || v === undefined ? null : v)),
        t as arrow.DataType,
      );
    }
    const table = new arrow.Table(cols);
    this.imageIds = [];
    for (const k of Object.keys(this.extras)) this.extras[k] = [];
    return table;
  }
}
