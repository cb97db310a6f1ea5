/**
 * Input history for `history_request` (console up-arrow, %history-like front ends): the cells run
 * in this kernel session, kept in memory. Lines are numbered by execution count; there is one
 * session, numbered 1 (0 also means "this session", as in IPython).
 */
import type { HistoryRequest } from '../src/jupyter/message.js';

/** [session, line, input] or, with `output`, [session, line, [input, output or null]]. */
export type HistoryItem = [number, number, string | [string, string | null]];

interface Entry {
  line: number;
  input: string;
  output: string | null;
}

/** fnmatch-style glob (`*`, `?`, `[abc]`) → a regular expression matching the whole input. */
export function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 1);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let set = pattern.slice(i + 1, close).replace(/\\/g, '\\\\');
      if (set.startsWith('!')) set = `^${set.slice(1)}`;
      re += `[${set}]`;
      i = close;
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class History {
  readonly session = 1;
  private readonly entries: Entry[] = [];

  add(line: number, input: string): void {
    this.entries.push({ line, input, output: null });
  }

  /** The text/plain of the cell's result, for `output: true` requests. */
  setOutput(line: number, output: string): void {
    const entry = this.entries.findLast((e) => e.line === line);
    if (entry) entry.output = output;
  }

  get length(): number {
    return this.entries.length;
  }

  query(req: HistoryRequest): HistoryItem[] {
    let found: Entry[];
    switch (req.hist_access_type) {
      case 'tail':
        found = req.n === undefined ? this.entries.slice(-10) : req.n <= 0 ? [] : this.entries.slice(-req.n);
        break;
      case 'range': {
        const session = req.session ?? 0;
        if (session !== 0 && session !== this.session) return [];
        const start = req.start ?? 0,
          stop = req.stop ?? Infinity;
        found = this.entries.filter((e) => e.line >= start && e.line < stop);
        break;
      }
      case 'search': {
        const re = globToRegExp(req.pattern ?? '*');
        found = this.entries.filter((e) => re.test(e.input));
        if (req.unique) {
          const seen = new Set<string>();
          found = found
            .reverse()
            .filter((e) => !seen.has(e.input) && seen.add(e.input))
            .reverse();
        }
        if (req.n !== undefined && req.n > 0) found = found.slice(-req.n);
        break;
      }
      default:
        return [];
    }
    return found.map((e) => [this.session, e.line, req.output ? [e.input, e.output] : e.input]);
  }
}
