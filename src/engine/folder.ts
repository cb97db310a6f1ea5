/**
 * Which folder to load: any folder a user would point at (a Hugging Face checkpoint, a vqalab
 * trainer checkpoint, a run folder, a PEFT adapter) resolved to the engine's inputs.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { invalidParameterError } from '../util/validate.js';
import type { LoraConfig } from './types.js';

/** A checkpoint folder (has trainer.json), or a folder whose `latest` (or checkpoints/latest) names one. */
export function resolveCheckpoint(dir: string): string {
  if (existsSync(path.join(dir, 'trainer.json'))) return dir;
  for (const base of [dir, path.join(dir, 'checkpoints')]) {
    const latest = path.join(base, 'latest');
    if (existsSync(latest)) {
      const name = readFileSync(latest, 'utf8').trim();
      const ckpt = path.join(base, name);
      if (existsSync(path.join(ckpt, 'trainer.json'))) return ckpt;
      throw new Error(`${latest} names ${name}, but ${ckpt}/trainer.json does not exist`);
    }
  }
  throw new Error(`${dir}: not a checkpoint (no trainer.json) and no checkpoints/latest to follow`);
}

/** What a folder holds, resolved to the engine's inputs. */
export interface ResolvedCheckpoint {
  /** The Hugging Face model folder (config.json + weights). */
  modelDir: string;
  /** A PEFT adapter folder to load on top, when the folder given was one. */
  adapterDir?: string;
  lora?: LoraConfig;
  /** Where the tokenizer and processor files are. */
  tokenizerDir: string;
}

/**
 * Any folder a user would point at: a Hugging Face checkpoint, a vqalab trainer checkpoint
 * (trainer.json + model/), a run folder (checkpoints/latest), or a PEFT adapter folder
 * (adapter_config.json naming its base model).
 */
export function resolveModelFolder(dir: string): ResolvedCheckpoint {
  if (typeof dir !== 'string' || dir === '') throw invalidParameterError('dir', 'non-empty string', dir);
  if (!existsSync(dir)) throw new Error(`${dir}: no such folder`);
  if (existsSync(path.join(dir, 'config.json'))) return { modelDir: dir, tokenizerDir: dir };
  const adapterConfig = path.join(dir, 'adapter_config.json');
  if (existsSync(adapterConfig)) {
    let cfg: Record<string, any>;
    try {
      cfg = JSON.parse(readFileSync(adapterConfig, 'utf8')) as Record<string, any>;
    } catch (err) {
      throw new Error(`${adapterConfig}: invalid JSON (${(err as Error).message})`);
    }
    const base = cfg.base_model_name_or_path;
    if (typeof base !== 'string' || !existsSync(path.join(base, 'config.json'))) {
      throw new Error(
        `${adapterConfig}: base_model_name_or_path ${JSON.stringify(base)} is not a local model folder; load the base with the adapter explicitly`,
      );
    }
    const targets = cfg.vqalab?.targetModules ?? cfg.target_modules;
    if (!Array.isArray(targets) || typeof cfg.r !== 'number' || typeof cfg.lora_alpha !== 'number') {
      throw new Error(`${adapterConfig}: expected r, lora_alpha and target_modules (a list) of a PEFT LoRA adapter`);
    }
    const lora: LoraConfig = {
      rank: cfg.r,
      alpha: cfg.lora_alpha,
      targetModules: targets as string[],
      vision: Boolean(cfg.vqalab?.vision),
    };
    return {
      modelDir: base,
      adapterDir: dir,
      lora,
      tokenizerDir: existsSync(path.join(dir, 'tokenizer.json')) ? dir : base,
    };
  }
  let ckpt: string;
  try {
    ckpt = resolveCheckpoint(dir);
  } catch {
    throw new Error(
      `${dir}: not a model folder (no config.json), a vqalab checkpoint (trainer.json + model/, or checkpoints/latest) nor a PEFT adapter (adapter_config.json)`,
    );
  }
  const model = path.join(ckpt, 'model');
  if (!existsSync(path.join(model, 'config.json')))
    throw new Error(`${ckpt}: trainer checkpoint without model/config.json`);
  return { modelDir: model, tokenizerDir: model };
}
