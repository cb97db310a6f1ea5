/**
 * The CUDA backend's options (src/engine/cuda-options.ts): every field validated with an exact message, the
 * VQALAB_CUDA_* variables as a fallback that an explicit field wins over, and loadModel refusing bad values
 * before the native engine is called (on this machine a CUDA load would otherwise fail in native code).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkCudaOptions, cudaOptionsWithEnv } from '../../src/engine/cuda-options.js';
import { loadModel } from '../../src/engine/model.js';
import { fixture } from './helpers.js';

const policy = `${fixture('tied_gqa2_one_image').dir}/policy`;

test('checkCudaOptions: every field is checked by name and type', () => {
  const all = {
    precision: 'fp32',
    offloadOptimizer: true,
    bf16Moments: false,
    checkpointActivations: true,
    packRows: 1024,
    graphs: false,
    loraSingleRounding: false,
    loraMergedSampling: false,
    attention: 'gemm',
    syncEveryOp: true,
    profile: true,
  } as const;
  assert.deepEqual(checkCudaOptions(all), all);
  assert.deepEqual(checkCudaOptions({ graphs: undefined }), {});
  assert.throws(() => checkCudaOptions({ attention: 'flash' }), {
    message: 'Expected one of "fused", "gemm" for options.cuda.attention but received "flash" of type string',
  });
  assert.throws(() => checkCudaOptions({ precision: 'fp16' }), {
    message: 'Expected one of "bf16", "fp32" for options.cuda.precision but received "fp16" of type string',
  });
  assert.throws(() => checkCudaOptions({ loraSingleRounding: 1 }), {
    message: 'Expected boolean for options.cuda.loraSingleRounding but received 1 of type number',
  });
  assert.throws(() => checkCudaOptions({ packRows: 2.5 }), {
    message: 'Expected positive integer for options.cuda.packRows but received 2.5 of type number',
  });
  assert.throws(() => checkCudaOptions({ syncEveryOp: 'yes' }), {
    message: 'Expected boolean for options.cuda.syncEveryOp but received "yes" of type string',
  });
  assert.throws(() => checkCudaOptions({ flash: 'simple' }), {
    message:
      'Expected one of precision, offloadOptimizer, bf16Moments, checkpointActivations, packRows, graphs, loraSingleRounding, loraMergedSampling, attention, syncEveryOp, profile for options.cuda.flash but received "simple" of type string',
  });
  assert.throws(() => checkCudaOptions(null), { message: 'Expected object for options.cuda but received null' });
});

test('cudaOptionsWithEnv: the variables fill absent fields only, and a malformed one is refused by name', () => {
  const env = {
    VQALAB_CUDA_GRAPH: '0',
    VQALAB_CUDA_ATTN: 'gemm',
    VQALAB_CUDA_PACK_ROWS: '512',
    VQALAB_CUDA_PRECISION: 'fp32',
    VQALAB_CUDA_LORA_PAIRS: '0',
    VQALAB_CUDA_SYNC: '',
  };
  assert.deepEqual(cudaOptionsWithEnv({ graphs: true }, env), {
    graphs: true,
    attention: 'gemm',
    packRows: 512,
    precision: 'fp32',
    loraSingleRounding: false,
  });
  assert.deepEqual(cudaOptionsWithEnv({}, {}), {});
  assert.throws(() => cudaOptionsWithEnv({}, { VQALAB_CUDA_OFFLOAD: 'yes' }), {
    message: 'Expected 0 or 1 for the environment variable VQALAB_CUDA_OFFLOAD but received "yes" of type string',
  });
  assert.throws(() => cudaOptionsWithEnv({}, { VQALAB_CUDA_PACK_ROWS: '0' }), {
    message:
      'Expected a positive integer for the environment variable VQALAB_CUDA_PACK_ROWS but received "0" of type string',
  });
  assert.throws(() => cudaOptionsWithEnv({}, { VQALAB_CUDA_ATTN: 'flash' }), {
    message:
      'Expected one of "fused", "gemm" for the environment variable VQALAB_CUDA_ATTN but received "flash" of type string',
  });
  // an explicit field does not hide a malformed variable of another field, nor does it excuse a retired one
  assert.throws(() => cudaOptionsWithEnv({ attention: 'fused' }, { VQALAB_CUDA_FLASH: 'simple' }), {
    message:
      'the environment variable VQALAB_CUDA_FLASH is no longer read: the one-stage attention kernels are a test variant now (native/dev/flash_variants.cu); unset it',
  });
});

test('loadModel refuses bad cuda options before the native engine runs', async () => {
  await assert.rejects(loadModel(policy, { device: 'cuda', cuda: { attention: 'flash' as never } }), {
    message: 'Expected one of "fused", "gemm" for options.cuda.attention but received "flash" of type string',
  });
  // on the CPU the fields are checked too (one message whatever the device)
  await assert.rejects(loadModel(policy, { cuda: { profile: 'on' as never } }), {
    message: 'Expected boolean for options.cuda.profile but received "on" of type string',
  });
  const prev = process.env.VQALAB_CUDA_GRAPH;
  process.env.VQALAB_CUDA_GRAPH = 'off';
  try {
    // a CUDA device reads the fallback variables (and refuses this one before any native call) ...
    await assert.rejects(loadModel(policy, { device: 'cuda' }), {
      message: 'Expected 0 or 1 for the environment variable VQALAB_CUDA_GRAPH but received "off" of type string',
    });
    // ... the CPU engine does not read them
    const m = await loadModel(policy);
    assert.equal(m._native.info().device, 'cpu');
  } finally {
    if (prev === undefined) delete process.env.VQALAB_CUDA_GRAPH;
    else process.env.VQALAB_CUDA_GRAPH = prev;
  }
});
