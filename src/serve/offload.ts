/**
 * Worker threads for the heavy part of a request (src/serve/offload-worker.ts): parsing a large
 * body, tokenising its prompt, decoding and patching a large image. The event loop keeps only
 * what is bounded and small (routing, small requests, formatting), so `/health` and ordinary
 * requests answer while a hostile one is being taken apart.
 *
 * A pool of `size` workers (default 1), each loaded with the model's tokenizer and image
 * processor; a task goes to the least busy one. A worker that dies fails its tasks (500) and is
 * replaced.
 */
import { Worker } from 'node:worker_threads';
import type { ImageInput } from '../engine/types.js';
import type { OffloadInit } from './offload-worker.js';
import { errorFromData, type Prepared } from './prepare.js';

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  pending: Map<number, { resolve: (v: any) => void; reject: (e: unknown) => void }>;
}

export class Offload {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    private readonly init: OffloadInit,
    readonly size = 1,
  ) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./offload-worker.js', import.meta.url), { workerData: this.init });
    worker.unref();
    const pending: Slot['pending'] = new Map();
    let readyResolve!: () => void, readyReject!: (e: unknown) => void;
    const ready = new Promise<void>((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    ready.catch(() => undefined);
    const slot: Slot = { worker, ready, pending };
    worker.on('message', (m: { ready?: boolean; id?: number; ok?: unknown; err?: Record<string, unknown> }) => {
      if (m.ready) return readyResolve();
      const p = pending.get(m.id!);
      if (!p) return;
      pending.delete(m.id!);
      if (m.err) p.reject(errorFromData(m.err));
      else p.resolve(m.ok);
    });
    const fail = (err: Error) => {
      readyReject(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    };
    worker.on('error', (err) => fail(new Error(`the request worker failed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`the request worker exited (code ${code})`));
    });
    return slot;
  }

  private async call<T>(msg: Record<string, unknown>, transfer: ArrayBuffer[]): Promise<T> {
    if (this.closed) throw new Error('the request workers are closed');
    let slot = this.slots[0]!;
    for (const s of this.slots) if (s.pending.size < slot.pending.size) slot = s;
    const id = this.nextId++;
    const result = new Promise<T>((resolve, reject) => slot.pending.set(id, { resolve, reject }));
    await slot.ready;
    slot.worker.postMessage({ ...msg, id }, transfer);
    return result;
  }

  /** prepareRequest in a worker; `raw` is handed over (not usable afterwards). */
  async prepare(raw: Buffer): Promise<Prepared> {
    // The body's own buffer is handed over whole (no copy) when the body fills most of it.
    const own =
      raw.byteOffset === 0 && raw.byteLength >= raw.buffer.byteLength / 2
        ? new Uint8Array(raw.buffer, 0, raw.byteLength)
        : Uint8Array.prototype.slice.call(raw);
    const p = await this.call<Prepared>({ op: 'prepare', raw: own }, [own.buffer as ArrayBuffer]);
    for (const img of p.images) img.bytes = Buffer.from(img.bytes.buffer, img.bytes.byteOffset, img.bytes.byteLength);
    return p;
  }

  /** Decode, resize and patchify one image in a worker. */
  image(bytes: Uint8Array): Promise<ImageInput> {
    return this.call<ImageInput>({ op: 'image', bytes }, []);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
