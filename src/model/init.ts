/**
 * Initial weights as transformers' Qwen2VLPreTrainedModel._init_weights sets them: Linear, Conv3d
 * and Embedding weights ~ N(0, initializer_range²), biases 0, LayerNorm/RMSNorm weights 1.
 * The normals come from our seeded generator (src/util/rng.ts), drawn tensor by tensor in spec
 * order, so a seed gives the same checkpoint on every machine (not the numbers torch would draw).
 */
import { Rng } from '../util/rng.js';
import { numelOf, type TensorSpec } from './qwen2vl.js';

export function initTensors(specs: readonly TensorSpec[], seed: number, std: number): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const out = new Map<string, Float32Array>();
  for (const s of specs) {
    const a = new Float32Array(numelOf(s.shape));
    if (s.init === 'ones') a.fill(1);
    else if (s.init === 'normal') for (let i = 0; i < a.length; i++) a[i] = rng.normal() * std;
    out.set(s.name, a);
  }
  return out;
}
