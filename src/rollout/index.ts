/** Rollouts: the Policy interface, the local engine and OpenAI-compatible servers behind it, runners, comparisons. */
export type { Completion, Policy, SamplingOptions } from './types.js';
export {
  LocalPolicy, ContextLengthError, processorOptionsFrom, resolveModelFolder, tokenBytes,
  type LocalPolicyOptions, type LoadLocalPolicyOptions, type LocalSampling, type LocalChoice, type LocalGeneration, type ResolvedCheckpoint,
} from './local.js';
export { OpenAIPolicy, TokenIdsRequiredError, imageDataUrl, parseOpenAISpec, sniffImageMime, tokenIdsOf, type OpenAIPolicyOptions, type OpenAIPolicyStats } from './openai.js';
export type { ChatClient, ChatChoiceTokens, ChatCompletionRequest, ChatContentPart, ChatMessage, ChatRequestOptions } from './chat-client.js';
export {
  RequestScheduler, RequestError, MalformedReplyError, isRetryable, describeFailure, runPool, rollout, sleep,
  type SchedulerOptions, type RetryOptions, type SchedulerStats, type Attempted, type PoolResult, type PoolOptions, type RolloutResult, type RolloutOptions,
  type RequestErrorKind,
} from './runner.js';
export {
  evaluatePolicies, comparisonBundles, comparisonMetrics, comparisonTable, comparisonTableBundle, comparisonText, comparisonToJson, showComparison,
  percentile, priceFor,
  type EvaluatePoliciesOptions, type PolicyComparison, type PolicyReport, type QuestionResult, type Price, type PriceTable,
} from './compare.js';
export { policyFromSpec, resolveApiKey, type PolicySpecOptions } from './spec.js';
export { readSamplesFile, sampleFromRow } from './samples.js';
