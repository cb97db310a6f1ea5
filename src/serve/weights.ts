/**
 * Weight push: a trainer sends its weights to a `vqalab serve` process after an update, so the
 * rollouts that server samples next come from the weights being trained (on-policy remote rollouts).
 *
 *   PUT /admin/weights    Authorization: Bearer <admin key>; the body is a safetensors file of the
 *                         engine's tensors by name (F32, F16 or BF16) with metadata
 *                         {"vqalab.weights": "lora" | "full", "vqalab.version": "<integer>"}
 *   GET /admin/weights    the version served now
 *
 * "lora" sends the LoRA adapters only (`*.lora_A.weight`, `*.lora_B.weight`: the server must have
 * been started on the same adapter layout, e.g. `--model ADAPTER_FOLDER`); "full" sends every
 * tensor. The server checks every name and shape before it changes anything, then switches
 * atomically between requests (`WeightSwitch`): new requests wait, the requests sampling finish
 * on the old weights, the tensors are replaced, the version moves, the waiting requests go on. So
 * no completion mixes two versions, and each reply names the version it was sampled with
 * (`weight_version` in the body and in every stream chunk, and the `x-vqalab-weight-version`
 * header). Versions only go up: a push of a version at or below the current one is refused (409
 * `stale_weight_version`), so a slow push from an older step cannot overwrite a newer one.
 */
import type { EngineModel } from '../engine/types.js';
import type { NativeModel } from '../engine/native.js';
import { parseSafetensors, serializeSafetensors, toFloat32, type Tensor } from '../util/safetensors.js';
import { ApiError, badRequest } from './errors.js';

/** Which tensors a push carries. */
export type WeightKind = 'lora' | 'full';

export const WEIGHT_VERSION_HEADER = 'x-vqalab-weight-version';

/**
 * Requests read the weights (any number at once); a switch waits for the running ones to end,
 * holds new ones back, replaces the weights and moves the version. Switches run one at a time.
 */
export class WeightSwitch {
  private current: number;
  private active = 0;
  private pending: Promise<void> | null = null;
  private drained: (() => void) | null = null;

  constructor(version = 0) {
    this.current = version;
  }

  /** The version being served. */
  get version(): number {
    return this.current;
  }

  /**
   * Set the version without replacing tensors: for a trainer that updates the served model in
   * its own process between rollouts (src/gateway/loop.ts), when no request is sampling.
   */
  set version(v: number) {
    if (!Number.isInteger(v) || v < 0)
      throw new TypeError(`Expected a weight version (an integer >= 0) but received ${String(v)}`);
    this.current = v;
  }

  /** Requests sampling now. */
  get readers(): number {
    return this.active;
  }

  /** Runs `fn` on the weights of one version (passed to it); waits while a switch is under way. */
  async read<T>(fn: (version: number) => Promise<T>): Promise<T> {
    while (this.pending) await this.pending;
    this.active++;
    try {
      return await fn(this.current);
    } finally {
      if (--this.active === 0 && this.drained) this.drained();
    }
  }

  /** Wait for the running readers, hold new ones, `apply`, then serve `version`. */
  async swap(version: number, apply: () => Promise<void>): Promise<void> {
    while (this.pending) await this.pending;
    let release!: () => void;
    this.pending = new Promise<void>((r) => {
      release = r;
    });
    try {
      if (version <= this.current) {
        throw new ApiError(
          409,
          `weight version ${version} is not newer than the version served now (${this.current}); versions only go up`,
          'invalid_request_error',
          null,
          'stale_weight_version',
        );
      }
      if (this.active > 0)
        await new Promise<void>((r) => {
          this.drained = r;
        });
      this.drained = null;
      await apply();
      this.current = version;
    } finally {
      this.pending = null;
      release();
    }
  }
}

interface NativeAccess {
  _native: NativeModel;
  _withNative<T>(fn: (nm: NativeModel) => T | Promise<T>): Promise<T>;
}

function nativeOf(model: EngineModel, what: string): NativeAccess {
  const m = model as unknown as Partial<NativeAccess>;
  if (!m._native || typeof m._withNative !== 'function')
    throw new Error(`${what} needs a model loaded by the native engine (loadModel)`);
  return m as NativeAccess;
}

const LORA_RE = /\.lora_[AB]\.weight$/;

/**
 * The model's tensors as a push body: its LoRA adapters (`kind` "lora", the default for a LoRA
 * model) or every tensor ("full", the default otherwise), read between the model's calls.
 */
export async function encodeWeights(
  model: EngineModel,
  o: { version: number; kind?: WeightKind },
): Promise<{ bytes: Uint8Array; kind: WeightKind; tensors: number }> {
  if (!Number.isInteger(o.version) || o.version < 1)
    throw new TypeError(`Expected version (an integer >= 1) but received ${String(o.version)}`);
  const nm = nativeOf(model, 'a weight push');
  const tensors = await nm._withNative((n) => {
    const names = n._names();
    const lora = names.filter((x) => LORA_RE.test(x));
    const kind: WeightKind = o.kind ?? (lora.length > 0 ? 'lora' : 'full');
    if (kind === 'lora' && lora.length === 0)
      throw new Error(
        'a LoRA weight push needs a model loaded with LoRA adapters (options.lora); push kind "full" instead',
      );
    const out = new Map<string, Tensor>();
    for (const name of kind === 'lora' ? lora : names)
      out.set(name, { dtype: 'F32', shape: n._shape(name), data: Float32Array.from(n._get(name)) });
    return { kind, out };
  });
  const bytes = serializeSafetensors(tensors.out, {
    'vqalab.weights': tensors.kind,
    'vqalab.version': String(o.version),
  });
  return { bytes, kind: tensors.kind, tensors: tensors.out.size };
}

/**
 * A push body checked against the served model: every tensor known, of the same shape, the kind
 * and version in its metadata. Nothing is changed here.
 */
export function decodeWeights(
  model: EngineModel,
  body: Uint8Array,
): { version: number; kind: WeightKind; tensors: Map<string, Float32Array> } {
  let parsed: ReturnType<typeof parseSafetensors>;
  try {
    parsed = parseSafetensors(body, 'the weight push body');
  } catch (err) {
    throw badRequest(`${(err as Error).message} (the body must be a safetensors file)`, null, 'invalid_weights');
  }
  const kind = parsed.metadata['vqalab.weights'];
  if (kind !== 'lora' && kind !== 'full') {
    throw badRequest(
      `the weight push's metadata "vqalab.weights" must be "lora" or "full"; got ${JSON.stringify(kind ?? null)}`,
      'vqalab.weights',
      'invalid_weights',
    );
  }
  const vText = parsed.metadata['vqalab.version'];
  const version = vText !== undefined && /^\d{1,15}$/.test(vText) ? Number(vText) : NaN;
  if (!Number.isInteger(version) || version < 1) {
    throw badRequest(
      `the weight push's metadata "vqalab.version" must be an integer >= 1; got ${JSON.stringify(vText ?? null)}`,
      'vqalab.version',
      'invalid_weights',
    );
  }
  let n: NativeModel;
  try {
    n = nativeOf(model, 'a weight push')._native;
  } catch (err) {
    throw new ApiError(
      501,
      `${(err as Error).message}; this server cannot take pushed weights`,
      'server_error',
      null,
      'weights_not_supported',
    );
  }
  const known = new Set(n._names());
  const hasLora = [...known].some((x) => LORA_RE.test(x));
  if (kind === 'lora' && !hasLora) {
    throw badRequest(
      'this server\'s model has no LoRA adapters, so it cannot take a LoRA push: start it on the adapter folder (vqalab serve --model ADAPTER_FOLDER) or push kind "full"',
      'vqalab.weights',
      'invalid_weights',
    );
  }
  if (parsed.tensors.size === 0) throw badRequest('the weight push holds no tensors', null, 'invalid_weights');
  const out = new Map<string, Float32Array>();
  for (const [name, t] of parsed.tensors) {
    if (!known.has(name))
      throw badRequest(
        `the weight push has tensor ${JSON.stringify(name)}, which this server's model does not have`,
        name,
        'invalid_weights',
      );
    if (kind === 'lora' && !LORA_RE.test(name))
      throw badRequest(
        `a LoRA weight push holds adapters only; ${JSON.stringify(name)} is not one`,
        name,
        'invalid_weights',
      );
    const want = n._shape(name);
    if (want.length !== t.shape.length || want.some((d, i) => d !== t.shape[i])) {
      throw badRequest(
        `tensor ${name} has shape [${t.shape.join(', ')}]; this server's model has [${want.join(', ')}]`,
        name,
        'invalid_weights',
      );
    }
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16')
      throw badRequest(`tensor ${name} is ${t.dtype}; expected F32, F16 or BF16`, name, 'invalid_weights');
    const f = toFloat32(t);
    for (let i = 0; i < f.length; i++) {
      if (!Number.isFinite(f[i]!))
        throw badRequest(`tensor ${name} holds a non-finite value at element ${i}`, name, 'invalid_weights');
    }
    out.set(name, f);
  }
  if (kind === 'full' && out.size !== known.size) {
    const missing = [...known].filter((x) => !out.has(x));
    throw badRequest(
      `a full weight push must hold every tensor; ${missing.length} missing, e.g. ${missing.slice(0, 3).join(', ')}`,
      null,
      'invalid_weights',
    );
  }
  return { version, kind, tensors: out };
}

/** Replace the model's tensors between its calls (the caller holds the WeightSwitch). */
export async function applyWeights(model: EngineModel, tensors: ReadonlyMap<string, Float32Array>): Promise<void> {
  await nativeOf(model, 'a weight push')._withNative((n) => {
    for (const [name, data] of tensors) n._set(name, data);
  });
}

export interface PushTarget {
  /** The server's base URL (with or without the trailing /v1). */
  url: string;
  /** Its admin key (`vqalab serve --admin-key-env` / `--gateway-key-env`). */
  adminKey: string;
}

export interface PushResult {
  url: string;
  version: number;
  kind: WeightKind;
  tensors: number;
  bytes: number;
  /** Milliseconds from sending the body to the server's answer (its switch included). */
  ms: number;
  /** Requests that were sampling when the push arrived (the switch waited for them). */
  waitedFor: number;
}

function originOf(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v1$/, '');
}

/**
 * Push the model's weights (LoRA adapters by default for a LoRA model, else all) to each server as
 * `version`; resolves when every server serves it, rejects naming the server and its answer.
 */
export async function pushWeights(
  model: EngineModel,
  targets: readonly PushTarget[],
  o: { version: number; kind?: WeightKind; signal?: AbortSignal },
): Promise<PushResult[]> {
  const body = await encodeWeights(model, o);
  return Promise.all(
    targets.map(async (t) => {
      const url = `${originOf(t.url)}/admin/weights`;
      const t0 = performance.now();
      let res: Response;
      try {
        res = await fetch(url, {
          method: 'PUT',
          body: body.bytes,
          signal: o.signal,
          headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${t.adminKey}` },
        });
      } catch (err) {
        throw new Error(`weight push to ${url} failed: ${(err as Error).message}`);
      }
      const text = await res.text();
      if (!res.ok) {
        let msg = text;
        try {
          msg = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text;
        } catch {
          /* not JSON */
        }
        throw new Error(`weight push of version ${o.version} to ${url}: HTTP ${res.status}: ${msg.slice(0, 500)}`);
      }
      let waitedFor = 0;
      try {
        waitedFor = Number((JSON.parse(text) as { waited_for?: unknown }).waited_for) || 0;
      } catch {
        /* not JSON */
      }
      return {
        url: originOf(t.url),
        version: o.version,
        kind: body.kind,
        tensors: body.tensors,
        bytes: body.bytes.byteLength,
        ms: performance.now() - t0,
        waitedFor,
      };
    }),
  );
}
