/**
 * Routes this process's stdout and stderr into the notebook.
 *
 * Cells print with `console.log`, and so does runtime code (progress lines, trainer logs): all of
 * it should land in the output of the cell that caused it, as in IPython. The one way to catch
 * writes from every module is the `write` method of `process.stdout` / `process.stderr`, so the
 * kernel replaces those two methods once, at start-up (not per cell, as tslab does), and routes
 * each write to the current request. Writes with nowhere to go (before the first cell) and the
 * kernel's own log lines go to the real streams, i.e. the Jupyter server's log.
 */
import type { StreamName } from './iopub.js';

/** Takes one decoded write; returns false when it has nowhere to go (then the real stream gets it). */
export type Route = (name: StreamName, text: string) => boolean;

export interface CapturedStdio {
  /** Write to the real stream, bypassing the notebook (the kernel's own log). */
  writeReal(name: StreamName, text: string): void;
  /** Put the original `write` methods back. */
  restore(): void;
}

type WriteCallback = (err?: Error | null) => void;

export function captureStdio(route: Route): CapturedStdio {
  const streams = { stdout: process.stdout, stderr: process.stderr } as const;
  const originals = { stdout: process.stdout.write, stderr: process.stderr.write };
  const ownWrite = {
    stdout: Object.prototype.hasOwnProperty.call(process.stdout, 'write'),
    stderr: Object.prototype.hasOwnProperty.call(process.stderr, 'write'),
  };
  const decoders = { stdout: new TextDecoder('utf-8'), stderr: new TextDecoder('utf-8') };

  for (const name of ['stdout', 'stderr'] as const) {
    const stream = streams[name];
    const original = originals[name];
    const write = function (
      this: unknown,
      chunk: unknown,
      encoding?: BufferEncoding | WriteCallback,
      cb?: WriteCallback,
    ): boolean {
      const callback = typeof encoding === 'function' ? encoding : cb;
      const enc = typeof encoding === 'string' ? encoding : undefined;
      let text: string;
      if (typeof chunk === 'string')
        text = enc && enc !== 'utf8' && enc !== 'utf-8' ? Buffer.from(chunk, enc).toString('utf8') : chunk;
      else if (chunk instanceof Uint8Array) text = decoders[name].decode(chunk, { stream: true });
      else text = String(chunk);
      if (!route(name, text)) return original.call(stream, chunk as string, enc as BufferEncoding, callback);
      if (callback) process.nextTick(callback);
      return true;
    };
    stream.write = write as typeof stream.write;
  }

  return {
    writeReal(name, text) {
      originals[name].call(streams[name], text);
    },
    restore() {
      for (const name of ['stdout', 'stderr'] as const) {
        if (ownWrite[name]) streams[name].write = originals[name];
        else delete (streams[name] as { write?: unknown }).write;
      }
    },
  };
}
