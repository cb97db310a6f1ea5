/**
 * The parts of tslab 1.0.22 the kernel builds on, loaded from the copy this package depends on
 * (never one found near the notebook). This is the one module that knows tslab's file layout.
 *
 * We use tslab's TypeScript machinery (the cell converter: type-checking against the previous
 * cells' declarations, completion, quick info, is-complete) and its TypeScript fork. The protocol,
 * the request handling and the execution of converted code are ours (protocol.ts, handler.ts,
 * executor.ts): tslab's versions have the gaps listed in docs/kernel.md.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Converter from 'tslab/dist/converter.js';
import type * as Metadata from 'tslab/dist/metadata.js';
import type * as Inspect from 'tslab/dist/inspect.js';
import type * as TS from '@tslab/typescript-for-tslab';
import type { Converter as TslabConverter } from 'tslab/dist/converter.js';
import { loadWithCodeCache } from './code-cache.js';

const requireHere = createRequire(import.meta.url);
/** tslab's package directory. */
export const tslabDir = path.dirname(requireHere.resolve('tslab/package.json'));
const requireTslab = createRequire(path.join(tslabDir, 'package.json'));

export const tslabVersion: string = (requireTslab('./package.json') as { version: string }).version;

/** tslab's TypeScript fork (the compiler the converter uses), loaded with V8's code cache (code-cache.ts). */
export function typescript(): typeof TS {
  if (process.env.VQALAB_KERNEL_CODE_CACHE !== '0') loadWithCodeCache(requireTslab, '@tslab/typescript-for-tslab');
  return requireTslab('@tslab/typescript-for-tslab') as typeof TS;
}

export function converterModule(): typeof Converter {
  return requireTslab('./dist/converter.js') as typeof Converter;
}

/**
 * tslab's cell converter for Node code, rooted at the current directory, with TypeScript's
 * directory watching off.
 *
 * Why: the converter drives TypeScript's watch program with a fake timer that holds one callback.
 * A directory watcher (TypeScript watches the directories of failed module lookups, e.g. dist/
 * of the runtime or the notebook's directory) schedules a second timer when any file there
 * changes, and from then on every cell fails with "Unexpected pending rebuildTimer". The watch
 * host reads `sys.watchDirectory` once, when the converter is created, so leaving it undefined
 * for that moment gives this converter no-op directory watchers and leaves the shared `ts.sys`
 * as it was. File watchers (edits of local .ts modules a cell imports) stay on. The cost: a module
 * that failed to resolve is not looked up again until the kernel restarts.
 */
export function createConverter(): TslabConverter {
  const sys = typescript().sys as { watchDirectory?: unknown };
  const watchDirectory = sys.watchDirectory;
  sys.watchDirectory = undefined;
  try {
    return converterModule().createConverter({ isJS: false, isBrowser: false });
  } finally {
    sys.watchDirectory = watchDirectory;
  }
}

export function metadataModule(): typeof Metadata {
  return requireTslab('./dist/metadata.js') as typeof Metadata;
}

export function inspectModule(): typeof Inspect {
  return requireTslab('./dist/inspect.js') as typeof Inspect;
}

/** tslab's public API (`import * as tslab from "tslab"` in a cell). */
export function publicModule(): unknown {
  return requireTslab('./dist/public.js');
}

/**
 * tslab's public display API (`tslab.display.html(...)`, `tslab.newDisplay()`) writes through the
 * `lastWriteDisplayData` variable of its jupyter module, which tslab's own kernel sets before each
 * cell. Setting it here keeps notebooks written for tslab working under this kernel.
 */
export function setTslabDisplayWriter(write: ((content: unknown, update: boolean) => void) | null): void {
  const jupyter = requireTslab('./dist/jupyter.js') as { lastWriteDisplayData: unknown };
  jupyter.lastWriteDisplayData = write;
}

export type { TS };
export type { Converter as TslabConverter, Diagnostic, CompletionInfo } from 'tslab/dist/converter.js';
