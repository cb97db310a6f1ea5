/**
 * Loads the vqalab runtime into the kernel before the first cell and builds the hidden first cell
 * that puts the prelude's names (kernel/prelude.ts) into the notebook's scope.
 *
 * The runtime is ESM; cells are compiled to CommonJS by tslab's converter. The kernel imports the
 * runtime once, here, and hands the module namespaces to the executor by absolute path (and as
 * `vqalab`), so a cell's `require` of them returns these very objects: one runtime, one display
 * sink, one interrupt scope. The hidden cell imports by absolute path, so the types resolve from
 * this package wherever the notebook lives.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface Preload {
  /** The hidden first cell. */
  source: string;
  /** Names it puts in scope. */
  names: string[];
  /** Specifier → module namespace, for the executor. */
  modules: Map<string, unknown>;
  /** How long importing the runtime took (ms). */
  importMs: number;
}

export const preludePath = fileURLToPath(new URL('./prelude.js', import.meta.url));
export const runtimePath = fileURLToPath(new URL('../src/index.js', import.meta.url));

export async function loadRuntime(): Promise<Preload> {
  const t0 = performance.now();
  const prelude = (await import(pathToFileURL(preludePath).href)) as Record<string, unknown>;
  const runtime = (await import(pathToFileURL(runtimePath).href)) as Record<string, unknown>;
  const importMs = performance.now() - t0;
  const names = Object.keys(prelude).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n)).sort();
  const source = `import { ${names.join(', ')} } from ${JSON.stringify(preludePath)};`;
  const modules = new Map<string, unknown>([
    [preludePath, prelude],
    [runtimePath, runtime],
    ['vqalab', runtime],
  ]);
  return { source, names, modules, importMs };
}
