/**
 * The runtime's declarations as the kernel type-checks them: a copy of the .d.ts files that the
 * prelude (kernel/prelude.d.ts) reaches in this package's dist/, in which every type taken from a
 * third-party package is `any`.
 *
 * Why: the first completion (or cell) after start type-checks the runtime's declarations. Of
 * what that reads beyond TypeScript's own libraries, 60 % is third-party (apache-arrow's 117
 * files, protobufjs, onnxruntime), pulled in by five signatures deep in the runtime
 * (`Dataset.fromArrow(table: arrow.Table)`, `onnxRoot(): protobuf.Root`, `loadOrt()`), and it was
 * most of the kernel's start→first-completion lead over stock tslab. With those types as `any`,
 * every name of the runtime keeps its full type and docs; a value crossing one of those five
 * signatures is `any` in a notebook (a cell that imports apache-arrow itself still gets arrow's
 * full types, and passes its tables to the runtime without a type error).
 *
 * The copy keeps the files' layout (relative imports work unchanged) and is rebuilt when a file it
 * was made from changed (a manifest of sizes and mtimes): in dist/kernel/declarations/, or, when
 * dist/ is read-only, under the temporary directory. Writing goes to a temporary directory that is
 * renamed into place, so kernels starting side by side never read a half-written copy.
 */
import { createHash } from 'node:crypto';
import { builtinModules } from 'node:module';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { typescript, type TS } from './tslab.js';

/** Bump when the rewriting changes, so that copies made by an older kernel are rebuilt. */
const FORMAT = 2;
const MANIFEST = 'manifest.json';

export interface DeclarationSnapshot {
  /** The copy's root (its kernel/ and src/ mirror dist/kernel and dist/src). */
  dir: string;
  /** The prelude's module path inside the copy, for the hidden cell's import (…/kernel/prelude.js). */
  preludeModule: string;
  /** Declaration files copied. */
  files: number;
  /** Third-party packages whose types became `any`. */
  external: string[];
  /** True when this call wrote the copy; false when an up-to-date one was found. */
  built: boolean;
}

export interface SnapshotOptions {
  /** The package's dist/ directory (default: the one this module is in). */
  distDir?: string;
  /** Where to keep the copy (default: <distDir>/kernel/declarations, else a temporary directory). */
  dir?: string;
  /** The entry declaration file, relative to distDir (default kernel/prelude.d.ts). */
  entry?: string;
}

interface Manifest {
  format: number;
  distDir: string;
  /** [path relative to distDir, size, mtimeMs] of every source declaration file. */
  files: [string, number, number][];
  external: string[];
}

const defaultDist = fileURLToPath(new URL('..', import.meta.url));
const builtins = new Set(builtinModules);

function isBuiltin(spec: string): boolean {
  return spec.startsWith('node:') || builtins.has(spec) || builtins.has(spec.split('/')[0]!);
}

const isRelative = (spec: string) => spec.startsWith('./') || spec.startsWith('../');

/** Where a relative specifier of `fromRel` points, as a .d.ts path relative to distDir. */
function resolveRelative(distDir: string, fromRel: string, spec: string): string {
  const base = path.join(path.dirname(fromRel), spec);
  const ext = /\.([cm]?)js$/.exec(base);
  const candidates = ext
    ? [`${base.slice(0, -ext[0].length)}.d.${ext[1]}ts`]
    : [`${base}.d.ts`, path.join(base, 'index.d.ts')];
  for (const c of candidates) {
    try {
      if (statSync(path.join(distDir, c)).isFile()) {
        if (c.startsWith('..')) throw new Error(`${fromRel}: "${spec}" leaves ${distDir}`);
        return path.normalize(c);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw new Error(
    `${path.join(distDir, fromRel)}: no declaration file for "${spec}" (looked for ${candidates.join(', ')})`,
  );
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

/** A triple-slash reference to Node's types, as tsc writes it. */
const TYPES_REFERENCE = /^\/\/\/ <reference types="node"[^>\n]*\/>$/gm;

/**
 * Rewrite one declaration file: drop imports from third-party packages and make every type that
 * names one of their bindings `any`. Returns the new text, the relative files it references and
 * the packages it dropped. Throws on a form it cannot rewrite (a re-export of a package, a class
 * that extends one of its types): the caller then falls back to the original declarations.
 */
export function rewriteDeclarations(
  ts: typeof TS,
  fileName: string,
  text: string,
  entry = false,
): { text: string; relative: string[]; external: string[] } {
  // `/// <reference types="node" />` (tsc writes one into every file that uses Node's types): the
  // entry's reference is enough, and each one costs a type-reference resolution. The entry keeps its own.
  if (!entry) text = text.replace(TYPES_REFERENCE, (line) => ' '.repeat(line.length));
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, true);
  if (sf.referencedFiles.length > 0) throw new Error(`${fileName}: /// <reference path> is not supported here`);
  const edits: Edit[] = [];
  const relative: string[] = [];
  const external = new Set<string>();
  /** Local names bound to third-party imports. */
  const foreign = new Set<string>();
  const unsupported = (node: TS.Node, what: string): never => {
    const { line } = sf.getLineAndCharacterOfPosition(node.getStart(sf));
    throw new Error(`${fileName}:${line + 1}: ${what}: ${node.getText(sf).slice(0, 120)}`);
  };

  for (const st of sf.statements) {
    if (ts.isImportDeclaration(st) && ts.isStringLiteral(st.moduleSpecifier)) {
      const spec = st.moduleSpecifier.text;
      if (isRelative(spec)) relative.push(spec);
      else if (!isBuiltin(spec)) {
        external.add(spec);
        const clause = st.importClause;
        if (clause?.name) foreign.add(clause.name.text);
        const bindings = clause?.namedBindings;
        if (bindings && ts.isNamespaceImport(bindings)) foreign.add(bindings.name.text);
        else if (bindings) for (const el of bindings.elements) foreign.add(el.name.text);
        edits.push({ start: st.getStart(sf), end: st.end, text: '' });
      }
    } else if (ts.isExportDeclaration(st) && st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier)) {
      const spec = st.moduleSpecifier.text;
      if (isRelative(spec)) relative.push(spec);
      else if (!isBuiltin(spec)) unsupported(st, `a re-export of the package "${spec}"`);
    } else if (ts.isImportEqualsDeclaration(st) && ts.isExternalModuleReference(st.moduleReference)) {
      const expr = st.moduleReference.expression;
      if (ts.isStringLiteral(expr) && isRelative(expr.text)) relative.push(expr.text);
      else if (ts.isStringLiteral(expr) && !isBuiltin(expr.text)) unsupported(st, `import = require("${expr.text}")`);
    }
  }

  const leftmost = (name: TS.EntityName | TS.Expression): string | undefined => {
    let n: TS.Node = name;
    while (ts.isQualifiedName(n) || ts.isPropertyAccessExpression(n)) n = ts.isQualifiedName(n) ? n.left : n.expression;
    return ts.isIdentifier(n) ? n.text : undefined;
  };

  const visit = (node: TS.Node): void => {
    if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      const spec = node.argument.literal.text;
      if (isRelative(spec)) relative.push(spec);
      else if (!isBuiltin(spec)) {
        external.add(spec);
        edits.push({ start: node.getStart(sf), end: node.end, text: 'any' });
        return;
      }
    } else if (foreign.size > 0) {
      if (ts.isTypeReferenceNode(node) && foreign.has(leftmost(node.typeName) ?? '')) {
        edits.push({ start: node.getStart(sf), end: node.end, text: 'any' });
        return;
      }
      if (ts.isTypeQueryNode(node) && foreign.has(leftmost(node.exprName) ?? '')) {
        edits.push({ start: node.getStart(sf), end: node.end, text: 'any' });
        return;
      }
      if (ts.isExpressionWithTypeArguments(node) && foreign.has(leftmost(node.expression) ?? ''))
        unsupported(node, 'a heritage clause naming a third-party type');
      if (ts.isExportSpecifier(node) && foreign.has((node.propertyName ?? node.name).text))
        unsupported(node, 'an export of a third-party binding');
      if (ts.isExportAssignment(node) && foreign.has(leftmost(node.expression) ?? ''))
        unsupported(node, 'an export of a third-party binding');
    }
    ts.forEachChild(node, visit);
  };
  for (const st of sf.statements) if (!edits.some((e) => e.start === st.getStart(sf) && e.end === st.end)) visit(st);

  edits.sort((a, b) => b.start - a.start);
  let out = text;
  for (const e of edits) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  return { text: out, relative, external: [...external].sort() };
}

function readManifest(dir: string): Manifest | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, MANIFEST), 'utf8')) as Manifest;
  } catch {
    return undefined;
  }
}

/** The manifest still describes the files in distDir (same paths, sizes and mtimes). */
function upToDate(m: Manifest | undefined, distDir: string): m is Manifest {
  if (!m || m.format !== FORMAT || m.distDir !== distDir || !Array.isArray(m.files)) return false;
  try {
    return m.files.every(([rel, size, mtimeMs]) => {
      const st = statSync(path.join(distDir, rel));
      return st.size === size && st.mtimeMs === mtimeMs;
    });
  } catch {
    return false;
  }
}

function defaultDirs(distDir: string): string[] {
  const tag = createHash('sha256').update(distDir).digest('hex').slice(0, 12);
  const user = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return [
    path.join(distDir, 'kernel', 'declarations'),
    path.join(os.tmpdir(), `vqalab-kernel-declarations-${user}-${tag}`),
  ];
}

/** Write the copy into a fresh directory next to `target` and rename it into place. */
function build(ts: typeof TS, distDir: string, entry: string, target: string): Manifest {
  const parent = path.dirname(target);
  mkdirSync(parent, { recursive: true });
  const tmp = mkdtempSync(path.join(parent, `.${path.basename(target)}-`));
  try {
    const manifest: Manifest = { format: FORMAT, distDir, files: [], external: [] };
    const external = new Set<string>();
    const seen = new Set<string>([path.normalize(entry)]);
    const queue = [path.normalize(entry)];
    while (queue.length > 0) {
      const rel = queue.shift()!;
      const file = path.join(distDir, rel);
      const st = statSync(file);
      const out = rewriteDeclarations(ts, file, readFileSync(file, 'utf8'), rel === path.normalize(entry));
      for (const e of out.external) external.add(e);
      for (const spec of out.relative) {
        const next = resolveRelative(distDir, rel, spec);
        if (!seen.has(next)) {
          seen.add(next);
          queue.push(next);
        }
      }
      mkdirSync(path.join(tmp, path.dirname(rel)), { recursive: true });
      writeFileSync(path.join(tmp, rel), out.text);
      manifest.files.push([rel, st.size, st.mtimeMs]);
    }
    manifest.files.sort((a, b) => a[0].localeCompare(b[0]));
    manifest.external = [...external].sort();
    writeFileSync(path.join(tmp, MANIFEST), `${JSON.stringify(manifest)}\n`);
    // Another kernel may have put a current copy there meanwhile: keep it (kernels may be reading it).
    const current = readManifest(target);
    if (upToDate(current, distDir)) return current;
    // Replace an older copy: move it aside first (a directory cannot be renamed onto a non-empty one).
    const old = `${tmp}.old`;
    let moved = false;
    try {
      renameSync(target, old);
      moved = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    try {
      renameSync(tmp, target);
    } catch (err) {
      // Another kernel put its copy there in the meantime: use it if it is current.
      if (!upToDate(readManifest(target), distDir)) throw err;
    }
    if (moved) rmSync(old, { recursive: true, force: true });
    return manifest;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The declaration copy for the kernel's hidden cell: found up to date, or (re)built. Throws when
 * it can be neither found nor built; the kernel then declares the original prelude.
 */
export function declarationSnapshot(options: SnapshotOptions = {}): DeclarationSnapshot {
  const distDir = path.resolve(options.distDir ?? defaultDist);
  const entry = options.entry ?? path.join('kernel', 'prelude.d.ts');
  const dirs = options.dir ? [path.resolve(options.dir)] : defaultDirs(distDir);
  const result = (dir: string, m: Manifest, built: boolean): DeclarationSnapshot => ({
    dir,
    preludeModule: path.join(dir, entry.replace(/\.d\.ts$/, '.js')),
    files: m.files.length,
    external: m.external,
    built,
  });
  for (const dir of dirs) {
    const m = readManifest(dir);
    if (upToDate(m, distDir)) return result(dir, m, false);
  }
  const ts = typescript();
  const failures: string[] = [];
  for (const dir of dirs) {
    try {
      return result(dir, build(ts, distDir, entry, dir), true);
    } catch (err) {
      failures.push(`${dir}: ${err instanceof Error ? err.message : String(err)}`);
      // A rewrite failure fails the same way everywhere; only a write failure is worth a second place.
      if (!['EACCES', 'EROFS', 'EPERM'].includes((err as NodeJS.ErrnoException).code ?? '')) break;
    }
  }
  throw new Error(`could not build the kernel's declaration copy: ${failures.join('; ')}`);
}
