/**
 * Fix for tslab's shorthand-property bug. A cell runs as a function; names declared by earlier
 * cells live on its `exports` object, and tslab's converter rewrites each reference `n` to
 * `exports.n` — except in a shorthand property `{ n }`, which it leaves alone, so the cell
 * type-checks and then throws "ReferenceError: n is not defined".
 *
 * We repair the converted JavaScript: each shorthand property whose name is not bound anywhere in
 * the cell's own code but is one of the earlier cells' names becomes `n: exports.n`. Binding is
 * decided by the TypeScript checker over the converted code alone, so a local `n` (a parameter,
 * an inner `const n`) keeps its meaning.
 */
import { typescript, type TS } from './tslab.js';

const FILE = '/__vqalab_cell__.js';

/** The shorthand properties `{ n }` in `js` whose name is in `outer` (cheap syntactic pass). */
function candidates(
  ts: typeof TS,
  source: TS.SourceFile,
  outer: ReadonlySet<string>,
): TS.ShorthandPropertyAssignment[] {
  const found: TS.ShorthandPropertyAssignment[] = [];
  const visit = (node: TS.Node): void => {
    if (ts.isShorthandPropertyAssignment(node) && outer.has(node.name.text)) found.push(node);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/**
 * Rewrite shorthand properties that refer to earlier cells' names (`outer`) in the converted
 * code `js`. Returns `js` unchanged (same string) when there is nothing to fix.
 */
export function fixShorthandProperties(js: string, outer: ReadonlySet<string>): string {
  if (outer.size === 0 || !js.includes('{')) return js;
  const ts = typescript();
  const parsed = ts.createSourceFile(FILE, js, ts.ScriptTarget.Latest, true, ts.ScriptKind.JS);
  if (candidates(ts, parsed, outer).length === 0) return js;

  // Only now pay for a checker: a one-file program without libs (globals don't matter here:
  // earlier cells' names are never globals, they live on `exports`).
  const options: TS.CompilerOptions = {
    allowJs: true,
    noLib: true,
    noResolve: true,
    types: [],
    target: ts.ScriptTarget.Latest,
  };
  const host = ts.createCompilerHost(options);
  host.getSourceFile = (name) => (name === FILE ? parsed : undefined);
  host.fileExists = (name) => name === FILE;
  host.readFile = (name) => (name === FILE ? js : undefined);
  const program = ts.createProgram([FILE], options, host);
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(FILE) ?? parsed;

  const edits = candidates(ts, source, outer)
    .filter((node) => checker.getShorthandAssignmentValueSymbol(node) === undefined)
    .map((node) => ({ start: node.name.getStart(source), end: node.name.getEnd(), name: node.name.text }))
    .sort((a, b) => b.start - a.start);
  let out = js;
  for (const e of edits) out = `${out.slice(0, e.start)}${e.name}: exports.${e.name}${out.slice(e.end)}`;
  return out;
}
