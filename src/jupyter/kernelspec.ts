/**
 * Kernelspecs: where Jupyter looks for `kernels/NAME/kernel.json`, what one says, and installing,
 * listing and removing ours ("TypeScript (vqalab)"). Used by the report's kernel runner (any
 * kernel), by `vqalab kernel install|list|remove`, and by the tests that start our kernel.
 *
 * The search order follows jupyter_core's `jupyter_path('kernels')`: extra install prefixes,
 * $JUPYTER_PATH entries, the user data dir ($JUPYTER_DATA_DIR, else $XDG_DATA_HOME/jupyter or
 * ~/.local/share/jupyter; ~/Library/Jupyter on macOS), environment prefixes ($VIRTUAL_ENV,
 * $CONDA_PREFIX: PREFIX/share/jupyter; before the user dir with $JUPYTER_PREFER_ENV_PATH), the
 * sys.prefix of a Python when one is named, then the system dirs (/usr/local/share/jupyter,
 * /usr/share/jupyter). The first directory holding a name wins. Kernels installed with
 * `--prefix P` live in P/share/jupyter/kernels.
 *
 * Our spec's argv names this installed package's launcher (dist/kernel/main.js) with an absolute
 * Node.js path, so the kernel starts the same whatever the notebook's directory or PATH.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withAtomicOutput } from '../util/fs.js';
import { packageRoot, vqalabVersion } from '../util/package.js';

/** Our kernelspec's default name and its display name. */
export const KERNEL_NAME = 'vqalab';
export const DISPLAY_NAME = 'TypeScript (vqalab)';

/** The launcher our kernelspec runs: the kernel's compiled main.js (a path, not an import: kernel/ sits on top of the layers). */
export const launcherPath = fileURLToPath(new URL('../../kernel/main.js', import.meta.url));

export type InterruptMode = 'signal' | 'message';

export interface KernelSpec {
  name: string;
  /** Directory holding kernel.json (the spec's `{resource_dir}`). */
  resourceDir: string;
  argv: string[];
  displayName: string;
  language: string;
  interruptMode: InterruptMode;
  env: Record<string, string>;
  metadata: Record<string, unknown>;
}

export interface KernelSearchOptions {
  /** Install prefixes searched first (their share/jupyter), e.g. from `--prefix P` installs. */
  prefixes?: string[];
  /** Environment to read JUPYTER_PATH etc. from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Also search this Python's sys.prefix/share/jupyter (where `pip install` and `--sys-prefix` put kernels). */
  python?: string;
}

export class KernelSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KernelSpecError';
  }
}

/** Jupyter's per-user data directory (jupyter_core's jupyter_data_dir). */
export function userDataDir(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  home = env.HOME || os.homedir(),
): string {
  if (env.JUPYTER_DATA_DIR) return path.resolve(env.JUPYTER_DATA_DIR);
  if (platform === 'darwin') return path.join(home, 'Library', 'Jupyter');
  if (platform === 'win32') return path.join(env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), 'jupyter');
  return path.join(env.XDG_DATA_HOME || path.join(home, '.local', 'share'), 'jupyter');
}

/** The system-wide data directories Jupyter searches last. */
export function systemDataDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  if (process.platform === 'win32') return [path.join(env.PROGRAMDATA ?? 'C:\\ProgramData', 'jupyter')];
  return ['/usr/local/share/jupyter', '/usr/share/jupyter'];
}

export function pythonSysPrefix(python = 'python3'): string {
  const r = spawnSync(python, ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      `cannot ask ${python} for its sys.prefix (${r.error?.message ?? r.stderr.trim()}); pass --python with the Python that runs Jupyter`,
    );
  }
  return r.stdout.trim();
}

/** The data directories searched, highest priority first, without duplicates. */
export function jupyterDataDirs(opts: KernelSearchOptions = {}): string[] {
  const env = opts.env ?? process.env;
  const dirs: string[] = [];
  for (const p of opts.prefixes ?? []) dirs.push(path.join(path.resolve(p), 'share', 'jupyter'));
  for (const p of (env.JUPYTER_PATH ?? '').split(path.delimiter)) if (p) dirs.push(path.resolve(p));
  const user = userDataDir(env);
  const envDirs = [env.VIRTUAL_ENV, env.CONDA_PREFIX]
    .filter((p): p is string => !!p)
    .map((p) => path.join(p, 'share', 'jupyter'));
  // jupyter_core puts environment dirs before the user dir when JUPYTER_PREFER_ENV_PATH is set.
  const preferEnv = /^(1|true|yes|on)$/i.test(env.JUPYTER_PREFER_ENV_PATH ?? '');
  if (preferEnv) dirs.push(...envDirs, user);
  else dirs.push(user, ...envDirs);
  if (opts.python !== undefined) {
    try {
      dirs.push(path.join(pythonSysPrefix(opts.python), 'share', 'jupyter'));
    } catch {
      // No such Python: Jupyter cannot run from it either; search what we can.
    }
  }
  dirs.push(...systemDataDirs(env));
  return [...new Set(dirs)];
}

/** Expand `${VAR}` in a kernelspec env value from the current environment (as jupyter_client does). */
function expandEnv(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (m, name: string) => env[name] ?? m);
}

/** Read and check one kernel.json. */
export function readKernelSpec(
  resourceDir: string,
  name = path.basename(resourceDir),
  env: NodeJS.ProcessEnv = process.env,
): KernelSpec {
  const file = path.join(resourceDir, 'kernel.json');
  let raw: any;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new KernelSpecError(`${file}: cannot read kernelspec: ${(err as Error).message}`);
  }
  if (!raw || typeof raw !== 'object') throw new KernelSpecError(`${file}: expected a JSON object`);
  if (!Array.isArray(raw.argv) || raw.argv.length === 0 || !raw.argv.every((a: unknown) => typeof a === 'string')) {
    throw new KernelSpecError(`${file}: field "argv" must be a non-empty array of strings`);
  }
  const mode = raw.interrupt_mode ?? 'signal';
  if (mode !== 'signal' && mode !== 'message') {
    throw new KernelSpecError(
      `${file}: field "interrupt_mode" must be "signal" or "message", got ${JSON.stringify(mode)}`,
    );
  }
  const specEnv: Record<string, string> = {};
  if (raw.env !== undefined) {
    if (typeof raw.env !== 'object' || raw.env === null)
      throw new KernelSpecError(`${file}: field "env" must be an object`);
    for (const [k, v] of Object.entries(raw.env)) {
      if (typeof v !== 'string') throw new KernelSpecError(`${file}: env.${k} must be a string`);
      specEnv[k] = expandEnv(v, env);
    }
  }
  return {
    name,
    resourceDir,
    argv: raw.argv,
    displayName: typeof raw.display_name === 'string' ? raw.display_name : name,
    language: typeof raw.language === 'string' ? raw.language : '',
    interruptMode: mode,
    env: specEnv,
    metadata: raw.metadata && typeof raw.metadata === 'object' ? raw.metadata : {},
  };
}

/** Every kernelspec found: name → resource dir (first match wins, names are case-insensitive like Jupyter's). */
export function findKernelSpecs(opts: KernelSearchOptions = {}): Map<string, string> {
  const found = new Map<string, string>();
  for (const dir of jupyterDataDirs(opts)) {
    const kernels = path.join(dir, 'kernels');
    let entries: string[];
    try {
      entries = readdirSync(kernels);
    } catch {
      continue;
    }
    for (const entry of entries.sort()) {
      const rd = path.join(kernels, entry);
      const key = entry.toLowerCase();
      if (found.has(key)) continue;
      try {
        if (statSync(rd).isDirectory() && existsSync(path.join(rd, 'kernel.json'))) found.set(key, rd);
      } catch {
        // unreadable entries are skipped, as jupyter_client does
      }
    }
  }
  return found;
}

/** The kernelspec called `name`; the error lists what was found and where it looked. */
export function getKernelSpec(name: string, opts: KernelSearchOptions = {}): KernelSpec {
  const specs = findKernelSpecs(opts);
  const dir = specs.get(name.toLowerCase());
  if (!dir) {
    const names = [...specs.keys()];
    throw new KernelSpecError(
      `no kernel named "${name}" (found: ${names.length ? names.join(', ') : 'none'}; searched ${jupyterDataDirs(opts)
        .map((d) => path.join(d, 'kernels'))
        .join(', ')})`,
    );
  }
  return readKernelSpec(dir, name.toLowerCase(), opts.env ?? process.env);
}

// ── Our kernelspec ─────────────────────────────────────────────────────────────────────────────

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
    metadata: { vqalab: { version: vqalabVersion(), package: packageRoot() } },
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
  if (!/^[A-Za-z0-9._-]+$/.test(name))
    throw new Error(`kernel name "${name}" may only use letters, digits, ".", "_" and "-"`);
  if (!existsSync(launcherPath))
    throw new Error(`the kernel launcher ${launcherPath} is missing; run "npm run build" first`);
  const dir = path.join(kernelsDir(loc), name);
  mkdirSync(path.dirname(dir), { recursive: true });
  await withAtomicOutput(dir, async (tmp) => {
    mkdirSync(tmp, { recursive: true });
    writeFileSync(path.join(tmp, 'kernel.json'), `${JSON.stringify(kernelJson(), null, 2)}\n`);
  });
  return dir;
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
  return (
    Boolean((spec.metadata as { vqalab?: unknown } | undefined)?.vqalab) ||
    (spec.argv ?? []).some((a) => /dist[\\/]kernel[\\/]main\.js$/.test(a))
  );
}

/** The vqalab kernelspecs on Jupyter's search path (or in `dirs`). */
export function listKernelspecs(dirs: string[] = jupyterDataDirs({ python: 'python3' })): FoundSpec[] {
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
        name,
        dir: path.join(kernels, name),
        spec,
        launcher,
        shadowed,
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
