/**
 * Interrupts for long runtime work (training loops, generation, evaluation), the same in a
 * notebook and in a script: one process-wide *interrupt scope* whose AbortSignal loops check at
 * their step boundaries.
 *
 * Who interrupts:
 * - In the notebook kernel, Jupyter's interrupt (SIGINT to the kernel) → the kernel calls
 *   `interrupt()`. The kernel opens a fresh scope before each cell (`resetInterrupt()`), so an
 *   interrupt stops the cell that was running, never the next one.
 * - In a script, Ctrl-C (SIGINT) while some work listens (`interruptible()` or `onInterrupt()`):
 *   the first Ctrl-C interrupts, a second one exits at once with code 130. The SIGINT handler
 *   is installed only while someone listens, so importing vqalab never changes what Ctrl-C does.
 *
 * How a loop uses it (capture the signal once, at the start, then check it at each boundary):
 *
 *     await interruptible(async (signal) => {
 *       for (let step = 0; step < steps; step++) {
 *         if (signal.aborted) break;      // or throw signal.reason
 *         await trainStep();              // must yield: see below
 *       }
 *     }, options.signal);
 *
 * The loop must give the event loop a turn between steps (await real async work, which native
 * engine calls running off the JS thread do). A synchronous loop after an `await` cannot be
 * interrupted: SIGINT is delivered through the event loop.
 *
 * State lives on `globalThis` under a registered symbol, so every copy of this module loaded in
 * one process shares it (the kernel and the runtime it preloads must agree).
 */

/** The reason an interrupt aborts the scope's signal with. */
export class InterruptedError extends Error {
  constructor(message = 'interrupted') {
    super(message);
    this.name = 'InterruptedError';
  }
}

type Listener = (reason: InterruptedError) => void;

interface InterruptState {
  controller: AbortController;
  listeners: Set<Listener>;
  /** A host (the kernel) delivers interrupts itself: never install a SIGINT handler. */
  hosted: boolean;
  /** How many `interruptible` / `onInterrupt` registrations want Ctrl-C (scripts). */
  interest: number;
  sigintHandler: (() => void) | undefined;
  sigints: number;
}

const STATE_KEY = Symbol.for('vqalab.interrupt');

function state(): InterruptState {
  const g = globalThis as { [STATE_KEY]?: InterruptState };
  return (g[STATE_KEY] ??= {
    controller: new AbortController(),
    listeners: new Set(),
    hosted: false,
    interest: 0,
    sigintHandler: undefined,
    sigints: 0,
  });
}

/**
 * The current scope's signal: aborted once an interrupt arrived in this scope (in a notebook,
 * since the running cell began). Its `reason` is an `InterruptedError`. Capture it once at the
 * start of a loop: a later scope has a new signal.
 */
export function interruptSignal(): AbortSignal {
  return state().controller.signal;
}

/** True when the current scope has been interrupted. */
export function isInterrupted(): boolean {
  return state().controller.signal.aborted;
}

/** Throws the `InterruptedError` when the current scope has been interrupted. */
export function throwIfInterrupted(): void {
  const signal = state().controller.signal;
  if (signal.aborted) throw signal.reason;
}

/**
 * Interrupt the current scope: abort its signal and call the listeners. Returns false when it was
 * already interrupted (listeners are called once per scope). Called by the kernel on SIGINT, by
 * the script SIGINT handler, and by tests.
 */
export function interrupt(message = 'interrupted'): boolean {
  const s = state();
  if (s.controller.signal.aborted) return false;
  const reason = new InterruptedError(message);
  s.controller.abort(reason);
  for (const listener of [...s.listeners]) {
    try {
      listener(reason);
    } catch (err) {
      // A listener's bug must not stop the others from hearing the interrupt.
      process.emitWarning(`interrupt listener failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return true;
}

/**
 * Open a fresh scope (new signal, not interrupted). The kernel calls it before each cell.
 * Listeners stay registered: they hear the next interrupt, in whichever scope it comes.
 */
export function resetInterrupt(): void {
  const s = state();
  s.controller = new AbortController();
  s.sigints = 0;
}

/**
 * Declare that this process's host delivers interrupts itself (the notebook kernel turns SIGINT
 * into `interrupt()`): the runtime then never installs its own SIGINT handler.
 */
export function hostInterrupts(): void {
  const s = state();
  s.hosted = true;
  uninstallSigint(s);
}

function onSigint(): void {
  const s = state();
  s.sigints += 1;
  if (s.sigints > 1) {
    process.stderr.write('\nvqalab: second interrupt, exiting now\n');
    process.exit(130);
  }
  process.stderr.write('\nvqalab: interrupted; stopping at the next step boundary (Ctrl-C again to exit now)\n');
  interrupt('interrupted by SIGINT');
}

function installSigint(s: InterruptState): void {
  if (s.hosted || s.sigintHandler) return;
  s.sigintHandler = onSigint;
  process.on('SIGINT', onSigint);
}

function uninstallSigint(s: InterruptState): void {
  if (!s.sigintHandler) return;
  process.removeListener('SIGINT', s.sigintHandler);
  s.sigintHandler = undefined;
}

function addInterest(): () => void {
  const s = state();
  s.interest += 1;
  installSigint(s);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    s.interest -= 1;
    if (s.interest === 0) {
      uninstallSigint(s);
      s.sigints = 0;
    }
  };
}

/**
 * Call `listener` at the next interrupt (if the current scope is already interrupted, it is called
 * right away, asynchronously). Returns a function that stops listening; until then, in a script,
 * Ctrl-C interrupts instead of killing the process.
 */
export function onInterrupt(listener: Listener): () => void {
  if (typeof listener !== 'function')
    throw new TypeError(`Expected function for listener but received ${typeof listener}`);
  const s = state();
  const release = addInterest();
  s.listeners.add(listener);
  const signal = s.controller.signal;
  if (signal.aborted)
    queueMicrotask(() => {
      if (s.listeners.has(listener)) listener(signal.reason as InterruptedError);
    });
  return () => {
    s.listeners.delete(listener);
    release();
  };
}

/**
 * Run `work` with a signal that aborts at the next interrupt or when `parent` aborts, whichever
 * comes first; in a script Ctrl-C is caught for exactly this long. Returns what `work` returns.
 */
export async function interruptible<T>(work: (signal: AbortSignal) => Promise<T>, parent?: AbortSignal): Promise<T> {
  const controller = new AbortController();
  const stopListening = onInterrupt((reason) => controller.abort(reason));
  const onParent = () => controller.abort(parent?.reason);
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  try {
    return await work(controller.signal);
  } finally {
    parent?.removeEventListener('abort', onParent);
    stopListening();
  }
}
