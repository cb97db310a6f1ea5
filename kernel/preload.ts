/**
 * The vqalab runtime in the kernel: the hidden first cell that puts the prelude's names
 * (kernel/prelude.ts) into the notebook's scope, and the import of the runtime it needs.
 *
 * Start-up type-checks the hidden cell only (the names and their types, from the package's .d.ts
 * files): completion and inspection know the whole runtime as soon as the kernel is ready. The
 * runtime's JavaScript (sharp, apache-arrow, the native engine, ...) is imported when the first
 * cell runs (Executor.declare), so start-up does not wait for it.
 *
 * The runtime is ESM; cells are compiled to CommonJS by tslab's converter. The kernel imports the
 * runtime once and hands the module namespaces to the executor by absolute path (and as
 * `vqalab`), so a cell's `require` of them returns these very objects: one runtime, one display
 * sink, one interrupt scope. The hidden cell imports by absolute path, so the types resolve from
 * this package wherever the notebook lives.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { typescript } from './tslab.js';

export const preludePath = fileURLToPath(new URL('./prelude.js', import.meta.url));
export const runtimePath = fileURLToPath(new URL('../src/index.js', import.meta.url));

/** The hidden first cell, the names it puts in scope, and what tslab's converter makes of it. */
export interface PreludeCell {
  source: string;
  names: string[];
  /** The converter's declaration output for the cell: the import itself. */
  declaration: string;
  /** CommonJS for the cell: each name from the preloaded prelude module onto the notebook's namespace. */
  js: string;
}

/**
 * Import a list of names from the prelude: the names the prelude's declarations export. The
 * declaration imports from `declarationModule` (default: the prelude itself; the kernel passes the
 * declaration copy of kernel/declarations.ts), the code from the prelude module.
 */
export function preludeCell(names: string[], declarationModule = preludePath): PreludeCell {
  const source = `import { ${names.join(', ')} } from ${JSON.stringify(declarationModule)};`;
  const js = `const prelude = require(${JSON.stringify(preludePath)});\n${names.map((n) => `exports.${n} = prelude.${n};`).join('\n')}`;
  return { source, names, declaration: `${source}\n`, js };
}

/**
 * The names the prelude exports, read from its declaration file (prelude.d.ts, next to
 * prelude.js) without importing the runtime. Only `export * as x` and `export { a, b as c }`
 * forms are used there (a test keeps this list equal to the module's keys).
 */
export function preludeNames(dtsFile = preludePath.replace(/\.js$/, '.d.ts')): string[] {
  const ts = typescript();
  const sf = ts.createSourceFile(dtsFile, readFileSync(dtsFile, 'utf8'), ts.ScriptTarget.ES2022, false);
  const names: string[] = [];
  for (const st of sf.statements) {
    if (!ts.isExportDeclaration(st) || st.isTypeOnly || !st.exportClause) continue;
    if (ts.isNamespaceExport(st.exportClause)) names.push(st.exportClause.name.text);
    else for (const el of st.exportClause.elements) if (!el.isTypeOnly) names.push(el.name.text);
  }
  return names.filter((n) => /^[A-Za-z_$][\w$]*$/.test(n)).sort();
}

/** Import the runtime: specifier → module namespace, for the executor; and how long it took. */
export async function importRuntime(): Promise<{ modules: Map<string, unknown>; names: string[]; importMs: number }> {
  const t0 = performance.now();
  const prelude = (await import(pathToFileURL(preludePath).href)) as Record<string, unknown>;
  const runtime = (await import(pathToFileURL(runtimePath).href)) as Record<string, unknown>;
  const importMs = performance.now() - t0;
  const names = Object.keys(prelude)
    .filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n))
    .sort();
  const modules = new Map<string, unknown>([
    [preludePath, prelude],
    [runtimePath, runtime],
    ['vqalab', runtime],
  ]);
  return { modules, names, importMs };
}
