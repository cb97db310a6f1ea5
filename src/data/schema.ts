/**
 * The VQA table schema and its mapping onto {@link VqaSample}.
 *
 * Required columns (the seed's): `id` (string; integers are accepted and read as strings),
 * `image_path` (string: absolute, or relative to the Parquet file's folder), `question` (string),
 * `answer` (string, null when unknown: test splits).
 * Known optional columns: `answers` (list of strings: the 10 annotator answers), `image_paths`
 * (list of strings: every image of a multi-image sample, in prompt order), `multiple_choice_answer`,
 * `answer_type`, `question_type` (strings), `image_id` (integer).
 * Any other column is kept, value by value, in `VqaSample.extra`.
 */
import path from 'node:path';
import * as arrow from 'apache-arrow';
import type { VqaSample } from './types.js';

export const REQUIRED_COLUMNS = ['id', 'image_path', 'question', 'answer'] as const;
export const OPTIONAL_COLUMNS = ['answers', 'image_paths', 'multiple_choice_answer', 'answer_type', 'question_type', 'image_id'] as const;
const KNOWN = new Set<string>([...REQUIRED_COLUMNS, ...OPTIONAL_COLUMNS]);

type Kind = 'string' | 'string-or-int' | 'string-list' | 'int';

const EXPECTED: Record<string, Kind> = {
  id: 'string-or-int', image_path: 'string', question: 'string', answer: 'string',
  answers: 'string-list', image_paths: 'string-list', multiple_choice_answer: 'string',
  answer_type: 'string', question_type: 'string', image_id: 'int',
};

const KIND_TEXT: Record<Kind, string> = {
  string: 'strings', 'string-or-int': 'strings or integers', 'string-list': 'lists of strings', int: 'integers',
};

function isString(t: arrow.DataType): boolean {
  if (arrow.DataType.isDictionary(t)) return isString(t.dictionary);
  return arrow.DataType.isUtf8(t) || arrow.DataType.isLargeUtf8(t);
}

function matches(kind: Kind, t: arrow.DataType): boolean {
  switch (kind) {
    case 'string': return isString(t);
    case 'int': return arrow.DataType.isInt(t);
    case 'string-or-int': return isString(t) || arrow.DataType.isInt(t);
    case 'string-list': return arrow.DataType.isList(t) && isString(t.children[0]!.type);
  }
}

/** JS value of an Arrow cell as plain JSON-like data (bigints to numbers when safe, lists to arrays). */
export function plainValue(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof arrow.Vector) return [...v].map(plainValue);
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>, plainValue);
  if (typeof v === 'object' && typeof (v as { toJSON?: () => unknown }).toJSON === 'function') return (v as { toJSON: () => unknown }).toJSON();
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

  constructor(readonly table: arrow.Table, readonly source: string, private readonly baseDir: string) {
    this.size = table.numRows;
    this.columns = table.schema.fields.map((f) => f.name);
    const missing = REQUIRED_COLUMNS.filter((c) => !this.columns.includes(c));
    if (missing.length > 0) {
      throw new Error(`${source}: missing required column${missing.length > 1 ? 's' : ''} ${missing.map((c) => `"${c}"`).join(', ')}; a VQA table needs id, image_path, question, answer (it has: ${this.columns.join(', ') || 'no columns'})`);
    }
    for (const f of table.schema.fields) {
      const kind = EXPECTED[f.name];
      if (kind && !matches(kind, f.type)) throw new Error(`${source}: column "${f.name}" holds ${f.type}; expected ${KIND_TEXT[kind]}`);
      this.cols[f.name] = table.getChild(f.name) ?? undefined;
    }
    for (const c of ['id', 'image_path', 'question'] as const) {
      const v = this.cols[c]!;
      if (v.nullCount > 0) {
        let row = 0;
        while (row < v.length && v.isValid(row)) row++;
        throw new Error(`${source}: row ${row}: column "${c}" is null; expected ${c === 'id' ? 'an id' : c === 'question' ? 'a question' : 'an image path'}`);
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
    const answers = answersVal ? ([...answersVal].filter((a) => a !== null).map(String)) : (this.cols.answer?.isValid(i) ? [answer] : []);
    const imagePath = this.resolve(this.str('image_path', i)!);
    const s: VqaSample = { id: this.str('id', i)!, imagePath, question: this.str('question', i)!, answer, answers, row: i };
    const ipv = this.cols.image_paths?.get(i) as arrow.Vector | null | undefined;
    if (ipv && ipv.length > 0) s.imagePaths = [...ipv].map((p) => this.resolve(String(p)));
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
  let total = 0, nulls = 0;
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
    type: new arrow.Utf8(), length: n, nullCount: nulls, valueOffsets: offsets,
    data: new Uint8Array(bytes.buffer, bytes.byteOffset, total), nullBitmap: bitmap,
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
    type: new arrow.List(new arrow.Field('item', new arrow.Utf8(), true)), length: n, nullCount: 0,
    valueOffsets: offsets, child: utf8Data(flat),
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
  /** Write image paths relative to this folder (portable datasets); default: as given. */
  relativeTo?: string;
}

/**
 * Collects samples and builds Arrow tables of the VQA schema, one per call to `build()` (a
 * Parquet row group's worth at a time when streaming). The column set is fixed at construction
 * so that every table has the same schema.
 */
export class VqaTableBuilder {
  private ids: string[] = [];
  private paths: string[] = [];
  private questions: string[] = [];
  private answer: (string | null)[] = [];
  private answers: string[][] = [];
  private imagePaths: string[][] = [];
  private mc: (string | null)[] = [];
  private at: (string | null)[] = [];
  private qt: (string | null)[] = [];
  private imageIds: (number | null)[] = [];
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
    this.ids.push(s.id);
    this.paths.push(this.rel(s.imagePath));
    this.questions.push(s.question);
    this.answer.push(s.answer);
    this.answers.push(s.answers);
    this.imagePaths.push((s.imagePaths ?? [s.imagePath]).map((p) => this.rel(p)));
    this.mc.push(s.multipleChoiceAnswer ?? null);
    this.at.push(s.answerType ?? null);
    this.qt.push(s.questionType ?? null);
    this.imageIds.push(s.imageId ?? null);
    for (const k of Object.keys(this.extras)) this.extras[k]!.push(s.extra?.[k] ?? null);
  }

  /** The rows added since the last build, as an Arrow table; the builder is then empty. */
  build(): arrow.Table {
    const str = (v: (string | null)[]) => arrow.makeVector(utf8Data(v));
    const cols: Record<string, arrow.Vector> = {
      id: str(this.ids),
      image_path: str(this.paths),
      question: str(this.questions),
      answer: str(this.answer),
    };
    if (this.o.answers ?? true) cols.answers = arrow.makeVector(utf8ListData(this.answers));
    if (this.o.imagePaths) cols.image_paths = arrow.makeVector(utf8ListData(this.imagePaths));
    if (this.o.vqaColumns) {
      cols.multiple_choice_answer = str(this.mc);
      cols.answer_type = str(this.at);
      cols.question_type = str(this.qt);
      cols.image_id = arrow.vectorFromArray(this.imageIds.map((v) => (v === null ? null : BigInt(v))), new arrow.Int64());
    }
    for (const [k, type] of Object.entries(this.o.extras ?? {})) {
      const raw = this.extras[k]!;
      if (type === 'string') {
        cols[k] = str(raw.map((v) => (v === null || v === undefined ? null : String(v))));
        continue;
      }
      const t = type === 'int32' ? new arrow.Int32() : type === 'float64' ? new arrow.Float64() : new arrow.Bool();
      cols[k] = arrow.vectorFromArray(raw.map((v) => (v === null || v === undefined ? null : v)), t as arrow.DataType);
    }
    const table = new arrow.Table(cols);
    this.ids = []; this.paths = []; this.questions = []; this.answer = []; this.answers = []; this.imagePaths = [];
    this.mc = []; this.at = []; this.qt = []; this.imageIds = [];
    for (const k of Object.keys(this.extras)) this.extras[k] = [];
    return table;
  }
}
