/**
 * A small ONNX graph builder: nodes, initializers, typed inputs/outputs, constants, and the
 * serialisation to a ModelProto (src/export/onnx-schema.ts). With an {@link ExternalSink}, large
 * initializers go to an external data file as they are added (ONNX's external data:
 * location/offset/length), which lets a model over protobuf's 2 GB limit be written.
 */
import { DataType, encodeModel, type DataTypeValue } from './onnx-schema.js';

export type Dim = number | string;
/** number: INT; {f}: FLOAT; number[]: INTS; string: STRING; {tensor}: TENSOR. */
type Attr = number | number[] | string | { f: number } | { tensor: ConstTensor };

/** Tensor data held by the builder until it is written. */
export interface ConstTensor {
  dataType: DataTypeValue;
  dims: number[];
  /** Little-endian bytes of the elements, row-major (empty once written to external data). */
  bytes: Uint8Array;
  /** Where the bytes went in the external data file. */
  external?: { offset: number; length: number };
}

/**
 * External data: initializers of at least `minBytes` are written to the data file as they are
 * added (`write` appends and returns the offset), so a graph larger than memory allows (or than
 * protobuf's 2 GB) never holds its weights twice.
 */
export interface ExternalSink {
  /** The data file's name, relative to the .onnx file. */
  location: string;
  minBytes: number;
  write(bytes: Uint8Array): number;
}

export const OPSET = 17;
export const IR_VERSION = 8;

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function f32Tensor(data: Float32Array, dims: number[]): ConstTensor {
  check(data.length, dims);
  return { dataType: DataType.FLOAT, dims, bytes: bytesOf(data) };
}
export function i64Tensor(data: number[] | BigInt64Array, dims: number[]): ConstTensor {
  const a = data instanceof BigInt64Array ? data : BigInt64Array.from(data.map((x) => BigInt(x)));
  check(a.length, dims);
  return { dataType: DataType.INT64, dims, bytes: bytesOf(a) };
}
export function f16Tensor(bits: Uint16Array, dims: number[]): ConstTensor {
  check(bits.length, dims);
  return { dataType: DataType.FLOAT16, dims, bytes: bytesOf(bits) };
}
export function i8Tensor(data: Int8Array, dims: number[]): ConstTensor {
  check(data.length, dims);
  return { dataType: DataType.INT8, dims, bytes: bytesOf(data) };
}
function check(n: number, dims: number[]): void {
  const want = dims.reduce((a, b) => a * b, 1);
  if (n !== want) throw new Error(`internal error: tensor of ${n} elements for dims [${dims.join(', ')}]`);
}

interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, Attr>;
  name: string;
}
interface Value {
  name: string;
  elemType: DataTypeValue;
  dims: Dim[];
}

export class Graph {
  private readonly nodes: Node[] = [];
  private readonly inits = new Map<string, ConstTensor>();
  private readonly constCache = new Map<string, string>();
  private readonly ins: Value[] = [];
  private readonly outs: Value[] = [];
  private counter = 0;

  constructor(
    readonly name: string,
    private readonly external?: ExternalSink,
  ) {}

  input(name: string, elemType: DataTypeValue, dims: Dim[]): string {
    this.ins.push({ name, elemType, dims });
    return name;
  }

  output(name: string, elemType: DataTypeValue, dims: Dim[]): void {
    this.outs.push({ name, elemType, dims });
  }

  /** A weight (or any named constant): an initializer. */
  init(name: string, t: ConstTensor): string {
    if (this.inits.has(name)) throw new Error(`internal error: initializer ${name} defined twice`);
    if (this.external && t.bytes.byteLength >= this.external.minBytes) {
      const length = t.bytes.byteLength;
      const offset = this.external.write(t.bytes);
      t = { dataType: t.dataType, dims: t.dims, bytes: new Uint8Array(0), external: { offset, length } };
    }
    this.inits.set(name, t);
    return name;
  }

  /** A small int64 constant (deduplicated). */
  i64(values: number[], dims: number[] = [values.length]): string {
    const key = `i64:${dims.join(',')}:${values.join(',')}`;
    let n = this.constCache.get(key);
    if (!n) {
      n = this.init(`const_${this.constCache.size}_i64`, i64Tensor(values, dims));
      this.constCache.set(key, n);
    }
    return n;
  }

  /** A small float constant (deduplicated). */
  f32(values: number[] | Float32Array, dims: number[] = [values.length]): string {
    const arr = values instanceof Float32Array ? values : Float32Array.from(values);
    const key = `f32:${dims.join(',')}:${Array.from(arr).join(',')}`;
    let n = this.constCache.get(key);
    if (!n) {
      n = this.init(`const_${this.constCache.size}_f32`, f32Tensor(arr, dims));
      this.constCache.set(key, n);
    }
    return n;
  }

  /** Add a node; returns its output names (fresh ones unless given). */
  node(op: string, inputs: string[], attrs: Record<string, Attr> = {}, outputs: number | string[] = 1): string[] {
    const id = this.counter++;
    const outs =
      typeof outputs === 'number'
        ? Array.from({ length: outputs }, (_, i) => `${op}_${id}${outputs > 1 ? `_${i}` : ''}`)
        : outputs;
    this.nodes.push({ op, inputs, outputs: outs, attrs, name: `${op}_${id}` });
    return outs;
  }

  /** Add a one-output node. */
  op(op: string, inputs: string[], attrs: Record<string, Attr> = {}, output?: string): string {
    return this.node(op, inputs, attrs, output ? [output] : 1)[0]!;
  }

  /** Give the last node's (only) output a name (a graph output). */
  renameLast(name: string): string {
    const n = this.nodes[this.nodes.length - 1];
    if (!n || n.outputs.length !== 1) throw new Error('internal error: renameLast needs a one-output last node');
    n.outputs[0] = name;
    return name;
  }

  /** Bytes of all initializers. */
  get weightBytes(): number {
    let n = 0;
    for (const t of this.inits.values()) n += t.external ? t.external.length : t.bytes.byteLength;
    return n;
  }

  /** The ModelProto bytes (initializers inline, or referenced in the external data file). */
  serialize(meta: { producer: string; version: string; doc?: string; props?: Record<string, string> }): Uint8Array {
    const tensorProto = (name: string, t: ConstTensor) => {
      const base: Record<string, unknown> = { name, dims: t.dims, data_type: t.dataType };
      if (t.external) {
        base.data_location = 1;
        base.external_data = [
          { key: 'location', value: this.external!.location },
          { key: 'offset', value: String(t.external.offset) },
          { key: 'length', value: String(t.external.length) },
        ];
      } else {
        base.raw_data = t.bytes;
      }
      return base;
    };
    const valueInfo = (v: Value) => ({
      name: v.name,
      type: {
        tensor_type: {
          elem_type: v.elemType,
          shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
        },
      },
    });
    const attribute = (name: string, a: Attr) => {
      if (typeof a === 'number') {
        if (!Number.isInteger(a))
          throw new Error(`internal error: attribute ${name} = ${a} is not an integer (use {f})`);
        return { name, type: 2, i: a };
      }
      if (typeof a === 'string') return { name, type: 3, s: Buffer.from(a, 'utf8') };
      if (Array.isArray(a)) return { name, type: 7, ints: a };
      if ('f' in a) return { name, type: 1, f: a.f };
      return { name, type: 4, t: tensorProto('', a.tensor) };
    };
    const graph = {
      name: this.name,
      node: this.nodes.map((n) => ({
        name: n.name,
        op_type: n.op,
        input: n.inputs,
        output: n.outputs,
        attribute: Object.entries(n.attrs).map(([k, v]) => attribute(k, v)),
      })),
      initializer: [...this.inits].map(([name, t]) => tensorProto(name, t)),
      input: this.ins.map(valueInfo),
      output: this.outs.map(valueInfo),
    };
    return encodeModel({
      ir_version: IR_VERSION,
      producer_name: meta.producer,
      producer_version: meta.version,
      doc_string: meta.doc ?? '',
      graph,
      opset_import: [{ domain: '', version: OPSET }],
      metadata_props: Object.entries(meta.props ?? {}).map(([key, value]) => ({ key, value })),
    });
  }
}
