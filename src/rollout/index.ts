/** Rollouts: the Policy interface, the local engine and OpenAI-compatible servers behind it, runners, comparisons. */
export type { Completion, Policy, SamplingOptions } from './types.js';
// LocalPolicy, OpenAIPolicy, evaluatePolicies: at the package's top level (src/index.ts), so not repeated here.
export {
  ContextLengthError,
  tokenBytes,
  type LocalPolicyOptions,
  type LoadLocalPolicyOptions,
  type LocalSampling,
  type LocalChoice,
  type LocalGeneration,
} from './local.js';
export {
  TokenIdsRequiredError,
  imageDataUrl,
  parseOpenAISpec,
  sniffImageMime,
  tokenIdsOf,
  type OpenAIPolicyOptions,
  type OpenAIPolicyStats,
} from './openai.js';
export {
  RequestScheduler,
  RequestError,
  MalformedReplyError,
  isRetryable,
  describeFailure,
  runPool,
  rollout,
  type SchedulerOptions,
  type RetryOptions,
  type SchedulerStats,
  type Attempted,
  type PoolResult,
  type PoolOptions,
  type RolloutResult,
  type RolloutOptions,
  type RequestErrorKind,
} from './runner.js';
export {
  comparisonToJson,
  percentile,
  priceFor,
  type EvaluatePoliciesOptions,
  type PolicyComparison,
  type PolicyReport,
  type QuestionResult,
  type Price,
  type PriceTable,
} from './compare.js';
export { policyFromSpec, resolveApiKey, type PolicySpecOptions } from './spec.js';
export { readSamplesFile, sampleFromRow } from './samples.js';
export { OnnxPolicy, OnnxModel } from './onnx.js';
