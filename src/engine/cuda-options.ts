/**
 * The CUDA backend's options (loadModel's `cuda`), validated here before anything is allocated: the native
 * code copies them into its CudaOptions (native/src/cuda/cuda_options.h) and reads nothing else. Each field
 * has a VQALAB_CUDA_* variable as a fallback for the GPU session scripts, which run node tools they cannot
 * pass options to (scripts/gpu/run-all.sh: the fp32 parity pass, the attention fallback); a field given in
 * `options.cuda` wins over its variable, and a malformed variable is refused naming it (docs/cuda.md, "Options").
 */
import { describeValue, expectBoolean, expectInteger, expectOneOf, invalidParameterError } from '../util/validate.js';
import type { CudaOptions } from './types.js';

type Kind = 'boolean' | 'positive integer' | readonly string[];

/** Every field: its type or allowed values and its fallback variable. Defaults live in native (cuda_options.h). */
const FIELDS: { readonly [K in keyof Required<CudaOptions>]: { kind: Kind; env: string } } = {
  precision: { kind: ['bf16', 'fp32'], env: 'VQALAB_CUDA_PRECISION' },
  offloadOptimizer: { kind: 'boolean', env: 'VQALAB_CUDA_OFFLOAD' },
  bf16Moments: { kind: 'boolean', env: 'VQALAB_CUDA_BF16_MOMENTS' },
  checkpointActivations: { kind: 'boolean', env: 'VQALAB_CUDA_CHECKPOINT' },
  packRows: { kind: 'positive integer', env: 'VQALAB_CUDA_PACK_ROWS' },
  graphs: { kind: 'boolean', env: 'VQALAB_CUDA_GRAPH' },
  loraSingleRounding: { kind: 'boolean', env: 'VQALAB_CUDA_LORA_PAIRS' },
  loraMergedSampling: { kind: 'boolean', env: 'VQALAB_CUDA_LORA_MERGED' },
  attention: { kind: ['fused', 'gemm'], env: 'VQALAB_CUDA_ATTN' },
  syncEveryOp: { kind: 'boolean', env: 'VQALAB_CUDA_SYNC' },
  profile: { kind: 'boolean', env: 'VQALAB_CUDA_PROFILE' },
};
const NAMES = Object.keys(FIELDS) as (keyof CudaOptions)[];

/** The variables of earlier builds that no longer choose anything (their kernels moved to native/dev). */
const RETIRED: Readonly<Record<string, string>> = {
  VQALAB_CUDA_FLASH: 'the one-stage attention kernels are a test variant now (native/dev/flash_variants.cu)',
  VQALAB_CUDA_DECODE: 'small attention calls always take the split decode kernel now (native/dev/flash_variants.cu)',
};

function checkValue(name: string, kind: Kind, value: unknown): unknown {
  if (kind === 'boolean') return expectBoolean(name, value);
  if (kind === 'positive integer') return expectInteger(name, value, 1);
  return expectOneOf(name, value, kind);
}

/** A variable's text as the field's value: booleans are 0 or 1, integers decimal digits. */
function fromEnv(variable: string, kind: Kind, text: string): unknown {
  if (kind === 'boolean') {
    if (text === '1') return true;
    if (text === '0') return false;
    throw new TypeError(`Expected 0 or 1 for the environment variable ${variable} but received ${describeValue(text)}`);
  }
  if (kind === 'positive integer') {
    const n = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 1)
      throw new TypeError(
        `Expected a positive integer for the environment variable ${variable} but received ${describeValue(text)}`,
      );
    return n;
  }
  if (!kind.includes(text))
    throw new TypeError(
      `Expected one of ${kind.map((a) => JSON.stringify(a)).join(', ')} for the environment variable ${variable} but received ${describeValue(text)}`,
    );
  return text;
}

/** Validates `options.cuda` (exact messages: field name, expected type or values); returns the fields given. */
export function checkCudaOptions(o: unknown): CudaOptions {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw invalidParameterError('options.cuda', 'object', o);
  const c = o as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(c)) {
    if (!(NAMES as string[]).includes(k))
      throw invalidParameterError(`options.cuda.${k}`, `one of ${NAMES.join(', ')}`, c[k]);
    if (c[k] === undefined) continue;
    out[k] = checkValue(`options.cuda.${k}`, FIELDS[k as keyof CudaOptions].kind, c[k]);
  }
  return out as CudaOptions;
}

/**
 * The options a CUDA model is made with: the fields of `given` (already checked), else their VQALAB_CUDA_*
 * variable when set and not empty, else absent (native default). Throws on a malformed or retired variable.
 */
export function cudaOptionsWithEnv(given: CudaOptions, env: NodeJS.ProcessEnv = process.env): CudaOptions {
  for (const [variable, why] of Object.entries(RETIRED)) {
    if (env[variable]) throw new Error(`the environment variable ${variable} is no longer read: ${why}; unset it`);
  }
  const out: Record<string, unknown> = { ...given };
  for (const k of NAMES) {
    const text = env[FIELDS[k].env];
    if (out[k] === undefined && text !== undefined && text !== '')
      out[k] = fromEnv(FIELDS[k].env, FIELDS[k].kind, text);
  }
  return out as CudaOptions;
}
