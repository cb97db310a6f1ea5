/**
 * V8's code cache for the TypeScript compiler the kernel loads (tslab's fork: one 8 MB script).
 * Each start otherwise parses that script and compiles, one by one, the hundreds of functions
 * the converter then calls (parser, binder, checker); with the cache, V8 takes their bytecode
 * from a file written by an earlier start. Stock tslab has no such cache.
 *
 * The compiler is loaded once through `vm.Script` with the cached data and put into Node's
 * require cache, so tslab's own `require` of it gets this very module. The cache file is keyed
 * by the script's path, size and mtime, Node's version and the architecture (V8 also checks its
 * own version and flags, and rejects a cache that does not fit: then the script compiles as
 * usual). It is written once, after the kernel's first completion or cell (the functions those
 * compiled are in it), into a temporary file renamed into place, under the temporary directory.
 * Any failure falls back to a plain `require`.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import vm from 'node:vm';

interface Loaded {
  script: vm.Script;
  cacheFile: string;
  /** V8 accepted the cached data: nothing to write. */
  hit: boolean;
}

let loaded: Loaded | undefined;

export function codeCacheDir(): string {
  const user = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `vqalab-kernel-v8-cache-${user}`);
}

/**
 * Load `file` (a CommonJS script) with V8's code cache into the require cache of `requireFrom`.
 * Returns false when it was already loaded or could not be loaded this way (the caller then
 * requires it as usual).
 */
export function loadWithCodeCache(requireFrom: NodeJS.Require, specifier: string): boolean {
  try {
    const file = requireFrom.resolve(specifier);
    if (requireFrom.cache[file]) return false;
    const st = statSync(file);
    const key = createHash('sha256')
      .update(JSON.stringify([file, st.size, st.mtimeMs, process.version, process.arch]))
      .digest('hex')
      .slice(0, 16);
    const cacheFile = path.join(codeCacheDir(), `${path.basename(file)}-${key}.bin`);
    let cachedData: Buffer | undefined;
    try {
      cachedData = readFileSync(cacheFile);
    } catch {
      cachedData = undefined;
    }
    const source = readFileSync(file, 'utf8');
    const script = new vm.Script(Module.wrap(source), { filename: file, cachedData });
    const m = new Module(file) as Module & { filename: string; paths: string[]; loaded: boolean };
    m.filename = file;
    m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
    requireFrom.cache[file] = m;
    try {
      const fn = script.runInThisContext() as (
        exports: unknown,
        require: NodeJS.Require,
        module: unknown,
        filename: string,
        dirname: string,
      ) => void;
      fn.call(m.exports, m.exports, createRequire(file), m, file, path.dirname(file));
    } catch (err) {
      delete requireFrom.cache[file];
      throw err;
    }
    m.loaded = true;
    loaded = { script, cacheFile, hit: cachedData !== undefined && !script.cachedDataRejected };
    return true;
  } catch {
    return false;
  }
}

/** Whether the last load used a cache V8 accepted (for the kernel's log). */
export function codeCacheHit(): boolean | undefined {
  return loaded?.hit;
}

/** Write the cache of the loaded script, once, when it had none that V8 accepted. */
export function saveCodeCache(): void {
  const l = loaded;
  if (!l || l.hit) return;
  l.hit = true;
  try {
    mkdirSync(path.dirname(l.cacheFile), { recursive: true });
    const tmp = `${l.cacheFile}.${process.pid}.tmp`;
    writeFileSync(tmp, l.script.createCachedData());
    renameSync(tmp, l.cacheFile);
  } catch {
    // A cache is an optimisation: a read-only or full disk only costs the next start its speed.
  }
}
