/**
 * The worker thread of src/serve/offload.ts: a copy of the served model's tokenizer and image
 * processor, doing a large request's parse + checks + tokenising (prepareRequest) and its image
 * decode + resize + patchify, so that the server's event loop stays free for other requests.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { VlmTokenizer } from '../text/tokenizer.js';
import { Qwen2VLImageProcessor, type Qwen2VLProcessorOptions } from '../vision/qwen2vl.js';
import { errorToData, prepareRequest, type PrepareLimits, type PromptBuilder } from './prepare.js';

export interface OffloadInit {
  tokenizerDir: string;
  mergeSize: number;
  processorOptions: Qwen2VLProcessorOptions;
  limits: PrepareLimits;
}

const init = workerData as OffloadInit;
const tokenizer = VlmTokenizer.load(init.tokenizerDir);
const processor = new Qwen2VLImageProcessor(init.processorOptions);
const builder: PromptBuilder = {
  plan: (h, w) => processor.plan(h, w).gridThw,
  prompt: (messages, planned) => tokenizer.buildPrompt(messages, planned, { mergeSize: init.mergeSize }).ids,
};

/** An ArrayBuffer that may be transferred holding exactly these bytes (a copy when it is a view into a larger one). */
function own<T extends Uint8Array | Int32Array | Float32Array>(a: T): T {
  if (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && !(a.buffer instanceof SharedArrayBuffer)) return a;
  return a.slice() as T;
}

parentPort!.on('message', (msg: { id: number; op: 'prepare' | 'image'; raw?: Uint8Array; bytes?: Uint8Array }) => {
  void (async () => {
    try {
      if (msg.op === 'prepare') {
        const p = await prepareRequest(msg.raw!, init.limits, builder);
        const ids = own(p.ids);
        const images = p.images.map((img) => ({
          ...img,
          bytes: own(new Uint8Array(img.bytes.buffer, img.bytes.byteOffset, img.bytes.byteLength)),
        }));
        parentPort!.postMessage({ id: msg.id, ok: { ...p, ids, images } }, [
          ids.buffer as ArrayBuffer,
          ...images.map((i) => i.bytes.buffer as ArrayBuffer),
        ]);
      } else {
        const p = await processor.process(msg.bytes!);
        const pixels = own(p.pixels);
        parentPort!.postMessage({ id: msg.id, ok: { pixels, gridThw: p.gridThw } }, [pixels.buffer as ArrayBuffer]);
      }
    } catch (err) {
      parentPort!.postMessage({ id: msg.id, err: errorToData(err) });
    }
  })();
});
parentPort!.postMessage({ ready: true });
