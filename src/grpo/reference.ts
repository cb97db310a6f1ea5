/**
 * The reference policy of the KL term (β > 0): either the trained model with its LoRA adapters
 * disabled ('lora-base'), or a frozen copy ('copy'), which is the model given as `reference` or
 * the policy's weights saved once (outputDir/reference, else a temporary folder) and loaded by
 * `loadModel` when first needed. A resumed run reuses the saved copy (state.referenceDir).
 */
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { EngineModel } from '../engine/types.js';
import { withAtomicOutput } from '../util/fs.js';
import { removeStaleTemps, type TrainerState } from './checkpoint.js';
import type { GrpoConfig } from './config.js';
import type { TrainerOptions } from './options.js';
import type { RolloutGroup } from './rollout.js';
import { logprobsUnder } from './update.js';

/** The config's reference kind, with 'auto' resolved: 'lora-base' when the model trains adapters only. */
export function referenceKind(config: Readonly<GrpoConfig>, model: EngineModel): 'copy' | 'lora-base' {
  const kind = config.reference;
  if (kind !== 'auto') return kind;
  return model.numParameters.trainable < model.numParameters.total ? 'lora-base' : 'copy';
}

export class ReferencePolicy {
  private reference: EngineModel | undefined;

  constructor(
    private readonly o: {
      model: EngineModel;
      config: Readonly<GrpoConfig>;
      /** The trainer's state: its referenceDir is read and recorded here. */
      state: TrainerState;
      reference?: EngineModel;
      loadModel?: TrainerOptions['loadModel'];
      outputDir?: string;
    },
  ) {
    this.reference = o.reference;
    if (
      o.config.beta > 0 &&
      referenceKind(o.config, o.model) === 'lora-base' &&
      o.model.numParameters.trainable >= o.model.numParameters.total
    ) {
      throw new Error(
        'reference "lora-base" needs a LoRA model (the base with adapters disabled); load the model with LoRA or set reference: "copy"',
      );
    }
  }

  /** The frozen copy (reference 'copy'), saved and loaded on first use. */
  private async copy(): Promise<EngineModel> {
    if (this.reference) return this.reference;
    if (!this.o.loadModel)
      throw new Error(
        'beta > 0 with reference "copy" needs a reference model: pass `reference` or `loadModel` to the Trainer',
      );
    let dir = this.o.state.referenceDir;
    if (!dir || !existsSync(path.join(dir, 'config.json'))) {
      if (this.o.outputDir) {
        removeStaleTemps(this.o.outputDir);
        dir = path.join(this.o.outputDir, 'reference');
      } else {
        dir = await fsp.mkdtemp(path.join(tmpdir(), 'vqalab-reference-'));
      }
      await withAtomicOutput(dir, async (tmp) => {
        await this.o.model.save(tmp, { optimizer: false });
      });
      this.o.state.referenceDir = dir;
    }
    this.reference = await this.o.loadModel(dir, { role: 'reference' });
    return this.reference;
  }

  /** Per-token log-probs of the groups' completions under the reference policy. */
  async logprobs(groups: readonly RolloutGroup[]): Promise<Float32Array[][]> {
    const { model, config } = this.o;
    if (referenceKind(config, model) === 'lora-base') {
      model.setLoraEnabled(false);
      try {
        return await logprobsUnder(model, groups, config.miniBatchPrompts);
      } finally {
        model.setLoraEnabled(true);
      }
    }
    return logprobsUnder(await this.copy(), groups, config.miniBatchPrompts);
  }
}
