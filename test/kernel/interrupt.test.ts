import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  InterruptedError,
  interrupt,
  interruptSignal,
  interruptible,
  isInterrupted,
  onInterrupt,
  resetInterrupt,
  throwIfInterrupted,
} from '../../src/util/interrupt.js';

afterEach(() => {
  resetInterrupt();
});

test('interrupt aborts the current scope once; reset opens a fresh one', () => {
  const signal = interruptSignal();
  assert.equal(isInterrupted(), false);
  assert.equal(interrupt('stop'), true);
  assert.equal(interrupt('again'), false, 'listeners hear one interrupt per scope');
  assert.ok(signal.aborted);
  assert.ok(signal.reason instanceof InterruptedError);
  assert.equal((signal.reason as Error).message, 'stop');
  assert.throws(() => throwIfInterrupted(), { name: 'InterruptedError', message: 'stop' });
  resetInterrupt();
  assert.equal(interruptSignal().aborted, false);
  assert.ok(signal.aborted, 'a loop that captured the old signal still sees its interrupt');
});

test('listeners hear interrupts until released; a failing listener does not stop the others', () => {
  const heard: string[] = [];
  const off1 = onInterrupt(() => {
    throw new Error('bad listener');
  });
  const off2 = onInterrupt((r) => heard.push(r.message));
  interrupt('one');
  resetInterrupt();
  interrupt('two');
  off1();
  off2();
  resetInterrupt();
  interrupt('three');
  assert.deepEqual(heard, ['one', 'two']);
});

test('interruptible: aborts on interrupt or on the parent signal, and cleans up', async () => {
  const stepsRun = await interruptible(async (signal) => {
    let n = 0;
    for (; n < 1000; n++) {
      if (signal.aborted) break;
      if (n === 3) interrupt();
      await new Promise((r) => setImmediate(r));
    }
    return n;
  });
  assert.equal(stepsRun, 4, 'stops at the boundary after the interrupt');
  resetInterrupt();
  const parent = new AbortController();
  parent.abort(new Error('parent'));
  const reason = await interruptible(async (signal) => signal.reason as Error, parent.signal);
  assert.equal(reason.message, 'parent');
  assert.equal(process.listenerCount('SIGINT'), 0, 'no SIGINT handler left behind');
});

const script = fileURLToPath(new URL('./fixtures/interrupt-script.js', import.meta.url));

async function runScript(
  args: string[],
  sigints: number,
): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  let out = '',
    err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  // Wait until the loop runs before interrupting.
  while (!out.includes('step 2') && child.exitCode === null) await new Promise((r) => setTimeout(r, 10));
  // Signals do not queue: a second SIGINT sent before the first was handled would merge with it.
  // So each one after the first waits for the script's report of the one before (its stderr line).
  for (let i = 0; i < sigints; i++) {
    const reported = err.split('vqalab: interrupted;').length - 1;
    child.kill('SIGINT');
    if (i + 1 < sigints) {
      while (err.split('vqalab: interrupted;').length - 1 === reported && child.exitCode === null)
        await new Promise((r) => setTimeout(r, 10));
    }
  }
  const [code, signal] = await exited;
  return { code, signal, out, err };
}

test('script: Ctrl-C stops an interruptible loop at a step boundary and the script finishes', async () => {
  const r = await runScript(['loop'], 1);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /stopped after \d+ steps\n/);
  assert.match(r.out, /done\n$/);
  assert.match(r.err, /interrupted; stopping at the next step boundary/);
});

test('script: a second Ctrl-C exits at once with 130', async () => {
  const r = await runScript(['stuck'], 2);
  assert.equal(r.code, 130, r.err);
  assert.match(r.err, /second interrupt, exiting now/);
});

test('script: with nobody listening Ctrl-C keeps its default meaning', async () => {
  const r = await runScript(['plain'], 1);
  assert.equal(r.signal, 'SIGINT');
});
