/**
 * safetensors files: read and write, the format Hugging Face checkpoints and our parity fixtures use.
 *
 * Layout: 8 bytes little-endian u64 N, then N bytes of JSON header
 * `{"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}`,
 * then the data buffer; offsets are relative to the start of the data buffer, which is covered
 * without holes or overlaps. All data is little-endian, row-major.
 *
 * API (small on purpose):
 * - {@link SafetensorsFile}.open(path): reads only the header; `read(name)` then reads one tensor
 *   (streaming-friendly: a multi-GB checkpoint is never held whole). `readFloat32(name)` widens
 *   F16/BF16/F64/integers to a Float32Array.
 * - {@link readSafetensors}(path): every tensor at once (small files: fixtures, adapters).
 * - {@link writeSafetensors}(path, tensors, metadata): atomic (temp file + rename), tensor by tensor.
 * - {@link parseSafetensors} / {@link serializeSafetensors}: the same over in-memory bytes.
 * - {@link toFloat32}, {@link fromFloat32}: F16/BF16 conversion (round to nearest even).
 *
 * F16 and BF16 data are held as their raw 16-bit patterns in a Uint16Array (Node 20 has no
 * Float16Array); I64/U64 as BigInt64Array/BigUint64Array.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { withAtomicOutput } from './fs.js';
import { invalidParameterError } from './validate.js';

export type DType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL';

export type TensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | BigUint64Array
  | Uint32Array
  | Uint8Array;

export interface Tensor {
  dtype: DType;
  /** Row-major dimensions; `[]` is a scalar (one element). */
  shape: number[];
  /** Element values; F16/BF16 as raw bits (Uint16Array), BOOL as Uint8Array of 0/1. */
  data: TensorData;
}

/** One header entry: where a tensor's bytes are, relative to the start of the data buffer. */
export interface TensorInfo {
  dtype: DType;
  shape: number[];
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** Tensors in file order. */
  tensors: Map<string, TensorInfo>;
  /** The `__metadata__` string map (empty when absent). */
  metadata: Record<string, string>;
  /** Absolute byte offset of the data buffer in the file (8 + header length). */
  dataStart: number;
}

type ArrayCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): TensorData;
  new (length: number): TensorData;
};

const DTYPES: Record<DType, { bytes: number; array: ArrayCtor }> = {
  F64: { bytes: 8, array: Float64Array as unknown as ArrayCtor },
  F32: { bytes: 4, array: Float32Array as unknown as ArrayCtor },
  F16: { bytes: 2, array: Uint16Array as unknown as ArrayCtor },
  BF16: { bytes: 2, array: Uint16Array as unknown as ArrayCtor },
  I64: { bytes: 8, array: BigInt64Array as unknown as ArrayCtor },
  I32: { bytes: 4, array: Int32Array as unknown as ArrayCtor },
  I16: { bytes: 2, array: Int16Array as unknown as ArrayCtor },
  I8: { bytes: 1, array: Int8Array as unknown as ArrayCtor },
  U64: { bytes: 8, array: BigUint64Array as unknown as ArrayCtor },
  U32: { bytes: 4, array: Uint32Array as unknown as ArrayCtor },
  U16: { bytes: 2, array: Uint16Array as unknown as ArrayCtor },
  U8: { bytes: 1, array: Uint8Array as unknown as ArrayCtor },
  BOOL: { bytes: 1, array: Uint8Array as unknown as ArrayCtor },
};

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: DType): number {
  return DTYPES[dtype].bytes;
}

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const MAX_HEADER = 100 * 1024 * 1024;

function fail(file: string, what: string): Error {
  return new Error(`${file}: invalid safetensors file: ${what}`);
}

/** Parse and check a header JSON; `dataLength` (when known) is the size of the data buffer. */
function parseHeader(file: string, json: string, dataStart: number, dataLength: number | undefined): SafetensorsHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw fail(file, `header is not JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw fail(file, 'header is not a JSON object');
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(raw as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (
        entry === null ||
        typeof entry !== 'object' ||
        Array.isArray(entry) ||
        Object.values(entry).some((v) => typeof v !== 'string')
      ) {
        throw fail(file, '__metadata__ must be an object of strings');
      }
      metadata = { ...(entry as Record<string, string>) };
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object') throw fail(file, `tensor "${name}": entry is not an object`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPES)) {
      throw fail(
        file,
        `tensor "${name}": dtype ${JSON.stringify(e.dtype)} is not one of ${Object.keys(DTYPES).join(', ')}`,
      );
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw fail(
        file,
        `tensor "${name}": shape must be a list of non-negative integers, got ${JSON.stringify(e.shape)}`,
      );
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((o) => Number.isInteger(o) && o >= 0) ||
      off[1] < off[0]
    ) {
      throw fail(
        file,
        `tensor "${name}": data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(off)}`,
      );
    }
    const dtype = e.dtype as DType;
    const shape = e.shape as number[];
    const want = numel(shape) * DTYPES[dtype].bytes;
    if (off[1] - off[0] !== want) {
      throw fail(
        file,
        `tensor "${name}": ${dtype} ${JSON.stringify(shape)} needs ${want} bytes but data_offsets ${JSON.stringify(off)} span ${off[1] - off[0]}`,
      );
    }
    if (dataLength !== undefined && off[1] > dataLength) {
      throw fail(
        file,
        `tensor "${name}": data_offsets ${JSON.stringify(off)} run past the end of the data (${dataLength} bytes; file truncated?)`,
      );
    }
    tensors.set(name, { dtype, shape: [...shape], dataOffsets: [off[0], off[1]] });
    spans.push([off[0], off[1], name]);
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [b, e, name] of spans) {
    if (b !== at)
      throw fail(
        file,
        `tensor "${name}": data at byte ${b} ${b < at ? 'overlaps the previous tensor' : `leaves a hole after byte ${at}`}`,
      );
    at = e;
  }
  if (dataLength !== undefined && at !== dataLength)
    throw fail(file, `data buffer is ${dataLength} bytes but the tensors cover ${at}`);
  return { tensors, metadata, dataStart };
}

/** View bytes as the dtype's typed array, copying only when they are not aligned. */
function toTypedArray(dtype: DType, bytes: Uint8Array): TensorData {
  const { bytes: size, array } = DTYPES[dtype];
  const n = bytes.byteLength / size;
  if (bytes.byteOffset % size === 0) return new array(bytes.buffer, bytes.byteOffset, n);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new array(copy.buffer, 0, n);
}

/** A safetensors file opened for reading: the header is parsed, tensors are read one at a time. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private handle: FileHandle | undefined,
    readonly header: SafetensorsHeader,
  ) {}

  /** Open `path` and read its header only. */
  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await fsp.open(path, 'r');
    try {
      const { size } = await handle.stat();
      if (size < 8) throw fail(path, `file is ${size} bytes, shorter than the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await handle.read(lenBuf, 0, 8, 0);
      const len = lenBuf.readBigUInt64LE(0);
      if (len > BigInt(Math.min(MAX_HEADER, size - 8))) {
        throw fail(
          path,
          `header length ${len} exceeds ${len > BigInt(MAX_HEADER) ? `the ${MAX_HEADER}-byte limit` : `the file (${size} bytes)`}`,
        );
      }
      const n = Number(len);
      const jsonBuf = Buffer.alloc(n);
      await handle.read(jsonBuf, 0, n, 8);
      const header = parseHeader(path, jsonBuf.toString('utf8'), 8 + n, size - 8 - n);
      return new SafetensorsFile(path, handle, header);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Tensor names in file order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  /** The header entry of `name`; throws naming the file and the tensor when absent. */
  info(name: string): TensorInfo {
    const info = this.header.tensors.get(name);
    if (!info)
      throw new Error(
        `${this.path}: no tensor "${name}" (the file has ${this.header.tensors.size}: ${this.names().slice(0, 8).join(', ')}${this.header.tensors.size > 8 ? ', ...' : ''})`,
      );
    return info;
  }

  /** Read one tensor's data from disk. */
  async read(name: string): Promise<Tensor> {
    const info = this.info(name);
    if (!this.handle) throw new Error(`${this.path}: file is closed`);
    const [b, e] = info.dataOffsets;
    // A fresh buffer starts at offset 0, so the typed array is a view of it, no copy.
    const bytes = new Uint8Array(e - b);
    let done = 0;
    while (done < bytes.byteLength) {
      const { bytesRead } = await this.handle.read(
        bytes,
        done,
        bytes.byteLength - done,
        this.header.dataStart + b + done,
      );
      if (bytesRead === 0) throw fail(this.path, `tensor "${name}": unexpected end of file`);
      done += bytesRead;
    }
    return { dtype: info.dtype, shape: [...info.shape], data: toTypedArray(info.dtype, bytes) };
  }

  /** Read one tensor and widen it to float32 (F16/BF16 decoded; integers converted). */
  async readFloat32(name: string): Promise<Float32Array> {
    return toFloat32(await this.read(name));
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

/** Read every tensor of a (small) file, plus its metadata. */
export async function readSafetensors(
  path: string,
): Promise<{ tensors: Map<string, Tensor>; metadata: Record<string, string> }> {
  const f = await SafetensorsFile.open(path);
  try {
    const tensors = new Map<string, Tensor>();
    for (const name of f.names()) tensors.set(name, await f.read(name));
    return { tensors, metadata: f.metadata };
  } finally {
    await f.close();
  }
}

/** Parse safetensors bytes already in memory. `label` names the source in errors. */
export function parseSafetensors(
  bytes: Uint8Array,
  label = '<buffer>',
): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  if (bytes.byteLength < 8) throw fail(label, `${bytes.byteLength} bytes, shorter than the 8-byte header length`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = dv.getBigUint64(0, true);
  if (len > BigInt(Math.min(MAX_HEADER, bytes.byteLength - 8)))
    throw fail(label, `header length ${len} exceeds the buffer (${bytes.byteLength} bytes)`);
  const n = Number(len);
  const json = Buffer.from(bytes.buffer, bytes.byteOffset + 8, n).toString('utf8');
  const header = parseHeader(label, json, 8 + n, bytes.byteLength - 8 - n);
  const tensors = new Map<string, Tensor>();
  for (const [name, info] of header.tensors) {
    const [b, e] = info.dataOffsets;
    tensors.set(name, {
      dtype: info.dtype,
      shape: [...info.shape],
      data: toTypedArray(info.dtype, bytes.subarray(header.dataStart + b, header.dataStart + e)),
    });
  }
  return { tensors, metadata: header.metadata };
}

/** Tensors to write: a Map or a record, in the order given. */
export type TensorMap = Map<string, Tensor> | Record<string, Tensor>;

function checkTensor(name: string, t: Tensor): void {
  if (!t || typeof t !== 'object')
    throw invalidParameterError(`tensors["${name}"]`, 'a tensor {dtype, shape, data}', t);
  if (!(t.dtype in DTYPES))
    throw invalidParameterError(`tensors["${name}"].dtype`, `one of ${Object.keys(DTYPES).join(', ')}`, t.dtype);
  if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw invalidParameterError(`tensors["${name}"].shape`, 'an array of non-negative integers', t.shape);
  }
  const want = DTYPES[t.dtype].array;
  const ok = t.data instanceof (want as unknown as Function) || (t.dtype === 'BOOL' && t.data instanceof Uint8Array);
  if (!ok)
    throw invalidParameterError(
      `tensors["${name}"].data`,
      `a ${(want as unknown as Function).name} for dtype ${t.dtype}`,
      t.data,
    );
  if (t.data.length !== numel(t.shape)) {
    throw new TypeError(
      `Expected ${numel(t.shape)} elements for tensors["${name}"].data (shape ${JSON.stringify(t.shape)}) but received ${t.data.length}`,
    );
  }
}

/**
 * Lay out the header: tensors ordered by element size, largest first (stable), so every tensor
 * starts aligned to its element size and readers can view the bytes without copying. The header
 * is padded with spaces to a multiple of 8 bytes, as the reference implementation does.
 */
function layout(
  tensors: TensorMap,
  metadata: Record<string, string> | undefined,
): { headerBytes: Buffer; order: [string, Tensor][]; dataLength: number } {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const names = new Set<string>();
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw invalidParameterError('tensor name', 'a name other than "__metadata__"', name);
    if (names.has(name)) throw invalidParameterError('tensor name', 'unique names', name);
    names.add(name);
    checkTensor(name, t);
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw invalidParameterError(`metadata["${k}"]`, 'string', v);
  }
  const order = entries
    .map((e, i) => [e, i] as const)
    .sort((a, b) => DTYPES[b[0][1].dtype].bytes - DTYPES[a[0][1].dtype].bytes || a[1] - b[1])
    .map(([e]) => e);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let at = 0;
  for (const [name, t] of order) {
    const n = t.data.byteLength;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + n] };
    at += n;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const body = Buffer.from(json, 'utf8');
  const headerBytes = Buffer.alloc(8 + body.length);
  headerBytes.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(headerBytes, 8);
  return { headerBytes, order, dataLength: at };
}

function bytesOf(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Serialize tensors (and optional metadata) to safetensors bytes in memory. */
export function serializeSafetensors(tensors: TensorMap, metadata?: Record<string, string>): Uint8Array {
  const { headerBytes, order, dataLength } = layout(tensors, metadata);
  const out = new Uint8Array(headerBytes.length + dataLength);
  out.set(headerBytes, 0);
  let at = headerBytes.length;
  for (const [, t] of order) {
    out.set(bytesOf(t.data), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Write tensors to `path` atomically (temp file, then rename), one tensor at a time: memory use
 * stays at the caller's tensors, no concatenated copy.
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorMap,
  metadata?: Record<string, string>,
): Promise<void> {
  const { headerBytes, order } = layout(tensors, metadata);
  await withAtomicOutput(path, async (tmp) => {
    const h = await fsp.open(tmp, 'w');
    try {
      await h.write(headerBytes);
      for (const [, t] of order) {
        const b = bytesOf(t.data);
        let done = 0;
        while (done < b.byteLength) {
          const { bytesWritten } = await h.write(b, done, Math.min(b.byteLength - done, 1 << 30));
          done += bytesWritten;
        }
      }
      await h.sync();
    } finally {
      await h.close();
    }
  });
}

// --- float16 / bfloat16 ---------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function floatToHalf(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++; // may carry into the exponent: correct
  return sign | half;
}

/** Widen any numeric tensor to float32 (F16/BF16 decoded exactly; I64 via Number). */
export function toFloat32(t: Tensor): Float32Array {
  const n = t.data.length;
  if (t.dtype === 'F32') return t.data as Float32Array;
  const out = new Float32Array(n);
  if (t.dtype === 'BF16') {
    const src = t.data as Uint16Array;
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) o32[i] = src[i]! << 16;
  } else if (t.dtype === 'F16') {
    const src = t.data as Uint16Array;
    for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]!);
  } else {
    const src = t.data as ArrayLike<number | bigint>;
    for (let i = 0; i < n; i++) out[i] = Number(src[i]!);
  }
  return out;
}

/** Narrow float32 values to an F32/F16/BF16 tensor (round to nearest even; NaN stays NaN). */
export function fromFloat32(values: Float32Array, shape: number[], dtype: 'F32' | 'F16' | 'BF16'): Tensor {
  if (numel(shape) !== values.length)
    throw new TypeError(
      `Expected ${numel(shape)} values for shape ${JSON.stringify(shape)} but received ${values.length}`,
    );
  if (dtype === 'F32') return { dtype, shape: [...shape], data: values };
  const out = new Uint16Array(values.length);
  if (dtype === 'F16') {
    for (let i = 0; i < values.length; i++) out[i] = floatToHalf(values[i]!);
  } else {
    const src = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < values.length; i++) {
      const b = src[i]!;
      if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) {
        out[i] = (b >>> 16) | 0x40;
        continue;
      }
      out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return { dtype, shape: [...shape], data: out };
}
