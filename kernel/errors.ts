/**
 * Cell failures as Jupyter error contents (ename / evalue / traceback), the shape both the
 * `error` iopub message and the error execute_reply carry.
 */
import { inspect } from 'node:util';
import type { Diagnostic } from 'tslab/dist/converter.js';
import type { ErrorContent } from '../src/jupyter/message.js';

/** The ename of a cell that does not type-check. */
export const COMPILE_ERROR = 'TSError';
/** The ename of a cell stopped by an interrupt (the runtime's InterruptedError has the same name). */
export const INTERRUPTED = 'InterruptedError';

// Stack frames of the kernel itself and of Node's internals say nothing about the user's code.
const NOISE = [/\(node:|^\s+at node:/, /[\\/]dist[\\/]kernel[\\/]/, /^\s+at new Promise \(<anonymous>\)$/];

/** A thrown value → error content. Errors keep their name, message and the useful frames. */
export function errorContent(thrown: unknown): ErrorContent {
  if (!(thrown instanceof Error)) {
    const evalue = inspect(thrown, { depth: 2, breakLength: Infinity });
    return { ename: 'Uncaught', evalue, traceback: [`Uncaught ${evalue}`] };
  }
  const ename = thrown.name || 'Error';
  const evalue = thrown.message;
  const stack = typeof thrown.stack === 'string' ? thrown.stack.split('\n') : [`${ename}: ${evalue}`];
  // The first lines of a stack repeat "Name: message" (possibly over several lines); keep them.
  const firstFrame = stack.findIndex((l) => /^\s+at /.test(l));
  const head = firstFrame < 0 ? stack : stack.slice(0, firstFrame);
  const frames = firstFrame < 0 ? [] : stack.slice(firstFrame).filter((l) => !NOISE.some((re) => re.test(l)));
  const traceback = [...head, ...frames];
  const cause = (thrown as { cause?: unknown }).cause;
  if (cause !== undefined)
    traceback.push(`Caused by: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : inspect(cause)}`);
  return { ename, evalue, traceback };
}

/**
 * Type errors → error content: evalue is the first message; the traceback shows each error with
 * its line of the cell and a caret under the spot, like a compiler does.
 */
export function compileErrorContent(code: string, diagnostics: readonly Diagnostic[]): ErrorContent {
  const lines = code.split('\n');
  const traceback: string[] = [];
  for (const d of diagnostics) {
    const where = d.fileName
      ? `${d.fileName}:${d.start.line + 1}:${d.start.character + 1}`
      : `${d.start.line + 1}:${d.start.character + 1}`;
    traceback.push(`${where} - error TS${d.code}: ${d.messageText}`);
    const line = d.fileName ? undefined : lines[d.start.line];
    if (line !== undefined) {
      const width =
        d.end.line === d.start.line
          ? Math.max(1, d.end.character - d.start.character)
          : Math.max(1, line.length - d.start.character);
      traceback.push(`    ${line}`, `    ${' '.repeat(d.start.character)}${'~'.repeat(width)}`);
    }
  }
  const first = diagnostics[0];
  const evalue = first
    ? `${first.start.line + 1}:${first.start.character + 1} - ${first.messageText}`
    : 'the cell does not compile';
  return { ename: COMPILE_ERROR, evalue, traceback };
}
