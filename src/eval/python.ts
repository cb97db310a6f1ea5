/**
 * The few pieces of CPython behaviour the official VQA evaluator's numbers depend on, reproduced
 * bit for bit: str.strip()/split()/lower() and the regex class \d on Unicode text, the built-in
 * sum() of floats, and round(x, n). Each differs between interpreters, so each is parameterised by a
 * dialect (see docs/vqa-metric.md for what differs and why the default is 'python2').
 */
import { TABLES, type DialectTables } from './unicode-tables.js';

/**
 * Which interpreter's behaviour to reproduce.
 * - `python2`: the official vqaEval.py as published (Python 2 syntax), run by CPython 2.7.
 *   round() rounds exact halves away from zero; sum() adds left to right; \d is ASCII.
 * - `python3`: the same file with only its print statements fixed, run by CPython 3.0–3.11.
 *   round() rounds exact halves to even; \d and lower() follow Unicode (tables of 3.11).
 * - `python3.12`: as `python3`, run by CPython 3.12 or later, whose sum() of floats is compensated
 *   (Neumaier) — tables of 3.12, checked equal to 3.13's.
 */
export type PythonDialect = 'python2' | 'python3' | 'python3.12';
export const PYTHON_DIALECTS: readonly PythonDialect[] = ['python2', 'python3', 'python3.12'];

/** The string and number operations of one dialect. Obtain with {@link pythonDialect}. */
export interface Dialect {
  readonly name: PythonDialect;
  /** str.strip() with no argument. */
  strip(s: string): string;
  /** str.split() with no argument: runs of whitespace separate; no empty strings. */
  split(s: string): string[];
  /** str.lower(). */
  lower(s: string): string;
  /** True when the code point is matched by the regex class \d. */
  isDigit(cp: number): boolean;
  /** A regex character-class body (without brackets) for \d; use with the `u` flag. */
  readonly digitClass: string;
  /** round(x, ndigits): exact halves to even (3.x) or away from zero (2.7). */
  round(x: number, ndigits: number): number;
  /** Whether sum() of floats is compensated (3.12+). */
  readonly compensatedSum: boolean;
}

const cache = new Map<PythonDialect, Dialect>();

/** The operations of a dialect (built once per dialect from the generated tables). */
export function pythonDialect(name: PythonDialect = 'python2'): Dialect {
  let d = cache.get(name);
  if (!d) {
    const tables = TABLES[name];
    if (!tables)
      throw new TypeError(
        `Expected one of ${PYTHON_DIALECTS.map((x) => JSON.stringify(x)).join(', ')} for dialect but received ${JSON.stringify(name)}`,
      );
    d = buildDialect(name, tables);
    cache.set(name, d);
  }
  return d;
}

function hex(cp: number): string {
  return `\\u{${cp.toString(16)}}`;
}

function classFromRanges(ranges: readonly (readonly [number, number])[]): string {
  return ranges.map(([a, b]) => (a === b ? hex(a) : `${hex(a)}-${hex(b)}`)).join('');
}

function rangesOf(cps: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const cp of cps) {
    const last = out[out.length - 1];
    if (last && last[1] === cp - 1) last[1] = cp;
    else out.push([cp, cp]);
  }
  return out;
}

const ASCII = /^[\x00-\x7f]*$/;
// Printable ASCII words separated by single spaces: split(' ') is exact in every dialect.
const SIMPLE_WORDS = /^[\x21-\x7e]+(?: [\x21-\x7e]+)*$/;
// Python 3's final-sigma rule needs the Cased and Case_Ignorable properties, which Python does not
// expose; Node's are used (they differ from CPython's only for characters newer than its Unicode).
const CASED = /\p{Cased}/u;
const CASE_IGNORABLE = /\p{Case_Ignorable}/u;

function buildDialect(name: PythonDialect, t: DialectTables): Dialect {
  const spaceClass = classFromRanges(rangesOf(t.space));
  const stripRe = new RegExp(`^[${spaceClass}]+|[${spaceClass}]+$`, 'gu');
  const splitRe = new RegExp(`[${spaceClass}]+`, 'u');
  const digitRanges = t.digit;
  const digitClass = classFromRanges(digitRanges);
  const runs = t.lowerRuns;
  const runStarts = runs.map((r) => r[0]);
  const multi = new Map<number, string>(
    Object.entries(t.lowerMulti).map(([k, v]) => [Number(k), String.fromCodePoint(...v)]),
  );
  const py3 = name !== 'python2';

  function lowerCp(cp: number): number {
    if (cp < 0x80) return cp >= 0x41 && cp <= 0x5a ? cp + 32 : cp;
    let lo = 0,
      hi = runStarts.length - 1,
      found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (runStarts[mid]! <= cp) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found < 0) return cp;
    const [start, end, step, delta] = runs[found]!;
    return cp <= end && (cp - start) % step === 0 ? cp + delta : cp;
  }

  function finalSigma(cps: readonly number[], i: number): boolean {
    // Σ becomes ς when preceded by a cased letter and not followed by one (case-ignorables skipped).
    let j = i - 1;
    while (j >= 0 && CASE_IGNORABLE.test(String.fromCodePoint(cps[j]!))) j--;
    if (j < 0 || !CASED.test(String.fromCodePoint(cps[j]!))) return false;
    j = i + 1;
    while (j < cps.length && CASE_IGNORABLE.test(String.fromCodePoint(cps[j]!))) j++;
    return j === cps.length || !CASED.test(String.fromCodePoint(cps[j]!));
  }

  return {
    name,
    strip: (s) => (s.length === 0 ? s : s.replace(stripRe, '')),
    split(s) {
      if (SIMPLE_WORDS.test(s)) return s.split(' ');
      const t2 = s.replace(stripRe, '');
      return t2.length === 0 ? [] : t2.split(splitRe);
    },
    lower(s) {
      if (ASCII.test(s)) return s.toLowerCase();
      const cps = Array.from(s, (c) => c.codePointAt(0)!);
      let out = '';
      for (let i = 0; i < cps.length; i++) {
        const cp = cps[i]!;
        const m = multi.get(cp);
        if (m !== undefined) out += m;
        else if (py3 && cp === 0x3a3) out += finalSigma(cps, i) ? '\u03c2' : '\u03c3';
        else out += String.fromCodePoint(lowerCp(cp));
      }
      return out;
    },
    isDigit(cp) {
      for (const [a, b] of digitRanges) {
        if (cp < a) return false;
        if (cp <= b) return true;
      }
      return false;
    },
    digitClass,
    round: (x, n) => pyRound(x, n, py3),
    compensatedSum: name === 'python3.12',
  };
}

const POW10 = Array.from({ length: 16 }, (_, i) => 10 ** i);
const F64 = new Float64Array(1);
const U64 = new BigUint64Array(F64.buffer);

/** A finite double as sign * mantissa * 2^exponent with an integer mantissa. */
function decompose(x: number): { negative: boolean; mantissa: bigint; exponent: number } {
  F64[0] = x;
  const bits = U64[0]!;
  const negative = bits >> 63n === 1n;
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & 0xfffffffffffffn;
  if (biased === 0) return { negative, mantissa: fraction, exponent: -1074 };
  return { negative, mantissa: fraction | 0x10000000000000n, exponent: biased - 1075 };
}

/**
 * CPython's round(x, ndigits) for a float and ndigits >= 0: the exact binary value of x is rounded
 * to ndigits decimals (exact halves to even when `halfEven`, as in Python 3; away from zero as in
 * Python 2.7), and the result is the double nearest to that decimal.
 */
export function pyRound(x: number, ndigits: number, halfEven: boolean): number {
  if (!Number.isFinite(x) || x === 0) return x;
  // Fast path: when x·10^n is clearly away from a half, double arithmetic decides the same way
  // (its error is far below the margin), and q / 10^n is the double nearest to the decimal q·10^-n,
  // as CPython's string round trip gives.
  if (ndigits >= 0 && ndigits <= 15) {
    const p = POW10[ndigits]!;
    const y = Math.abs(x) * p;
    if (y < 1e8) {
      const fl = Math.floor(y);
      const f = y - fl;
      if (Math.abs(f - 0.5) > 1e-6) {
        const r = (f > 0.5 ? fl + 1 : fl) / p;
        return x < 0 ? -r : r;
      }
    }
  }
  const { negative, mantissa, exponent } = decompose(x);
  if (exponent >= 0) return x; // an integer already
  const scale = 10n ** BigInt(ndigits);
  const num = mantissa * scale;
  const den = 1n << BigInt(-exponent);
  let q = num / den;
  const twice = (num % den) * 2n;
  if (twice > den || (twice === den && (!halfEven || q % 2n === 1n))) q += 1n;
  const r = Number(`${q}e-${ndigits}`);
  return negative ? -r : r;
}

/**
 * The decimal text of a value already rounded to `ndigits` by {@link pyRound}, as Python's
 * `'%.{ndigits}f' % value` prints it.
 */
export function formatFixed(value: number, ndigits: number): string {
  return value.toFixed(ndigits);
}

/**
 * Python's built-in sum() over a list whose items are floats, or ints where `isInt[i]` is true
 * (the official code sums min(1, k/3), which is the int 1 when k >= 3). Python 2.7 and 3.0–3.11 add
 * left to right; 3.12+ keep a Neumaier compensation term for float items (ints are added plainly)
 * and add it at the end.
 */
export function pySum(values: ArrayLike<number>, compensated: boolean, isInt?: ArrayLike<boolean>): number {
  const n = values.length;
  if (!compensated) {
    let s = 0;
    for (let i = 0; i < n; i++) s += values[i]!;
    return s;
  }
  let i = 0,
    f = 0;
  // Leading ints are summed exactly as Python ints.
  while (i < n && isInt?.[i]) f += values[i++]!;
  if (i === n) return f;
  f += values[i++]!;
  let c = 0;
  for (; i < n; i++) {
    const x = values[i]!;
    if (isInt?.[i]) {
      f += x;
      continue;
    }
    const t = f + x;
    if (Math.abs(f) >= Math.abs(x)) c += f - t + x;
    else c += x - t + f;
    f = t;
  }
  if (c !== 0 && Number.isFinite(c)) f += c;
  return f;
}
