/**
 * On-policy remote agent rollouts: one step of `Trainer({ agent: { command, gateway: { url,
 * adminKey } } })`. The agents run in this process's machine; their attempts live on a remote
 * `vqalab serve --gateway-key-env VAR`, whose model samples them:
 *
 *   the server serves the trainer's weights (pushed if it is behind) → G attempts per task opened
 *   there, bound to that weight version → the agents run here with the remote per-attempt URLs →
 *   the records read back (ids, log-probs, images by digest) → the masked update (runAgentStep, as
 *   in the local mode) → the new weights pushed (src/serve/weights.ts), so the next step's
 *   rollouts are sampled by them.
 *
 * The weight version is the model's optimizer step count (`EngineModel.stepCount`), as for
 * `weightPush`. A server that serves a newer version than the trainer's model holds another run's
 * weights: refused before anything runs.
 */
import { randomBytes } from 'node:crypto';
import type { VqaSample } from '../data/types.js';
import type { EngineModel } from '../engine/types.js';
import type { AgentStepInputs, RemoteAgentGateway } from '../grpo/agent-step.js';
import { LocalPolicy } from '../rollout/local.js';
import { pushWeights, type PushResult } from '../serve/weights.js';
import { invalidParameterError } from '../util/validate.js';
import { type AgentStepOutput, runAgentStep } from './loop.js';
import { pushLine } from './push.js';
import { originOf, RemoteAttempts, remoteWeightVersion } from './remote.js';

export interface RemoteStepOutput extends AgentStepOutput {
  /** The weight version the step's rollouts were sampled with. */
  version: number;
  /** Pushes made before the rollouts (the server was behind) and after the update. */
  pushes: PushResult[];
}

export function checkRemoteGateway(g: RemoteAgentGateway): void {
  if (g === null || typeof g !== 'object')
    throw invalidParameterError('agent.gateway', 'an object {url, adminKey, weights?}', g);
  if (typeof g.url !== 'string' || !/^https?:\/\/[^/\s]+/.test(g.url))
    throw invalidParameterError(
      'agent.gateway.url',
      'an http(s) URL of a `vqalab serve --gateway-key-env` server',
      g.url,
    );
  if (typeof g.adminKey !== 'string' || g.adminKey === '')
    throw new TypeError('Expected agent.gateway.adminKey to be the non-empty admin key of the server');
  if (g.weights !== undefined && g.weights !== 'lora' && g.weights !== 'full')
    throw invalidParameterError('agent.gateway.weights', '"lora" or "full"', g.weights);
}

// The task images, processed as the server does, kept per model between steps.
const policies = new WeakMap<EngineModel, LocalPolicy>();

function taskImages(o: AgentStepInputs): (s: VqaSample) => Promise<Awaited<ReturnType<LocalPolicy['image']>>[]> {
  let p = policies.get(o.model);
  if (!p) {
    p = new LocalPolicy({ model: o.model, tokenizer: o.tokenizer });
    policies.set(o.model, p);
  }
  const policy = p;
  return (s) => Promise.all((s.imagePaths ?? [s.imagePath]).map((f) => policy.image(f)));
}

/** One step of remote agent rollouts (see the file comment). */
export async function remoteAgentStep(o: AgentStepInputs): Promise<RemoteStepOutput> {
  const g = o.agent.gateway!;
  checkRemoteGateway(g);
  const target = { url: g.url, adminKey: g.adminKey };
  const push = async (version: number): Promise<PushResult> => {
    const [r] = await pushWeights(o.model, [target], { version, kind: g.weights, signal: o.signal });
    o.log?.(pushLine(r!));
    return r!;
  };
  const pushes: PushResult[] = [];
  const version = o.model.stepCount;
  const served = await remoteWeightVersion(target, o.signal);
  if (served > version) {
    throw new Error(
      `${originOf(g.url)} serves weight version ${served}, newer than this trainer's model (${version} optimizer steps): ` +
        "it holds another run's weights; start it again on the weights this trainer starts from",
    );
  }
  // Behind (a warm start since it loaded, or a push that failed): bring it to the trainer's weights.
  if (served < version) pushes.push(await push(version));
  const out = await runAgentStep({
    model: o.model,
    attempts: new RemoteAttempts({ target, weightVersion: version, images: taskImages(o) }),
    version,
    agent: o.agent,
    config: { ...o.config },
    samples: o.samples,
    step: o.step,
    // Rollout ids must be new on a server that may hold another run's records.
    rolloutPrefix: `s${o.step}-${randomBytes(3).toString('hex')}`,
    keepRecords: g.keepRecords,
    signal: o.signal,
    log: o.log,
  });
  if (o.model.stepCount > version) pushes.push(await push(o.model.stepCount));
  return { ...out, version, pushes };
}
