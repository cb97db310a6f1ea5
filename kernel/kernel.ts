/**
 * Starts the vqalab kernel: wires runtime preload, executor, handler and sockets together.
 *
 * Order matters: the hidden first cell is declared *before* the sockets are bound, so every
 * request that uses the compiler (completion, inspection, a cell) sees the runtime's names with
 * their types; the first such request type-checks the runtime's declarations (the client's first
 * kernel_info_request simply waits in ZeroMQ until we bind). The declarations it checks are the
 * copy of kernel/declarations.ts (third-party types as `any`, so the first check reads the
 * runtime's own declarations only). The runtime's code is imported when the first cell runs
 * (kernel/preload.ts). Start-up waits for neither.
 */
import { setDisplaySink } from '../src/display/sink.js';
import { hostInterrupts } from '../src/util/interrupt.js';
import { codeCacheHit, saveCodeCache } from './code-cache.js';
import { declarationSnapshot } from './declarations.js';
import { createExecutor } from './executor.js';
import { Handler } from './handler.js';
import { IOPub } from './iopub.js';
import { importRuntime, preludeCell, preludeNames } from './preload.js';
import { KernelServer, readConnectionFile } from './server.js';
import { captureStdio } from './stdio.js';
import { createConverter, setTslabDisplayWriter } from './tslab.js';

export interface KernelOptions {
  connectionFile: string;
  /** How long an interrupted cell may take to stop on its own (ms). */
  graceMs?: number;
}

/** Start-up times in ms, also written to the kernel's log (the Jupyter server's terminal). */
export interface StartupTimes {
  /** TypeScript compiler and tslab converter ready. */
  converterMs: number;
  /** Declaring the hidden first cell (its names read from prelude.d.ts; type-checked with the first request). */
  preloadCheckMs: number;
  /** Process start to sockets bound (the performance clock starts with the process). */
  readyMs: number;
}

export async function startKernel(options: KernelOptions): Promise<StartupTimes> {
  let handler: Handler | undefined;
  const stdio = captureStdio((name, text) => handler?.write(name, text) ?? false);
  const log = (line: string) => stdio.writeReal('stderr', `[vqalab kernel] ${line}\n`);
  // SIGINT (Jupyter's interrupt) belongs to the kernel: runtime loops hear it through
  // src/util/interrupt.ts, never through their own SIGINT handlers.
  hostInterrupts();
  const debug = process.env.VQALAB_KERNEL_DEBUG === '1';
  process.on('SIGINT', () => {
    if (debug) log(`SIGINT (cell running: ${handler?.running ?? false})`);
    handler?.interrupt();
  });
  // Code a cell left running (timers, un-awaited promises) may fail later: report it in the
  // notebook and keep the kernel alive.
  const background = (what: string) => (err: unknown) => {
    const text = `${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`;
    if (!(handler?.write('stderr', text) ?? false)) log(text.trimEnd());
  };
  process.on('uncaughtException', background('Uncaught exception'));
  process.on('unhandledRejection', background('Unhandled promise rejection'));

  const connection = readConnectionFile(options.connectionFile);
  let t = performance.now();
  const converter = createConverter();
  const converterMs = performance.now() - t;

  const executor = createExecutor({ rootDir: process.cwd(), converter, graceMs: options.graceMs });
  // V8's code cache of the TypeScript compiler (code-cache.ts): written once, a second after the
  // first completion or cell, so that it holds what those compiled and no request waits for it.
  let cacheScheduled = false;
  for (const method of ['complete', 'execute'] as const) {
    const original = executor[method].bind(executor) as (...args: unknown[]) => unknown;
    (executor as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      if (!cacheScheduled) {
        cacheScheduled = true;
        setTimeout(saveCodeCache, 1000).unref();
      }
      return original(...args);
    };
  }
  t = performance.now();
  let problem: string | undefined;
  let names: string[] = [];
  try {
    names = preludeNames();
    let declarationModule: string | undefined;
    // VQALAB_KERNEL_FULL_TYPES=1: third-party types in full (e.g. apache-arrow's Table), at the
    // cost of a slower first completion.
    if (process.env.VQALAB_KERNEL_FULL_TYPES !== '1')
      try {
        const copy = declarationSnapshot();
        declarationModule = copy.preludeModule;
        if (copy.built)
          log(
            `declaration copy written to ${copy.dir} (${copy.files} files; types from ${copy.external.join(', ') || 'no package'} as any)`,
          );
      } catch (err) {
        log(
          `${err instanceof Error ? err.message : String(err)}; declaring the runtime's own declarations (slower first completion)`,
        );
      }
    const cell = preludeCell(names, declarationModule);
    const error = executor.declare({
      code: cell.source,
      prebuilt: { declaration: cell.declaration, js: cell.js },
      load: async () => {
        const runtime = await importRuntime();
        const missing = names.filter((n) => !runtime.names.includes(n));
        if (missing.length)
          throw new Error(
            `the prelude module does not export ${missing.join(', ')} (its .d.ts does): rebuild with "npm run build"`,
          );
        log(`runtime imported in ${runtime.importMs.toFixed(0)} ms (first cell)`);
        return runtime.modules;
      },
    });
    if (error) problem = `vqalab: the runtime's names could not be put in scope: ${error.traceback.join('\n')}`;
  } catch (err) {
    problem = `vqalab: the runtime's declarations failed to load, so its names are not in scope: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
  }
  const preloadCheckMs = performance.now() - t;
  if (problem) log(problem);

  const server = new KernelServer(connection, log);
  const iopub = new IOPub(server.publish);
  let shuttingDown = false;
  handler = new Handler({
    executor,
    iopub,
    preloadProblem: problem,
    drainShell: () => server.drainShell(),
    onShutdown: () => {
      if (shuttingDown) return;
      shuttingDown = true;
      setTimeout(() => {
        executor.close();
        void server.close().finally(() => process.exit(0));
      }, 10);
    },
  });
  setDisplaySink(handler.sink);
  const h = handler;
  setTslabDisplayWriter((content, update) =>
    h.publishCurrent(update ? 'update_display_data' : 'display_data', content),
  );
  await server.start(handler);
  const times: StartupTimes = {
    converterMs,
    preloadCheckMs,
    readyMs: performance.now(),
  };
  const cache = codeCacheHit();
  log(
    `ready in ${times.readyMs.toFixed(0)} ms (converter ${converterMs.toFixed(0)} ms, prelude ${preloadCheckMs.toFixed(0)} ms; ` +
      `${problem ? 0 : names.length} names in scope; compiler code cache ${cache === undefined ? 'off' : cache ? 'used' : 'to be written'})`,
  );
  return times;
}
