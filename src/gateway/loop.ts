/**
 * Training an agent: the step that `Trainer({ agent })` and `vqalab train --agent` run, as a
 * standalone loop until the trainer refactor takes it in (`agentGrpoStep` is the integration
 * function: one GRPO step of agent rollouts through the gateway, then the masked update).
 *
 *   draw prompts → G attempts each (the agent command, through the gateway, on the weights of
 *   this step) → trajectories (token-exact, masked) → advantages per trajectory → update → the
 *   gateway's weight version moves on, so the next step's calls are recorded under the new weights.
 *
 * `runAgentStep` is the step on any AttemptHost (src/gateway/host.ts); `agentGrpoStep` runs it on a
 * gateway in this process, where rollouts and updates share one engine model, so every call is
 * sampled by the weights being trained; src/gateway/remote-step.ts runs it on a remote gateway and
 * pushes the weights after the update. A trajectory recorded under another version is refused.
 */
import type { VqaSample } from '../data/types.js';
import type { EngineModel } from '../engine/types.js';
import { grpoConfig, type GrpoConfig } from '../grpo/config.js';
import { DataCursor } from '../grpo/cursor.js';
import { learningRateAt } from '../grpo/schedule.js';
import { rolloutAgentGroups, type AgentGroup, type AgentOptions } from './agent.js';
import { LocalPolicy } from '../rollout/local.js';
import type { ServeOptions } from '../serve/server.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { invalidParameterError } from '../util/validate.js';
import type { Gateway, GatewayOptions } from './gateway.js';
import { type AttemptHost, localAttempts } from './host.js';
import { startGateway, type StartedGateway } from './start.js';
import { updateOnAgentGroups, type AgentUpdateResult } from './train.js';

export interface AgentStepMetrics {
  step: number;
  /** Mean reward of the attempts that succeeded. */
  rewardMean: number;
  /** Attempts run, and those that failed (no reward, crash, timeout). */
  attempts: number;
  failedAttempts: number;
  /** Mean LLM calls per succeeded attempt. */
  turnsMean: number;
  /** Trajectories split in more than one segment (a prompt that did not extend the sequence). */
  splitTrajectories: number;
  update: AgentUpdateResult;
  learningRate: number;
  rolloutSeconds: number;
  trainSeconds: number;
}

export interface AgentStepOutput {
  step: number;
  groups: AgentGroup[];
  metrics: AgentStepMetrics;
}

/**
 * One GRPO step of agent rollouts on any AttemptHost (a gateway in this process, or a remote one):
 * `samples` each run G = config.numGenerations times, the recorded trajectories trained on with
 * the masked update; every trajectory must come from weight version `version` (others are refused).
 * The records are released afterwards unless `keepRecords`.
 */
export async function runAgentStep(ctx: {
  model: EngineModel;
  attempts: AttemptHost;
  version: number;
  agent: AgentOptions;
  config: GrpoConfig;
  samples: readonly VqaSample[];
  step: number;
  /** Rollout ids start with this (default `s<step>`); they must be new on the gateway. */
  rolloutPrefix?: string;
  keepRecords?: boolean;
  signal?: AbortSignal;
  log?: (line: string) => void;
}): Promise<AgentStepOutput> {
  const { model, config: c, step } = ctx;
  const t0 = performance.now();
  const groups = await rolloutAgentGroups(ctx.attempts, ctx.samples, c.numGenerations, ctx.agent, {
    rolloutPrefix: ctx.rolloutPrefix ?? `s${step}`,
    signal: ctx.signal,
  });
  const t1 = performance.now();
  if (ctx.signal?.aborted) throw ctx.signal.reason ?? new Error('aborted');
  const lr = learningRateAt(step, {
    learningRate: c.learningRate,
    warmupSteps: c.warmupSteps,
    totalSteps: c.totalSteps,
    schedule: c.lrSchedule,
    minLrRatio: c.minLrRatio,
  });
  const update = await updateOnAgentGroups(model, groups, c, { lr, expectedVersion: ctx.version, log: ctx.log });
  if (!ctx.keepRecords) await ctx.attempts.release(groups.flatMap((g) => g.attempts));
  const attempts = groups.flatMap((g) => g.attempts);
  const ok = attempts.filter((a) => a.status === 'succeeded');
  for (const a of attempts)
    if (a.status === 'failed') ctx.log?.(`step ${step}: attempt ${a.attemptId} of ${a.rolloutId} failed: ${a.error}`);
  const mean = (xs: number[]) => (xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : NaN);
  return {
    step,
    groups,
    metrics: {
      step,
      rewardMean: mean(ok.map((a) => a.reward!)),
      attempts: attempts.length,
      failedAttempts: attempts.length - ok.length,
      turnsMean: mean(ok.map((a) => a.calls.length)),
      splitTrajectories: groups.flatMap((g) => g.trajectories).filter((t) => t.segments.length > 1).length,
      update,
      learningRate: lr,
      rolloutSeconds: (t1 - t0) / 1000,
      trainSeconds: (performance.now() - t1) / 1000,
    },
  };
}

/**
 * One GRPO step of agent rollouts through a gateway in this process (runAgentStep). The
 * gateway's weightVersion is `step` while the agents run and `step + 1` after the update.
 */
export async function agentGrpoStep(ctx: {
  model: EngineModel;
  gateway: Gateway;
  agent: AgentOptions;
  config: GrpoConfig;
  samples: readonly VqaSample[];
  step: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}): Promise<AgentStepOutput> {
  const { gateway, step } = ctx;
  gateway.weightVersion = step;
  const out = await runAgentStep({ ...ctx, attempts: localAttempts(gateway), version: step });
  gateway.weightVersion = step + 1;
  return out;
}

export interface TrainAgentOptions {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  train: readonly VqaSample[];
  agent: AgentOptions;
  config?: Partial<GrpoConfig>;
  /** The gateway's server (default: loopback, any free port) and the gateway's own options. */
  serve?: Omit<ServeOptions, 'policy' | 'routes'>;
  gateway?: GatewayOptions;
  log?: (line: string) => void;
}

/** A model, a gateway serving it, and a data cursor: `step()` runs agentGrpoStep on the next prompts. */
export class AgentTraining {
  readonly config: GrpoConfig;
  private cursor: DataCursor;
  private nextStep = 0;

  private constructor(
    private readonly o: TrainAgentOptions,
    readonly gw: StartedGateway,
  ) {
    this.config = grpoConfig(o.config);
    this.cursor = new DataCursor(o.train.length, this.config.seed);
  }

  static async start(o: TrainAgentOptions): Promise<AgentTraining> {
    if (o === null || typeof o !== 'object')
      throw invalidParameterError('options', 'an object {model, tokenizer, train, agent}', o);
    if (!Array.isArray(o.train) || o.train.length === 0)
      throw invalidParameterError('train', 'a non-empty array of samples', o.train);
    const policy = new LocalPolicy({ model: o.model, tokenizer: o.tokenizer });
    const gw = await startGateway(policy, {
      serve: o.serve,
      gateway: { seed: grpoConfig(o.config).seed, ...o.gateway },
    });
    return new AgentTraining(o, gw);
  }

  get gateway(): Gateway {
    return this.gw.gateway;
  }

  /** The agent the steps run. */
  get agent(): AgentOptions {
    return this.o.agent;
  }

  get globalStep(): number {
    return this.nextStep;
  }

  async step(signal?: AbortSignal): Promise<AgentStepOutput> {
    const samples = this.cursor.take(this.config.promptsPerStep).map((i) => this.o.train[i]!);
    const out = await agentGrpoStep({
      model: this.o.model,
      gateway: this.gw.gateway,
      agent: this.o.agent,
      config: this.config,
      samples,
      step: this.nextStep,
      signal,
      log: this.o.log,
    });
    this.nextStep++;
    return out;
  }

  /** Run `steps` steps; `onStep` after each. */
  async run(
    steps: number,
    onStep?: (out: AgentStepOutput) => void | Promise<void>,
    signal?: AbortSignal,
  ): Promise<AgentStepMetrics[]> {
    const all: AgentStepMetrics[] = [];
    for (let i = 0; i < steps && !signal?.aborted; i++) {
      const out = await this.step(signal);
      all.push(out.metrics);
      await onStep?.(out);
    }
    return all;
  }

  /** Stop the gateway's server (the model stays the caller's). */
  close(): Promise<void> {
    return this.gw.close();
  }
}
