/**
 * Papermill-style parameters: `--param key=value` values are typed (numbers, booleans, null, JSON
 * arrays/objects/strings, else plain strings), and a code cell tagged `injected-parameters` that
 * assigns them is inserted right after the cell tagged `parameters` (at the top when there is
 * none). An earlier injected cell is replaced, so re-running a run notebook does not stack them.
 */
import { UsageError } from '../util/errors.js';
import { cellTags, type CodeCell, type Notebook } from './nbformat.js';

export type ParamValue = null | boolean | number | string | ParamValue[] | { [k: string]: ParamValue };
export type Params = Record<string, ParamValue>;

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Type one `--param` value the way papermill's CLI does, plus JSON for structured values. */
export function parseParamValue(raw: string): ParamValue {
  const t = raw.trim();
  if (t === 'true' || t === 'True') return true;
  if (t === 'false' || t === 'False') return false;
  if (t === 'null' || t === 'None') return null;
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t) && Number.isFinite(Number(t))) return Number(t);
  if (/^[[{"]/.test(t)) {
    try {
      return JSON.parse(t) as ParamValue;
    } catch {
      // not JSON after all: keep it as the string the user typed
    }
  }
  return raw;
}

/** `key=value` → [key, typed value]; the key must be an identifier in both Python and TypeScript. */
export function parseParamArg(arg: string): [string, ParamValue] {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new UsageError(`--param expects key=value, got ${JSON.stringify(arg)}`);
  const key = arg.slice(0, eq);
  if (!IDENT.test(key) || key.includes('$'))
    throw new UsageError(`--param name ${JSON.stringify(key)} is not a valid identifier`);
  return [key, parseParamValue(arg.slice(eq + 1))];
}

function pyLiteral(v: ParamValue): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number')
    return Number.isFinite(v) ? String(v) : v > 0 ? "float('inf')" : v < 0 ? "float('-inf')" : "float('nan')";
  if (typeof v === 'string') return JSON.stringify(v); // a JSON string is a valid Python str literal
  if (Array.isArray(v)) return `[${v.map(pyLiteral).join(', ')}]`;
  return `{${Object.entries(v)
    .map(([k, x]) => `${JSON.stringify(k)}: ${pyLiteral(x)}`)
    .join(', ')}}`;
}

/** The source of the injected cell for the kernel's language. */
export function parameterSource(params: Params, language: string): string {
  const lang = language.toLowerCase();
  const entries = Object.entries(params);
  if (lang === 'python') return ['# Parameters', ...entries.map(([k, v]) => `${k} = ${pyLiteral(v)}`), ''].join('\n');
  if (lang === 'typescript' || lang === 'javascript') {
    // `let` so later cells may reassign, as they could the parameters cell's own variables; tslab
    // lets a later cell redeclare a name.
    return ['// Parameters', ...entries.map(([k, v]) => `let ${k} = ${JSON.stringify(v)};`), ''].join('\n');
  }
  throw new UsageError(
    `cannot inject parameters for kernel language ${JSON.stringify(language)} (supported: python, typescript, javascript)`,
  );
}

/**
 * A copy of `nb` with the injected-parameters cell in place (no cell when `params` is empty).
 * Returns the copy and the index of the injected cell (-1 when none).
 */
export function injectParameters(
  nb: Notebook,
  params: Params,
  language: string,
): { notebook: Notebook; injectedAt: number } {
  const copy = structuredClone(nb);
  copy.cells = copy.cells.filter((c) => !cellTags(c).includes('injected-parameters'));
  if (Object.keys(params).length === 0) return { notebook: copy, injectedAt: -1 };
  const cell: CodeCell = {
    cell_type: 'code',
    execution_count: null,
    metadata: { tags: ['injected-parameters'] },
    outputs: [],
    source: parameterSource(params, language),
  };
  if (copy.nbformat_minor >= 5) cell.id = `injected-${Date.now().toString(36)}`;
  const at = copy.cells.findIndex((c) => cellTags(c).includes('parameters'));
  copy.cells.splice(at + 1, 0, cell);
  return { notebook: copy, injectedAt: at + 1 };
}
