/**
 * Policies named on a command line or in a notebook:
 *
 *   local:<checkpoint>            the native engine on a folder (local:default = the embedded tiny model)
 *   openai:<model>@<base-url>     any OpenAI-compatible server
 *   openai:<model>                the same, base URL from --base-url / $OPENAI_BASE_URL
 *   onnx:<dir>                    an ONNX export (vqalab export onnx) on onnxruntime-node
 *
 * API keys come from an option, from the environment variable named by `apiKeyEnv`, or from
 * $OPENAI_API_KEY; a server that needs none gets "none".
 */
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { LocalPolicy } from './local.js';
import { OpenAIPolicy, parseOpenAISpec } from './openai.js';
import type { SchedulerOptions } from './runner.js';
import type { Policy } from './types.js';

export interface PolicySpecOptions extends SchedulerOptions {
  apiKey?: string;
  /** Environment variable holding the API key (default OPENAI_API_KEY). */
  apiKeyEnv?: string;
  /** Base URL for "openai:<model>" without one (default $OPENAI_BASE_URL). */
  baseURL?: string;
  /** Engine threads of local policies. */
  threads?: number;
  /** OpenAIPolicy: ask for token ids / log-probs (servers that support them). */
  tokenIds?: boolean;
  logprobs?: boolean;
  images?: 'data-url' | 'file-url';
  /** Environment to read (default process.env; tests pass their own). */
  env?: Record<string, string | undefined>;
}

/** The API key an OpenAI policy will use, and where it came from (for messages; never the key itself). */
export function resolveApiKey(options: PolicySpecOptions): { key: string; source: string } {
  const env = options.env ?? process.env;
  if (options.apiKey !== undefined) return { key: options.apiKey, source: 'option' };
  const name = options.apiKeyEnv ?? 'OPENAI_API_KEY';
  const v = env[name];
  if (v) return { key: v, source: `$${name}` };
  if (options.apiKeyEnv !== undefined) throw new Error(`the API key variable ${options.apiKeyEnv} is empty or not set`);
  return { key: 'none', source: 'none' };
}

export async function policyFromSpec(spec: string, options: PolicySpecOptions = {}): Promise<Policy> {
  if (typeof spec !== 'string')
    throw new TypeError(
      `Expected a policy spec string (local:<dir> or openai:<model>@<url>) but received ${typeof spec}`,
    );
  if (spec.startsWith('local:') || spec === 'local') {
    const dir = spec.slice('local:'.length);
    return LocalPolicy.load(dir === '' || dir === 'default' ? DEFAULT_MODEL_DIR : dir, {
      threads: options.threads,
      name: spec === 'local' ? 'local:default' : spec,
    });
  }
  if (spec.startsWith('onnx:')) {
    const { OnnxPolicy } = await import('./onnx.js');
    return OnnxPolicy.load(spec.slice('onnx:'.length), { threads: options.threads, name: spec });
  }
  if (spec.startsWith('openai:')) {
    const { model, baseURL } = parseOpenAISpec(spec);
    const env = options.env ?? process.env;
    const url = baseURL ?? options.baseURL ?? env.OPENAI_BASE_URL;
    const { key } = resolveApiKey(options);
    return new OpenAIPolicy({
      ...options,
      model,
      baseURL: url,
      apiKey: key,
      name: url ? `openai:${model}@${url}` : spec,
    });
  }
  throw new TypeError(
    `unknown policy ${JSON.stringify(spec)}: expected local:<checkpoint> or openai:<model>@<base-url> (or onnx:<export folder>)`,
  );
}
