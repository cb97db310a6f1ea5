/**
 * `Trainer({ agent })`: one GRPO step of agent rollouts for the Trainer, as the trainer's own
 * StepMetrics. The trainer draws the samples (its data cursor) and counts the step; this starts a
 * gateway over the trainer's model for the step (loopback, any free port; the server holds no
 * state between steps), runs the agents, trains on their trajectories and closes the gateway.
 * With `agent.gateway` the attempts live on that remote server instead, and the weights are
 * pushed there after the update (src/gateway/remote-step.ts).
 */
import { registerAgentStep, type AgentStepInputs } from '../grpo/agent-step.js';
import { meanStd, residentMiB, type StepMetrics } from '../grpo/metrics.js';
import type { AgentGroup } from './agent.js';
import { LocalPolicy } from '../rollout/local.js';
import { agentGrpoStep, type AgentStepOutput } from './loop.js';
import { remoteAgentStep } from './remote-step.js';
import { startGateway } from './start.js';

/** The inputs of one agent step (defined beside the trainer, which calls it). */
export type AgentTrainerStepInputs = AgentStepInputs;

/** Run one agent step; the metrics in the trainer's shape (`extra` holds the agent-specific ones). */
export async function agentTrainerStep(
  o: AgentTrainerStepInputs,
): Promise<{ metrics: StepMetrics; groups: AgentGroup[] }> {
  const t0 = performance.now();
  const remote = o.agent.gateway ? await remoteAgentStep(o) : undefined;
  const out = remote ?? (await localStep(o));
  const m = out.metrics,
    u = m.update;
  const rewards = out.groups.flatMap((g) => g.trajectories.map((t) => t.reward)).filter(Number.isFinite);
  const lengths = out.groups.flatMap((g) =>
    g.trajectories
      .filter((t) => Number.isFinite(t.reward))
      .map((t) => t.segments.reduce((s, seg) => s + seg.mask.reduce((a, x) => a + x, 0), 0)),
  );
  const rs = meanStd(rewards);
  const metrics: StepMetrics = {
    step: o.step,
    kind: 'grpo',
    time: new Date().toISOString(),
    rewardMean: rs.mean,
    rewardStd: rs.std,
    rewardParts: {},
    accuracy: NaN,
    loss: u.loss,
    kl: NaN,
    clipFractionLow: NaN,
    clipFractionHigh: NaN,
    clipFractionDual: NaN,
    entropy: u.entropy,
    gradNorm: u.gradNorm,
    learningRate: m.learningRate,
    completionLength: meanStd(lengths).mean,
    completionLengthMax: lengths.length ? Math.max(...lengths) : NaN,
    truncatedFraction: NaN,
    zeroVarianceFraction: out.groups.length ? u.zeroVarianceGroups / out.groups.length : NaN,
    groups: out.groups.length,
    samplingRounds: 1,
    rewardFailures: m.failedAttempts,
    skippedUpdates: u.skippedUpdates,
    tokensPerSecond: NaN,
    stepSeconds: (performance.now() - t0) / 1000,
    rolloutSeconds: m.rolloutSeconds,
    rewardSeconds: 0,
    trainSeconds: m.trainSeconds,
    memoryMiB: residentMiB(),
    extra: {
      agent: {
        attempts: m.attempts,
        failedAttempts: m.failedAttempts,
        turnsMean: m.turnsMean,
        splitTrajectories: m.splitTrajectories,
        policyTokens: u.policyTokens,
        maskedTokens: u.maskedTokens,
        maxLogprobDrift: u.maxLogprobDrift,
        offPolicyTrajectories: u.offPolicyTrajectories,
        ...(remote
          ? {
              weightVersion: remote.version,
              pushedVersion: remote.pushes.at(-1)?.version ?? null,
              pushSeconds: remote.pushes.reduce((s, p) => s + p.ms, 0) / 1000,
            }
          : {}),
      },
    },
  };
  return { metrics, groups: out.groups };
}

/** The local mode: a gateway over the trainer's model for this step. */
async function localStep(o: AgentTrainerStepInputs): Promise<AgentStepOutput> {
  const gw = await startGateway(new LocalPolicy({ model: o.model, tokenizer: o.tokenizer }), {
    gateway: { seed: o.config.seed },
  });
  try {
    return await agentGrpoStep({
      model: o.model,
      gateway: gw.gateway,
      agent: o.agent,
      config: { ...o.config },
      samples: o.samples,
      step: o.step,
      signal: o.signal,
      log: o.log,
    });
  } finally {
    await gw.close();
  }
}

registerAgentStep(agentTrainerStep);
