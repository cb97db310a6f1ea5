/**
 * The "TypeScript (vqalab)" kernelspec: where Jupyter looks for kernelspecs, and installing,
 * listing and removing ours. The spec's argv names this installed package's launcher with an
 * absolute Node.js path, so the kernel starts the same whatever the notebook's directory or PATH.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAtomicOutput } from '../src/util/fs.js';
import { DISPLAY_NAME, KERNEL_NAME, packageVersion } from './info.js';

/** The launcher the kernelspec runs (this file's sibling main.js). */
export const launcherPath = fileURLToPath(new URL('./main.js', import.meta.url));
/** This package's root directory. */
export const packageRoot = fileURLToPath(new URL('../../', import.meta.url)).replace(/[\\/]$/, '');

export interface KernelJson {
  argv: string[];
  display_name: string;
  language: string;
  interrupt_mode: 'signal' | 'message';
  env: Record<string, string>;
  metadata: Record<string, unknown>;
}

export function kernelJson(): KernelJson {
  return {
    argv: [process.execPath, launcherPath, '--connection-file', '{connection_file}'],
    display_name: DISPLAY_NAME,
    language: 'typescript',
    // Jupyter's interrupt button sends SIGINT; the kernel turns it into an interrupt of the cell
    // and of the runtime's loops (docs/kernel.md).
    interrupt_mode: 'signal',
    env: {},
    metadata: { vqalab: { version: packageVersion(), package: packageRoot } },
  };
}

/** Where to install: exactly one of user / prefix / sysPrefix, or none for the default. */
export interface Location {
  user?: boolean;
  prefix?: string;
  sysPrefix?: boolean;
  /** The Python whose sys.prefix `sysPrefix` means (default python3 on PATH). */
  python?: string;
}

/** Jupyter's per-user data directory (jupyter_core's jupyter_data_dir). */
export function userDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.JUPYTER_DATA_DIR) return path.resolve(env.JUPYTER_DATA_DIR);
  const home = os.homedir();
  if (process.platform === 'darwin') return path.join(home, 'Library', 'Jupyter');
  if (process.platform === 'win32') return path.join(env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), 'jupyter');
  return path.join(env.XDG_DATA_HOME || path.join(home, '.local', 'share'), 'jupyter');
}

/** The system-wide data directories Jupyter searches (after the user's and the environment's). */
export function systemDataDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  if (process.platform === 'win32') return [path.join(env.PROGRAMDATA ?? 'C:\\ProgramData', 'jupyter')];
  return ['/usr/local/share/jupyter', '/usr/share/jupyter'];
}

export function pythonSysPrefix(python = 'python3'): string {
  const r = spawnSync(python, ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`cannot ask ${python} for its sys.prefix (${r.error?.message ?? r.stderr.trim()}); pass --python with the Python that runs Jupyter`);
  }
  return r.stdout.trim();
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** The `kernels` directory of a location. Default: the user's, or the system's when run as root. */
export function kernelsDir(loc: Location = {}): string {
  const chosen = [loc.user, loc.prefix !== undefined, loc.sysPrefix].filter(Boolean).length;
  if (chosen > 1) throw new Error('choose one of --user, --prefix and --sys-prefix');
  if (loc.prefix !== undefined) return path.join(path.resolve(loc.prefix), 'share', 'jupyter', 'kernels');
  if (loc.sysPrefix) return path.join(pythonSysPrefix(loc.python), 'share', 'jupyter', 'kernels');
  if (loc.user || !isRoot()) return path.join(userDataDir(), 'kernels');
  return path.join(systemDataDirs()[0]!, 'kernels');
}

/** Write the kernelspec (atomically: a half-written spec never shows up in Jupyter). Returns its directory. */
export async function installKernelspec(loc: Location = {}, name = KERNEL_NAME): Promise<string> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`kernel name "${name}" may only use letters, digits, ".", "_" and "-"`);
  if (!existsSync(launcherPath)) throw new Error(`the kernel launcher ${launcherPath} is missing; run "npm run build" first`);
  const dir = path.join(kernelsDir(loc), name);
  mkdirSync(path.dirname(dir), { recursive: true });
  await withAtomicOutput(dir, async (tmp) => {
    mkdirSync(tmp, { recursive: true });
    writeFileSync(path.join(tmp, 'kernel.json'), `${JSON.stringify(kernelJson(), null, 2)}\n`);
  });
  return dir;
}

/** Every data directory Jupyter searches for kernelspecs, in its order (jupyter_core's jupyter_path). */
export function jupyterPath(env: NodeJS.ProcessEnv = process.env, python?: string): string[] {
  const dirs = (env.JUPYTER_PATH ?? '').split(path.delimiter).filter(Boolean).map((d) => path.resolve(d));
  dirs.push(userDataDir(env));
  try {
    dirs.push(path.join(pythonSysPrefix(python), 'share', 'jupyter'));
  } catch {
    // No Python: Jupyter cannot run here either; list what we can.
  }
  dirs.push(...systemDataDirs(env));
  return [...new Set(dirs)];
}

export interface FoundSpec {
  name: string;
  dir: string;
  spec: Partial<KernelJson>;
  /** The launcher its argv names. */
  launcher: string | undefined;
  /** Its launcher is this package's. */
  thisPackage: boolean;
  /** Its launcher file exists. */
  launcherExists: boolean;
  /** Another spec of the same name earlier on the search path wins over this one. */
  shadowed: boolean;
}

function isOurs(spec: Partial<KernelJson>): boolean {
  return Boolean((spec.metadata as { vqalab?: unknown } | undefined)?.vqalab)
    || (spec.argv ?? []).some((a) => /dist[\\/]kernel[\\/]main\.js$/.test(a));
}

/** The vqalab kernelspecs on Jupyter's search path (or in `dirs`). */
export function listKernelspecs(dirs: string[] = jupyterPath()): FoundSpec[] {
  const found: FoundSpec[] = [];
  const seen = new Set<string>();
  for (const data of dirs) {
    const kernels = path.join(data, 'kernels');
    let names: string[];
    try {
      names = readdirSync(kernels);
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      const file = path.join(kernels, name, 'kernel.json');
      let spec: Partial<KernelJson>;
      try {
        spec = JSON.parse(readFileSync(file, 'utf8')) as Partial<KernelJson>;
      } catch {
        continue;
      }
      const shadowed = seen.has(name.toLowerCase());
      seen.add(name.toLowerCase());
      if (!isOurs(spec)) continue;
      const launcher = (spec.argv ?? []).find((a) => /\.js$/.test(a));
      found.push({
        name, dir: path.join(kernels, name), spec, launcher, shadowed,
        thisPackage: launcher !== undefined && path.resolve(launcher) === launcherPath,
        launcherExists: launcher !== undefined && existsSync(launcher),
      });
    }
  }
  return found;
}

/** Remove the kernelspec `name` from a location; returns the directory removed, or null if none was there. */
export function removeKernelspec(loc: Location = {}, name = KERNEL_NAME): string | null {
  const dir = path.join(kernelsDir(loc), name);
  if (!existsSync(path.join(dir, 'kernel.json'))) return null;
  const spec = JSON.parse(readFileSync(path.join(dir, 'kernel.json'), 'utf8')) as Partial<KernelJson>;
  if (!isOurs(spec)) throw new Error(`${dir} is not a vqalab kernelspec; not removing it`);
  rmSync(dir, { recursive: true, force: true });
  return dir;
}
