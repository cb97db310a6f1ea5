/**
 * What a training run tells its report (src/report/facts.ts): the trainer calls `recordFacts` with
 * its config and seeds, the fingerprints of its data, the hash of the weights it started from and
 * of each checkpoint it writes, the engine's version and device, and the final metrics. In the
 * vqalab kernel each call is one small stamp output that `vqalab report` gathers into the header;
 * in a script the facts are kept in memory (`recordedFacts()`), so nothing is printed.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import os from 'node:os';
import { weightFiles } from '../engine/model.js';
import { vqalabVersion } from '../util/package.js';
import { native } from '../engine/native.js';
import type { EngineModel } from '../engine/types.js';

/** A device as the report's stamp names it (src/report/facts.ts's DeviceFact has this shape). */
export interface DeviceFact {
  kind: string;
  name?: string;
  count?: number;
}

/** sha256 of a checkpoint folder's weight files (model.safetensors or its shards, in name order): `sha256:<hex>`. */
export async function weightsHash(dir: string): Promise<string> {
  const h = createHash('sha256');
  for (const file of weightFiles(dir)) {
    await new Promise<void>((resolve, reject) => {
      createReadStream(file)
        .on('data', (chunk) => h.update(chunk))
        .on('end', resolve)
        .on('error', reject);
    });
  }
  return `sha256:${h.digest('hex')}`;
}

/** The folder's weights hash, or undefined when it holds no weights (a model built in memory, a toy engine). */
export async function weightsHashIfAny(dir: string | undefined): Promise<string | undefined> {
  if (!dir) return undefined;
  try {
    return await weightsHash(dir);
  } catch {
    return undefined;
  }
}

/** A line naming the engine a model runs on: vqalab's native engine (with its CPU GEMM kernel and threads), or another implementation. */
export function engineVersion(model: EngineModel): string {
  const name = model.constructor?.name ?? 'engine';
  if (!('_native' in model)) return `${name} (not the native engine) on ${model.device}`;
  let detail = '';
  if (model.device === 'cpu') {
    try {
      detail = `, gemm ${native()._gemmKernel()}, ${native()._threads()} threads`;
    } catch {
      // a build without these internals still names the engine
    }
  }
  return `vqalab native engine ${vqalabVersion()} (${model.device}${detail})`;
}

/** The device a model runs on, for the stamp (a non-CPU device makes `report verify` use tolerances). */
export function deviceFact(model: EngineModel): DeviceFact {
  if (model.device === 'cpu') {
    const cpus = os.cpus();
    return { kind: 'cpu', name: cpus[0]?.model?.trim() || os.arch(), count: cpus.length };
  }
  return { kind: model.device.startsWith('cuda') ? 'cuda' : model.device, name: model.device, count: 1 };
}
