/**
 * The agent step of `Trainer({ agent })`, provided by a higher layer. The training gateway
 * (src/gateway/trainer-step.ts) runs on `vqalab serve`, which sits above grpo; it registers its
 * step here when its module loads (the package entry loads it), as the dashboard and the report
 * facts subscribe to the trainer's events, so src/grpo imports nothing from src/gateway.
 */
import type { VqaSample } from '../data/types.js';
import type { EngineModel } from '../engine/types.js';
import type { AgentGroup, AgentOptions } from '../rollout/agent.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import type { GrpoConfig } from './config.js';
import type { StepMetrics } from './metrics.js';

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
    throw new Error("Trainer({ agent }) needs the training gateway: import 'vqalab' (the package entry) or src/gateway/trainer-step.js before the first step");
  }
  return registered;
}
