/**
 * An admitted request's engine work: decode and patch its images, settle its prompt, then sample
 * under one weight version — joining the engine's running decode loop (continuous batching), or
 * taking the engine lock in queue-only mode.
 */
import type { ImageInput, Prompt } from '../engine/types.js';
import type { LocalGeneration, LocalSampling } from '../rollout/local.js';
import type { ServeContext } from './context.js';
import { badRequest } from './errors.js';
import type { Prepared } from './prepare.js';
import type { ChatRequest } from './protocol.js';

/** Images up to this many pixels are decoded and patched on the event loop; larger ones in a worker. */
const INLINE_IMAGE_PIXELS = 256 * 256;

/** One holder at a time, in arrival order. */
class Lock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

export type Generate = (
  chat: ChatRequest,
  checked: Prepared,
  signal: AbortSignal,
  onToken?: LocalSampling['onToken'],
  onPrompt?: (p: Prompt) => Prompt,
  onVersion?: (version: number) => void,
) => Promise<LocalGeneration>;

/** The server's generate step; in queue-only mode its calls share one engine lock. */
export function generator(ctx: Pick<ServeContext, 'policy' | 'offload' | 'weights' | 'batching'>): Generate {
  const { policy, offload, weights, batching } = ctx;
  const engine = new Lock();
  return async function generate(
    chat: ChatRequest,
    checked: Prepared,
    signal: AbortSignal,
    onToken?: LocalSampling['onToken'],
    onPrompt?: (p: Prompt) => Prompt,
    onVersion?: (version: number) => void,
  ): Promise<LocalGeneration> {
    const processed: ImageInput[] = [];
    for (const img of checked.images) {
      try {
        processed.push(
          offload && img.width * img.height > INLINE_IMAGE_PIXELS
            ? await offload.image(img.bytes)
            : await policy.image(img.bytes),
        );
      } catch (err) {
        throw badRequest(
          `${img.param}: ${(err as Error).message.replace(/^image buffer \(\d+ bytes\): /, '')}`,
          img.param,
          'invalid_image',
        );
      }
    }
    // The planned prompt ids hold when each image decoded to its planned grid (the usual case);
    // otherwise build and check the prompt again.
    const same = processed.every((img, i) => img.gridThw.every((v, k) => v === checked.grids[i]![k]));
    let prompt = same ? { ids: checked.ids, images: processed } : policy.prompt(chat.messages, processed);
    if (!same) policy.checkLength(prompt, checked.maxTokens);
    const given = onPrompt?.(prompt);
    if (given && given !== prompt) {
      prompt = given;
      policy.checkLength(prompt, checked.maxTokens);
    }
    if (signal.aborted) throw signal.reason;
    // The weights stay those of one version from here until the completion is done (a push waits).
    const call = () =>
      weights.read((version) => {
        onVersion?.(version);
        if (signal.aborted) throw signal.reason;
        return policy.complete(prompt, {
          n: chat.n,
          temperature: chat.temperature,
          topP: chat.topP,
          topK: chat.topK,
          maxTokens: checked.maxTokens,
          stop: chat.stop,
          stopTokenIds: chat.stopTokenIds,
          seed: chat.seed,
          topLogprobs: chat.topLogprobs,
          signal,
          ...(onToken ? { onToken } : {}),
        });
      });
    return batching ? call() : engine.run(call);
  };
}
