/**
 * The agent step of `Trainer({ agent })`, provided by a higher layer. The training gateway
 * (src/gateway/trainer-step.ts) runs on `vqalab serve`, which sits above grpo; it registers its
 * step here when its module loads (the package entry loads it), as the dashboard and the report
 * facts subscribe to the trainer's events, so src/grpo imports nothing from src/gateway.
 */
import type { VqaSample } from '../data/types.js';
import type { EngineModel } from '../engine/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import type { GrpoConfig } from './config.js';
import type { StepMetrics } from './metrics.js';

/**
 * An agent (docs/agents.md): the `agent` option of the Trainer; src/gateway/agent.ts runs it.
 */
export interface AgentOptions {
  /** The agent: a shell command line (run by /bin/sh -c) or an argv list (no shell). */
  command: string | readonly string[];
  /** Extra environment variables (on top of this process's own, unless `inheritEnv` is false). */
  env?: Record<string, string>;
  /** Agents running at once (default 8). */
  concurrency?: number;
  /** Milliseconds an attempt may run; then its process group gets SIGTERM, SIGKILL 2 s later, and the attempt fails. Default 120000. */
  timeoutMs?: number;
  /** Working directory of the agents (default this process's). */
  cwd?: string;
  /** Pass this process's environment on (default true). */
  inheritEnv?: boolean;
  /** Bytes kept from the end of each attempt's stdout and stderr (default 16384). */
  outputBytes?: number;
  /** The task's variables (default: the VQA fields above). */
  taskEnv?: (sample: VqaSample) => Record<string, string>;
  /**
   * Remote rollouts (docs/agents.md): the attempts are opened on this `vqalab serve
   * --gateway-key-env VAR` (its URL and the value of VAR) instead of a gateway over the trainer's
   * model in this process; the agents still run here. After each update the trainer pushes its
   * weights there, so the next step's rollouts are on-policy.
   */
  gateway?: RemoteAgentGateway;
}

export interface RemoteAgentGateway {
  /** The server's URL (with or without /v1). */
  url: string;
  /** Its admin key (the value of `--gateway-key-env`'s variable). */
  adminKey: string;
  /** What a push sends: "lora" (default for a LoRA model: the adapters) or "full" (every tensor; default otherwise). */
  weights?: 'lora' | 'full';
  /** Leave the records on the server after training on them (default: released). */
  keepRecords?: boolean;
}

/**
 * Types the gateway fills in (module augmentation in src/gateway/agent.ts), so this layer names
 * them without importing the layer above: `group` is the gateway's AgentGroup.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface AgentStepTypes {}

/** One task's attempts as the gateway returns them (its `AgentGroup`; `unknown` if the gateway's types are not loaded). */
export type AgentGroup = AgentStepTypes extends { group: infer G } ? G : unknown;

export interface AgentStepInputs {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  config: Readonly<GrpoConfig>;
  agent: AgentOptions;
  samples: readonly VqaSample[];
  step: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export type AgentStep = (inputs: AgentStepInputs) => Promise<{ metrics: StepMetrics; groups: AgentGroup[] }>;

let registered: AgentStep | undefined;

/** Called once by src/gateway/trainer-step.ts. */
export function registerAgentStep(step: AgentStep): void {
  registered = step;
}

/** The registered agent step; a clear error when the gateway was never loaded. */
export function agentStep(): AgentStep {
  if (!registered) {
    throw new Error(
      "Trainer({ agent }) needs the training gateway: import 'vqalab' (the package entry) or src/gateway/trainer-step.js before the first step",
    );
  }
  return registered;
}
