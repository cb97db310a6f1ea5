/**
 * Kernelspecs: where Jupyter looks for `kernels/NAME/kernel.json`, and what one says. The search
 * order follows jupyter_core's `jupyter_path('kernels')` on Linux and macOS: $JUPYTER_PATH entries,
 * the user data dir ($JUPYTER_DATA_DIR, else $XDG_DATA_HOME/jupyter or ~/.local/share/jupyter),
 * environment prefixes ($VIRTUAL_ENV, $CONDA_PREFIX: PREFIX/share/jupyter), then the system dirs
 * (/usr/local/share/jupyter, /usr/share/jupyter). The first directory holding a name wins.
 * Kernels installed with `--prefix P` live in P/share/jupyter/kernels; pass P in `prefixes`.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

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
}

export class KernelSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KernelSpecError';
  }
}

/** The data directories searched, highest priority first, without duplicates. */
export function jupyterDataDirs(opts: KernelSearchOptions = {}): string[] {
  const env = opts.env ?? process.env;
  const dirs: string[] = [];
  for (const p of opts.prefixes ?? []) dirs.push(path.join(path.resolve(p), 'share', 'jupyter'));
  for (const p of (env.JUPYTER_PATH ?? '').split(path.delimiter)) if (p) dirs.push(path.resolve(p));
  const home = env.HOME || os.homedir();
  const user = env.JUPYTER_DATA_DIR
    || (env.XDG_DATA_HOME ? path.join(env.XDG_DATA_HOME, 'jupyter') : path.join(home, '.local', 'share', 'jupyter'));
  const envDirs = [env.VIRTUAL_ENV, env.CONDA_PREFIX].filter((p): p is string => !!p).map((p) => path.join(p, 'share', 'jupyter'));
  // jupyter_core puts environment dirs before the user dir when JUPYTER_PREFER_ENV_PATH is set.
  const preferEnv = /^(1|true|yes|on)$/i.test(env.JUPYTER_PREFER_ENV_PATH ?? '');
  if (preferEnv) dirs.push(...envDirs, user);
  else dirs.push(user, ...envDirs);
  dirs.push('/usr/local/share/jupyter', '/usr/share/jupyter');
  return [...new Set(dirs)];
}

/** Expand `${VAR}` in a kernelspec env value from the current environment (as jupyter_client does). */
function expandEnv(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (m, name: string) => env[name] ?? m);
}

/** Read and check one kernel.json. */
export function readKernelSpec(resourceDir: string, name = path.basename(resourceDir), env: NodeJS.ProcessEnv = process.env): KernelSpec {
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
    throw new KernelSpecError(`${file}: field "interrupt_mode" must be "signal" or "message", got ${JSON.stringify(mode)}`);
  }
  const specEnv: Record<string, string> = {};
  if (raw.env !== undefined) {
    if (typeof raw.env !== 'object' || raw.env === null) throw new KernelSpecError(`${file}: field "env" must be an object`);
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
      `no kernel named "${name}" (found: ${names.length ? names.join(', ') : 'none'}; searched ${jupyterDataDirs(opts).map((d) => path.join(d, 'kernels')).join(', ')})`,
    );
  }
  return readKernelSpec(dir, name.toLowerCase(), opts.env ?? process.env);
}
