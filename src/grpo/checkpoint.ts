/**
 * Trainer checkpoints as free functions: a folder with model/ (Hugging Face folder with the
 * optimizer state and the tokenizer files) and trainer.json (config, step, RNG, data cursors,
 * metrics history), written to a temporary folder and renamed into place. A save that was killed
 * leaves its temporary folder (`.checkpoint-NNNNNN.tmp-PID-HEX`); the next save or resume in the
 * same folder removes those whose process is gone.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { EngineModel } from '../engine/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { resolveCheckpoint } from '../engine/folder.js';
import { withAtomicOutput, writeFileAtomic } from '../util/fs.js';
import type { GrpoConfig } from './config.js';
import type { CursorState } from './cursor.js';
import type { StepMetrics } from './metrics.js';
import type { RngState } from '../util/rng.js';

export interface TrainerState {
  step: number;
  sftStep: number;
  rng: RngState;
  cursor: CursorState;
  sftCursor: CursorState;
  referenceDir?: string;
}

export interface CheckpointFile extends TrainerState {
  format: 'vqalab.trainer';
  version: 1;
  config: GrpoConfig;
  metrics: unknown[];
  savedAt: string;
}

export const CHECKPOINT_VERSION = 1;
const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'generation_config.json',
  'chat_template.json',
  'chat_template.jinja',
  'preprocessor_config.json',
];
/** Temporary folders of withAtomicOutput (src/util/fs.ts) for checkpoints and the reference copy. */
const TEMP_NAME = /^\.(checkpoint-\d+|reference|latest)\.tmp-(\d+)-[0-9a-f]+$/;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove the temporary folders a killed save left in `dir` (those of processes that no longer
 * run; this process's own are in use). Returns the names removed.
 */
export function removeStaleTemps(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(dir)) {
    const m = TEMP_NAME.exec(name);
    if (!m || processAlive(Number(m[2]))) continue;
    rmSync(path.join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

function jsonSafe(rows: readonly StepMetrics[]): unknown[] {
  return JSON.parse(
    JSON.stringify(rows, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)),
  ) as unknown[];
}

/**
 * Write a checkpoint to `target` atomically. The optimizer state is saved with the weights; before
 * the first optimizer update there is none, and the engine writes an empty one (src/engine/model.ts)
 * that a resume loads as a fresh optimizer.
 */
export async function writeCheckpoint(
  target: string,
  o: {
    model: EngineModel;
    tokenizer: VlmTokenizer;
    tokenizerDir?: string;
    config: Readonly<GrpoConfig>;
    state: TrainerState;
    metrics: readonly StepMetrics[];
  },
): Promise<void> {
  const file: CheckpointFile = {
    format: 'vqalab.trainer',
    version: CHECKPOINT_VERSION,
    config: { ...o.config },
    ...o.state,
    metrics: jsonSafe(o.metrics),
    savedAt: new Date().toISOString(),
  };
  removeStaleTemps(path.dirname(target));
  await withAtomicOutput(target, async (tmp) => {
    await fsp.mkdir(tmp, { recursive: true });
    await o.model.save(path.join(tmp, 'model'), { optimizer: true });
    const tokDir =
      o.tokenizerDir ?? (existsSync(path.join(o.tokenizer.source, 'tokenizer.json')) ? o.tokenizer.source : undefined);
    if (tokDir) {
      for (const f of TOKENIZER_FILES) {
        const src = path.join(tokDir, f),
          dst = path.join(tmp, 'model', f);
        if (existsSync(src) && !existsSync(dst)) copyFileSync(src, dst);
      }
    }
    await fsp.writeFile(path.join(tmp, 'trainer.json'), JSON.stringify(file, null, 1));
  });
}

/**
 * Trainer.save(): the checkpoint goes to `dir`, or by default to
 * outputDir/checkpoints/checkpoint-NNNNNN (the state's step), recorded in checkpoints/latest.
 * Returns the checkpoint's folder.
 */
export async function saveCheckpoint(
  dir: string | undefined,
  outputDir: string | undefined,
  o: Parameters<typeof writeCheckpoint>[1],
): Promise<string> {
  if (!dir && !outputDir) throw new Error('save() needs a directory: pass one, or give the Trainer an outputDir');
  const target = path.resolve(
    dir ?? path.join(outputDir!, 'checkpoints', `checkpoint-${String(o.state.step).padStart(6, '0')}`),
  );
  mkdirSync(path.dirname(target), { recursive: true });
  await writeCheckpoint(target, o);
  if (!dir) await writeFileAtomic(path.join(path.dirname(target), 'latest'), `${path.basename(target)}\n`);
  return target;
}

/** Read and check a checkpoint's trainer.json (after removing what killed saves left beside it). */
export function readCheckpoint(dir: string): { dir: string; file: CheckpointFile; state: TrainerState } {
  const ckpt = resolveCheckpoint(dir);
  removeStaleTemps(path.dirname(path.resolve(ckpt)));
  const raw = JSON.parse(readFileSync(path.join(ckpt, 'trainer.json'), 'utf8')) as CheckpointFile;
  if (raw.format !== 'vqalab.trainer')
    throw new Error(`${ckpt}/trainer.json: not a vqalab trainer checkpoint (format ${JSON.stringify(raw.format)})`);
  if (raw.version !== CHECKPOINT_VERSION)
    throw new Error(
      `${ckpt}/trainer.json: checkpoint version ${raw.version}, this vqalab reads version ${CHECKPOINT_VERSION}`,
    );
  const state: TrainerState = {
    step: raw.step,
    sftStep: raw.sftStep,
    rng: raw.rng,
    cursor: raw.cursor,
    sftCursor: raw.sftCursor,
    referenceDir: raw.referenceDir,
  };
  return { dir: ckpt, file: raw, state };
}
