/**
 * Shared by the kernel's integration tests: a Python that has Jupyter's test tools, the
 * kernelspec installed into a throwaway prefix (found through JUPYTER_PATH, so no user or system
 * kernelspec is touched), and running Python scripts against it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installKernelspec } from '../../src/jupyter/kernelspec.js';

/** test/kernel/python in the source tree (Python files are not compiled into dist/). */
export const pythonDir = fileURLToPath(new URL('../../../test/kernel/python/', import.meta.url));
/** The repository root. */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * A Python 3 that can import `modules`. Debian's packages live in /usr/bin/python3's
 * dist-packages; a pyenv or venv python3 first on PATH usually lacks them.
 */
export function findPython(modules: string[]): string {
  const candidates = [process.env.VQALAB_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => Boolean(p));
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', modules.map((m) => `import ${m}`).join('; ')], { encoding: 'utf8' });
    if (r.status === 0) return python;
  }
  throw new Error(
    `no Python 3 with ${modules.join(', ')} (tried ${candidates.join(', ')}); ` +
      'run scripts/system-deps.sh as root, or set VQALAB_PYTHON',
  );
}

export interface TempKernel {
  /** Environment for Jupyter clients: finds our kernelspec first, keeps runtime files in the temp dir. */
  env: NodeJS.ProcessEnv;
  /** A directory outside this package, for notebooks and as the kernel's working directory. */
  workDir: string;
  cleanup(): void;
}

/** Install the kernelspec into a fresh temporary prefix. */
export async function installTempKernel(): Promise<TempKernel> {
  const root = mkdtempSync(path.join(tmpdir(), 'vqalab-kernel-test-'));
  await installKernelspec({ prefix: root });
  const workDir = path.join(root, 'work');
  mkdirSync(workDir);
  const env = {
    ...process.env,
    JUPYTER_PATH: path.join(root, 'share', 'jupyter'),
    JUPYTER_RUNTIME_DIR: path.join(root, 'runtime'),
    // Quiet Python's warnings about the environment; they are not ours to fix.
    PYTHONWARNINGS: 'ignore',
  };
  return { env, workDir, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a Python script to completion (killing it after `timeoutMs`). */
export function runPython(
  python: string,
  args: string[],
  options: { env: NodeJS.ProcessEnv; cwd: string; timeoutMs: number },
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, args, { env: options.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${options.timeoutMs} ms]`;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
