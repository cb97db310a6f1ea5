/**
 * Runs cells: TypeScript → (tslab's converter: type-check against earlier cells, transpile) →
 * JavaScript run in this process's global context. Failures are returned as values, never thrown
 * and never printed: the handler decides what the front end sees.
 *
 * A cell runs as `(function (exports, require) { ... })`: its top-level names are stored on
 * `exports` (the notebook's namespace, `locals`), which later cells read through `exports.name`
 * (the converter's rewrite; shorthand.ts repairs the one place it misses).
 *
 * Interrupts: while the cell's synchronous part runs, SIGINT stops it (vm's breakOnSigint).
 * While it awaits, the kernel's SIGINT handler calls `interrupt()`, which interrupts the runtime's
 * scope (src/util/interrupt.ts: loops stop at their next step boundary) and gives the cell
 * `graceMs` to finish; a second interrupt, or the end of the grace period, stops waiting (the
 * cell's promise then goes on in the background).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import { interrupt as interruptRuntime, resetInterrupt } from '../src/util/interrupt.js';
import { compileErrorContent, errorContent, INTERRUPTED } from './errors.js';
import type { ErrorContent } from '../src/jupyter/message.js';
import { fixShorthandProperties } from './shorthand.js';
import { inspectModule, metadataModule, publicModule, type CompletionInfo, type TslabConverter } from './tslab.js';

export interface ExecutorOptions {
  /** The notebook's directory: relative imports and `require` resolve from here. */
  rootDir: string;
  converter: TslabConverter;
  /**
   * Modules the cells get without loading them again, by specifier (an absolute path or a bare
   * name): the runtime namespaces the kernel preloaded, so cells share their state.
   */
  modules?: ReadonlyMap<string, unknown>;
  /** How long an interrupted cell may take to stop on its own (ms). Default 10 000. */
  graceMs?: number;
}

/** What a cell did. */
export interface CellOutcome {
  /** Present when the cell ended with an expression (its value may be undefined). */
  result?: { value: unknown };
  /** Present when the cell failed, was interrupted, or did not compile. */
  error?: ErrorContent;
  /** An interrupt arrived while the cell ran. */
  interrupted: boolean;
  /** The cell did not stop within the grace period after an interrupt; it runs on in the background. */
  abandoned: boolean;
}

export interface Completion {
  /** UTF-16 offsets in the code of the text the matches replace. */
  start: number;
  end: number;
  matches: string[];
  /** TypeScript's kind of each match (function, class, var, ...), for front ends that show icons. */
  kinds: string[];
}

/** A cell declared ahead of its code (see `Executor.declare`). */
export interface DeferredCell {
  /** The cell's code (an import of preloaded modules). */
  code: string;
  /** Loads what the code needs; resolves with modules for the cells' `require` (by specifier). */
  load(): Promise<ReadonlyMap<string, unknown>>;
  /**
   * The cell's declarations and compiled JavaScript, when known ahead (the converter's output for
   * an import cell is the import itself): then nothing is compiled now, and the declarations are
   * type-checked with the first request that needs the compiler (a completion, a cell).
   */
  prebuilt?: { declaration: string; js: string };
}

export interface Executor {
  /** Run one cell; `name` names it in stack traces (default `cellN.js`, N counting all cells run). */
  execute(code: string, name?: string): Promise<CellOutcome>;
  /**
   * Type-check a cell now and run it later: its names and types are in scope at once (completion,
   * inspection, later cells' type-checks), and its code runs just before the next cell's, after
   * `load()` resolved. The kernel's hidden first cell uses it, so the runtime's import waits for
   * the first execute_request instead of delaying start-up. Returns the compile error, if any.
   */
  declare(cell: DeferredCell): ErrorContent | undefined;
  complete(code: string, position: number): Completion;
  /** Quick info (signature and docs) at `position`, or null when there is nothing there. */
  inspect(code: string, position: number): string | null;
  /** Interrupt the running cell (and the runtime's current scope). */
  interrupt(): void;
  /** The notebook's namespace: every top-level name of the cells run so far. */
  readonly locals: Record<string, unknown>;
  /** True while a cell runs. */
  readonly busy: boolean;
  close(): void;
}

const GLOBAL_KEY = '__vqalab_cell__';

/**
 * The notebook namespace. The converter's CommonJS output defines imported names with getters
 * (`Object.defineProperty(exports, "x", { get })`); we store their values instead, so that a later
 * cell may assign to any name.
 */
function createLocals(): Record<string, unknown> {
  const target: Record<string, unknown> = {};
  return new Proxy(target, {
    defineProperty: (_t, prop, attrs) => {
      if (prop === '__esModule') return true;
      target[prop as string] = attrs.get ? attrs.get() : attrs.value;
      return true;
    },
  });
}

/**
 * Node's breakOnSigint leaves the process's SIGINT disposition at "exit" when the script it ran
 * added a SIGINT listener (a trainer's `run()` does): the watchdog installs its exit handler when
 * it stops, and libuv's handler is put back only when the first listener is added, which then had
 * already happened. The next interrupt would kill the kernel. Re-adding the listeners makes Node
 * install libuv's handler again.
 */
function reinstallSigintIfAdded(before: readonly unknown[]): void {
  const now = process.rawListeners('SIGINT');
  if (!now.some((l) => !before.includes(l))) return;
  process.removeAllListeners('SIGINT');
  for (const l of now) process.on('SIGINT', l as () => void);
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => {
    setImmediate(resolve);
  });
}

function sleep(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => {
    setTimeout(() => resolve('timeout'), ms).unref();
  });
}

export function createExecutor(options: ExecutorOptions): Executor {
  const { rootDir, converter } = options;
  const graceMs = options.graceMs ?? 10_000;
  const modules = new Map<string, unknown>(options.modules ?? []);
  /** A declared cell whose code has not run yet (`declare`). */
  let deferred: { js: string; load: () => Promise<ReadonlyMap<string, unknown>> } | undefined;
  const locals = createLocals();
  /** Compiled JavaScript of local .ts files imported by cells (the converter's side outputs). */
  const sideOutputs = new Map<string, string>();
  const sideModules = new Map<string, { exports: unknown }>();
  let prevDecl = '';
  let busy = false;
  let cellCount = 0;
  let interruptWaiters: (() => void)[] = [];
  let interruptedThisCell = false;

  const nodeRequire = createRequire(path.join(rootDir, '__vqalab_cell__.js'));

  /** `require` for cells and their local modules: preloaded namespaces, side outputs, then Node. */
  function makeRequire(fromDir: string, base: NodeJS.Require): NodeJS.Require {
    const req = ((id: string) => {
      if (modules.has(id)) return modules.get(id);
      if (id === 'tslab') return publicModule();
      if (id.startsWith('.') || path.isAbsolute(id)) {
        let file = path.resolve(fromDir, id);
        if (modules.has(file)) return modules.get(file);
        if (path.extname(file) === '') file += '.js';
        const loaded = sideModules.get(file);
        if (loaded) return loaded.exports;
        const js = sideOutputs.get(file);
        if (js !== undefined) return loadSideModule(file, js);
      }
      return base(id);
    }) as NodeJS.Require;
    return Object.assign(req, {
      resolve: base.resolve,
      cache: base.cache,
      main: base.main,
      extensions: base.extensions,
    });
  }

  function loadSideModule(file: string, js: string): unknown {
    const module = { exports: {} as unknown };
    sideModules.set(file, module);
    const fn = vm.compileFunction(js, ['exports', 'require', 'module', '__filename', '__dirname'], { filename: file });
    const dir = path.dirname(file);
    fn(module.exports, makeRequire(dir, createRequire(file)), module, file, dir);
    return module.exports;
  }

  const cellRequire = makeRequire(rootDir, nodeRequire);

  function nextInterrupt(): Promise<'interrupt'> {
    return new Promise((resolve) => {
      interruptWaiters.push(() => resolve('interrupt'));
    });
  }

  function interrupt(): void {
    // The runtime's scope first, so a loop checking its signal sees it before the cell is given up.
    interruptRuntime('interrupted by the user');
    if (!busy) return;
    interruptedThisCell = true;
    const waiters = interruptWaiters;
    interruptWaiters = [];
    for (const wake of waiters) wake();
  }

  type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

  /** Wait for a cell's promise, honouring interrupts (see the file comment). */
  async function settle(promise: Promise<unknown>): Promise<Settled | 'abandoned'> {
    const done: Promise<Settled> = promise.then(
      (value) => ({ ok: true, value }),
      (error: unknown) => ({ ok: false, error }),
    );
    const first = interruptedThisCell ? 'interrupt' : await Promise.race([done, nextInterrupt()]);
    if (first !== 'interrupt') return first;
    const second = await Promise.race([done, sleep(graceMs), nextInterrupt()]);
    return second === 'timeout' || second === 'interrupt' ? 'abandoned' : second;
  }

  function ok(result?: { value: unknown }): CellOutcome {
    return { result, interrupted: false, abandoned: false };
  }

  function failed(error: ErrorContent): CellOutcome {
    return { error, interrupted: false, abandoned: false };
  }

  function interruptedBeforeRun(): CellOutcome {
    const evalue = 'interrupted by the user before the cell ran';
    return {
      error: { ename: INTERRUPTED, evalue, traceback: [`${INTERRUPTED}: ${evalue}`] },
      interrupted: true,
      abandoned: false,
    };
  }

  function runModuleCell(
    code: string,
    name: string,
    meta: ReturnType<ReturnType<typeof metadataModule>['getCodeMetadata']>,
  ): CellOutcome {
    const diagnostics = converter.addModule(name, code, meta);
    return diagnostics.length > 0 ? failed(compileErrorContent(code, diagnostics)) : ok();
  }

  async function execute(code: string, name?: string): Promise<CellOutcome> {
    if (busy) throw new Error('execute() while a cell runs: the handler runs cells one at a time');
    busy = true;
    interruptedThisCell = false;
    interruptWaiters = [];
    resetInterrupt();
    try {
      cellCount += 1;
      return await run(code, name ?? `cell${cellCount}.js`);
    } finally {
      busy = false;
      interruptWaiters = [];
    }
  }

  async function run(code: string, filename: string): Promise<CellOutcome> {
    const meta = metadataModule().getCodeMetadata(code);
    if (meta.module) return runModuleCell(code, meta.module, meta);
    if (meta.mode === 'browser') {
      return failed({
        ename: 'UnsupportedError',
        evalue: 'browser cells (@browser) are not supported by this kernel',
        traceback: [],
      });
    }
    const converted = converter.convert(prevDecl, code);
    for (const side of converted.sideOutputs ?? []) {
      sideModules.delete(side.path);
      sideOutputs.set(side.path, side.data);
    }
    if (converted.diagnostics.length > 0) return failed(compileErrorContent(code, converted.diagnostics));
    const newDecl = converted.declOutput ?? '';
    if (!converted.output) {
      prevDecl = newDecl;
      return ok();
    }
    // Let a SIGINT that arrived during the (synchronous) conversion reach the kernel's handler
    // before the cell runs: vm's breakOnSigint takes the process's SIGINT listeners off while a
    // script runs, which drops a signal still waiting in the event loop. It waits for the loop's
    // next poll phase, hence two turns (the first may end before that phase).
    await nextTurn();
    await nextTurn();
    if (interruptedThisCell) return interruptedBeforeRun();
    if (deferred) {
      const failure = await runDeferred();
      if (failure) return failed(failure);
    }
    const js = fixShorthandProperties(converted.output, new Set(Object.keys(locals)));
    const prefix = converted.hasToplevelAwait
      ? '(async function (exports, require) { '
      : '(function (exports, require) { ';
    const source = `${prefix}${js}\n})(globalThis.${GLOBAL_KEY}.exports, globalThis.${GLOBAL_KEY}.require)`;
    (globalThis as Record<string, unknown>)[GLOBAL_KEY] = { exports: locals, require: cellRequire };

    let settled: Settled | 'abandoned';
    const sigintListeners = process.rawListeners('SIGINT');
    try {
      let returned: unknown;
      try {
        returned = vm.runInThisContext(source, { filename, breakOnSigint: true, displayErrors: false });
      } finally {
        reinstallSigintIfAdded(sigintListeners);
      }
      settled = converted.hasToplevelAwait
        ? await settle(returned as Promise<unknown>)
        : { ok: true, value: undefined };
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED') {
        // SIGINT went to vm's watchdog, not to the kernel's handler: tell the runtime too.
        interruptRuntime('interrupted by the user');
        interruptedThisCell = true;
      }
      settled = { ok: false, error };
    }
    // Names the cell declared exist now (possibly undefined), also when it failed part-way:
    // later cells must see them with their types, as IPython keeps what ran before an error.
    prevDecl = newDecl;
    let result: { value: unknown } | undefined;
    if (settled !== 'abandoned' && settled.ok && converted.lastExpressionVar) {
      result = { value: locals[converted.lastExpressionVar] };
    }
    if (converted.lastExpressionVar) delete locals[converted.lastExpressionVar];

    if (settled === 'abandoned') {
      return {
        error: {
          ename: INTERRUPTED,
          evalue: `the cell did not stop within ${graceMs / 1000} s of the interrupt; it goes on in the background`,
          traceback: [
            `${INTERRUPTED}: the cell did not stop within ${graceMs / 1000} s of the interrupt; it goes on in the background`,
          ],
        },
        interrupted: true,
        abandoned: true,
      };
    }
    if (!settled.ok) {
      const interruptedSync = (settled.error as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_INTERRUPTED';
      const error = interruptedSync
        ? {
            ename: INTERRUPTED,
            evalue: 'interrupted by the user',
            traceback: [`${INTERRUPTED}: interrupted by the user`],
          }
        : errorContent(settled.error);
      return { error, interrupted: interruptedThisCell, abandoned: false };
    }
    if (interruptedThisCell) {
      // The code stopped cleanly (say, a training loop at a step boundary) but the user asked to
      // stop: report it, so that queued cells are not run (as IPython's KeyboardInterrupt).
      return {
        result,
        error: {
          ename: INTERRUPTED,
          evalue: 'interrupted by the user',
          traceback: [`${INTERRUPTED}: interrupted by the user; the cell stopped cleanly`],
        },
        interrupted: true,
        abandoned: false,
      };
    }
    return ok(result);
  }

  function declare(cell: DeferredCell): ErrorContent | undefined {
    if (busy) throw new Error('declare() while a cell runs');
    if (cell.prebuilt) {
      prevDecl = cell.prebuilt.declaration;
      deferred = { js: cell.prebuilt.js, load: () => cell.load() };
      return undefined;
    }
    const converted = converter.convert(prevDecl, cell.code);
    if (converted.diagnostics.length > 0) return compileErrorContent(cell.code, converted.diagnostics);
    prevDecl = converted.declOutput ?? '';
    if (converted.output) deferred = { js: converted.output, load: () => cell.load() };
    return undefined;
  }

  /** Load and run the declared cell's code (once; a failure is reported on the cell that triggered it). */
  async function runDeferred(): Promise<ErrorContent | undefined> {
    const cell = deferred!;
    deferred = undefined;
    try {
      for (const [k, v] of await cell.load()) modules.set(k, v);
      const js = fixShorthandProperties(cell.js, new Set(Object.keys(locals)));
      (globalThis as Record<string, unknown>)[GLOBAL_KEY] = { exports: locals, require: cellRequire };
      vm.runInThisContext(
        `(function (exports, require) { ${js}\n})(globalThis.${GLOBAL_KEY}.exports, globalThis.${GLOBAL_KEY}.require)`,
        { filename: 'preload.js', displayErrors: false },
      );
      return undefined;
    } catch (err) {
      const e = errorContent(err);
      return {
        ...e,
        traceback: [
          `vqalab: the runtime failed to load, so its names are not in scope (this cell did not run)`,
          ...e.traceback,
        ],
      };
    }
  }

  function complete(code: string, position: number): Completion {
    const info: CompletionInfo = converter.complete(prevDecl, code, position);
    const kindOf = new Map<string, string>();
    for (const e of info.original?.entries ?? []) if (!kindOf.has(e.name)) kindOf.set(e.name, e.kind);
    return {
      start: info.start,
      end: info.end,
      matches: info.candidates,
      kinds: info.candidates.map((c) => kindOf.get(c) ?? ''),
    };
  }

  function inspect(code: string, position: number): string | null {
    const info = converter.inspect(prevDecl, code, position);
    if (!info) return null;
    const text = inspectModule().printQuickInfo(info);
    return text === '' ? null : text;
  }

  return {
    execute,
    declare,
    complete,
    inspect,
    interrupt,
    locals,
    get busy() {
      return busy;
    },
    close: () => converter.close(),
  };
}
