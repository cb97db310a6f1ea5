/**
 * File writes that never leave a half-written file behind: write to a temporary sibling, then
 * rename over the target (atomic on POSIX within one file system). An interrupted job leaves
 * either the old file or the new one, never a partial one.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A temporary path next to `target` (same directory, so rename stays on one file system). */
export function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  return path.join(dir, `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempPathFor(target);
  try {
    await fsp.writeFile(tmp, data);
    await fsp.rename(tmp, target);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

export function writeFileAtomicSync(target: string, data: string | Uint8Array): void {
  const tmp = tempPathFor(target);
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, target);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Run `produce(tmpPath)` and rename its result onto `target` only if it succeeds; on failure or
 * interrupt the temporary file (or directory) is removed. For writers that need a path (streams,
 * Parquet writers, directories of checkpoint files).
 */
export async function withAtomicOutput<T>(target: string, produce: (tmpPath: string) => Promise<T>): Promise<T> {
  const tmp = tempPathFor(target);
  const cleanup = () => {
    rmSync(tmp, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  try {
    const result = await produce(tmp);
    await fsp.rm(target, { recursive: true, force: true });
    await fsp.rename(tmp, target);
    return result;
  } catch (err) {
    cleanup();
    throw err;
  } finally {
    process.removeListener('exit', cleanup);
  }
}
