/**
 * On-policy remote rollouts: after each update the trainer pushes its weights to the `vqalab serve`
 * processes that sample its rollouts (src/serve/weights.ts), so the next rollouts come from the
 * weights being trained. The version is the model's optimizer step count (`EngineModel.stepCount`):
 * every reply of a server names the version it was sampled with, and a gateway attempt bound to a
 * version (`openAttempt({ weightVersion })`, or `weight_version` in the admin route's body) refuses
 * calls made on another one (409 `stale_weights`).
 *
 *   const trainer = new Trainer({ ..., callbacks: [weightPush({ servers: [{ url, adminKey }] })] });
 */
import type { EngineModel } from '../engine/types.js';
import type { TrainerCallback } from '../grpo/events.js';
import { pushWeights, type PushResult, type PushTarget, type WeightKind } from '../serve/weights.js';

export interface WeightPushOptions {
  servers: readonly PushTarget[];
  /** "lora" (default for a LoRA model: the adapters only) or "full" (every tensor; default otherwise). */
  kind?: WeightKind;
  /** Called after each push with every server's answer. */
  onPush?: (results: PushResult[]) => void;
}

export interface WeightPusher extends TrainerCallback {
  /** Push now when the model has taken optimizer steps since the last push; resolves with the servers' answers (none when up to date). */
  sync(model: EngineModel): Promise<PushResult[]>;
  /** The version last pushed (0: none yet; the servers serve what they loaded). */
  readonly version: number;
}

/** The log line of a push. */
export function pushLine(x: PushResult): string {
  return `weights version ${x.version} (${x.kind}, ${x.tensors} tensors, ${(x.bytes / 1048576).toFixed(1)} MiB) pushed to ${x.url} in ${x.ms.toFixed(0)} ms`;
}

/** A trainer callback that keeps `servers` on the trainer's weights: before a run and after every step. */
export function weightPush(o: WeightPushOptions): WeightPusher {
  if (!o || !Array.isArray(o.servers) || o.servers.length === 0)
    throw new TypeError('weightPush needs servers: a non-empty list of {url, adminKey}');
  for (const [i, s] of o.servers.entries()) {
    if (typeof s?.url !== 'string' || typeof s.adminKey !== 'string' || s.adminKey === '')
      throw new TypeError(`weightPush: servers[${i}] must be {url: string, adminKey: non-empty string}`);
  }
  let version = 0;
  const sync = async (model: EngineModel): Promise<PushResult[]> => {
    const v = model.stepCount;
    if (v <= version) return [];
    const results = await pushWeights(model, o.servers, { version: v, kind: o.kind });
    version = v;
    o.onPush?.(results);
    return results;
  };
  return {
    sync,
    get version() {
      return version;
    },
    async onRunBegin(trainer) {
      await sync(trainer.model);
    },
    async onStepEnd(trainer) {
      const r = await sync(trainer.model);
      for (const x of r) trainer.log(pushLine(x));
    },
  };
}
