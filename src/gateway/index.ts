/** The training gateway: Agent Lightning's runner contract on `vqalab serve` (see docs/agents.md). */
export {
  Gateway,
  type GatewayOptions,
  type GatewayStats,
  type AttemptRecord,
  type AttemptEndpoint,
  type AttemptStatus,
  type RecordedCall,
  type RecordedChoice,
  type GatewayEvent,
  type FinishInfo,
} from './gateway.js';
export {
  trajectoryOf,
  trajectorySegments,
  policyTokens,
  type Trajectory,
  type TrajectorySegment,
  type TrajectoryOptions,
} from './trajectory.js';
export { startGateway, type StartedGateway } from './start.js';
export {
  updateOnAgentGroups,
  maskedGrpoLoss,
  type AgentUpdateOptions,
  type AgentUpdateResult,
  type MaskedRow,
} from './train.js';
export {
  agentGrpoStep,
  runAgentStep,
  AgentTraining,
  type AgentStepMetrics,
  type AgentStepOutput,
  type TrainAgentOptions,
} from './loop.js';
export {
  runAgentAttempt,
  rolloutAgentGroups,
  vqaTaskEnv,
  type AgentOptions,
  type AgentGroup,
  type AgentRolloutOptions,
} from './agent.js';
export { agentGroupPayload, showAgentGroup, attemptTurns, type AgentGroupViewOptions } from './view.js';
export { agentTrainerStep, type AgentTrainerStepInputs } from './trainer-step.js';
export { weightPush, type WeightPushOptions, type WeightPusher } from './push.js';
export { attemptHost, localAttempts, type AttemptHost, type OpenedAttempt } from './host.js';
export {
  RemoteAttempts,
  recordFromJson,
  remoteWeightVersion,
  StaleWeightsError,
  type RemoteAttemptsOptions,
  type RemoteGatewayTarget,
} from './remote.js';
export { remoteAgentStep, checkRemoteGateway, type RemoteStepOutput } from './remote-step.js';
