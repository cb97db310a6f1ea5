import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { interruptSignal } from '../src/util/interrupt.js';
import { createExecutor, type Executor } from './executor.js';
import { createConverter } from './tslab.js';

// One converter for the file: creating one loads the TypeScript libs (seconds on a busy machine).
let ex: Executor;
let dir: string;
const runtimeStub = { answer: 42, hello: (name: string) => `hello ${name}` };

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vqalab-executor-'));
  writeFileSync(
    path.join(dir, 'stub.d.ts'),
    'export declare const answer: number;\n/** Greets. */\nexport declare function hello(name: string): string;\n',
  );
  const cwd = process.cwd();
  process.chdir(dir); // the converter roots its virtual files at the current directory
  try {
    ex = createExecutor({
      rootDir: dir,
      converter: createConverter(),
      modules: new Map([[path.join(dir, 'stub.js'), runtimeStub]]),
      graceMs: 300,
    });
  } finally {
    process.chdir(cwd);
  }
});
after(() => ex.close());

async function value(code: string): Promise<unknown> {
  const out = await ex.execute(code);
  assert.equal(out.error, undefined, JSON.stringify(out.error));
  return out.result?.value;
}

describe('executor', () => {
  test('the last expression is the result; statements have none; undefined is a value', async () => {
    assert.equal(await value('1 + 2'), 3);
    assert.deepEqual(await ex.execute('const unused = 1;'), {
      result: undefined,
      interrupted: false,
      abandoned: false,
    });
    const out = await ex.execute('let u: number | undefined; u');
    assert.deepEqual(out.result, { value: undefined });
  });

  test('names and their types carry over to later cells', async () => {
    await value('const n = 3; let s = "x"; interface P { a: number }');
    assert.equal(await value('s + n'), 'x3');
    assert.equal(await value('const p: P = { a: n }; p.a'), 3);
    const bad = await ex.execute('const q: P = { a: s };');
    assert.equal(bad.error?.ename, 'TSError');
    assert.match(bad.error!.evalue, /^1:16 - Type 'string' is not assignable to type 'number'/);
    assert.deepEqual(bad.error!.traceback.slice(1), ['    const q: P = { a: s };', '                   ~']);
  });

  test('shorthand properties of earlier names work (tslab throws ReferenceError)', async () => {
    await value('const k = 7; const name2 = "v";');
    assert.deepEqual(await value('({ k, name2 })'), { k: 7, name2: 'v' });
    assert.deepEqual(await value('[1].map((k) => ({ k }))'), [{ k: 1 }], 'a local k keeps its meaning');
    assert.deepEqual(await value('(() => { const k = "inner"; return { k }; })()'), { k: 'inner' });
    assert.equal(await value('let t = 0; ({ k: t } = { k }); t'), 7);
  });

  test('runtime errors keep name, message and frames; names declared before the error persist', async () => {
    const out = await ex.execute('const before = 5;\nthrow new RangeError("boom");\nconst afterwards = 1;');
    assert.equal(out.error?.ename, 'RangeError');
    assert.equal(out.error?.evalue, 'boom');
    assert.equal(out.error?.traceback[0], 'RangeError: boom');
    assert.ok(
      out.error!.traceback.some((l) => l.includes('cell')),
      out.error!.traceback.join('\n'),
    );
    assert.ok(!out.error!.traceback.some((l) => l.includes('dist/kernel')), 'kernel frames are dropped');
    assert.equal(await value('before * 2'), 10);
    const thrown = await ex.execute('throw "text"');
    assert.deepEqual(thrown.error, { ename: 'Uncaught', evalue: "'text'", traceback: ["Uncaught 'text'"] });
  });

  test('top-level await, and async errors', async () => {
    assert.equal(await value('const w = await Promise.resolve(6); w * 7'), 42);
    const out = await ex.execute('await Promise.reject(new TypeError("late"))');
    assert.equal(out.error?.ename, 'TypeError');
    assert.equal(out.error?.evalue, 'late');
  });

  test('preloaded modules are shared, not loaded again; local .ts modules compile', async () => {
    assert.equal(
      await value(`import { answer, hello } from ${JSON.stringify(path.join(dir, 'stub.js'))}; hello(String(answer))`),
      'hello 42',
    );
    assert.equal(await value('hello("again")'), 'hello again');
    writeFileSync(path.join(dir, 'local.ts'), 'export function twice(x: number): number { return 2 * x; }\n');
    assert.equal(await value('import { twice } from "./local"; twice(21)'), 42);
  });

  test('a declared cell is typed at once and runs (after its load) just before the next cell', async () => {
    writeFileSync(path.join(dir, 'lazy.d.ts'), '/** Loaded late. */\nexport declare const lazyValue: number;\n');
    let loads = 0;
    const error = ex.declare({
      code: `import { lazyValue } from ${JSON.stringify(path.join(dir, 'lazy.js'))};`,
      load: async () => {
        loads++;
        return new Map([[path.join(dir, 'lazy.js'), { lazyValue: 41 }]]);
      },
    });
    assert.equal(error, undefined);
    assert.equal(loads, 0, 'nothing is loaded by declare()');
    assert.ok(ex.complete('lazyV', 5).matches.includes('lazyValue'));
    assert.match(ex.inspect('lazyValue', 2) ?? '', /const lazyValue: number/);
    assert.equal(ex.locals.lazyValue, undefined, 'the code has not run yet');
    const bad = await ex.execute('const wrong: string = lazyValue;');
    assert.equal(bad.error?.ename, 'TSError', 'later cells are type-checked against the declared names');
    assert.equal(loads, 0, 'a cell that does not compile runs nothing');
    assert.equal(await value('lazyValue + 1'), 42);
    assert.equal(await value('lazyValue'), 41);
    assert.equal(loads, 1);
  });

  test('a declared cell whose load fails reports it on the next cell; the cells after it run', async () => {
    writeFileSync(path.join(dir, 'broken.d.ts'), 'export declare const brokenValue: number;\n');
    ex.declare({
      code: `import { brokenValue } from ${JSON.stringify(path.join(dir, 'broken.js'))};`,
      load: async () => {
        throw new Error('cannot load broken.js');
      },
    });
    const out = await ex.execute('1');
    assert.equal(out.error?.evalue, 'cannot load broken.js');
    assert.match(out.error!.traceback[0]!, /the runtime failed to load/);
    assert.equal(await value('2'), 2);
  });

  test('module cells define importable modules', async () => {
    assert.equal((await ex.execute('/** @module geometry */\nexport const side = 4;')).error, undefined);
    assert.equal(await value('import { side } from "./geometry"; side * side'), 16);
  });

  test('completion and quick info see earlier cells and the preloaded modules', async () => {
    const c = ex.complete('hel', 3);
    assert.ok(c.matches.includes('hello'), c.matches.join(','));
    assert.equal(c.start, 0);
    assert.equal(c.end, 3);
    assert.equal(c.kinds[c.matches.indexOf('hello')], 'alias');
    const info = ex.inspect('hello', 2);
    assert.match(info ?? '', /hello\(name: string\): string/);
    assert.match(info ?? '', /Greets\./);
    assert.equal(ex.inspect('   ', 1), null);
  });

  test('an interrupt that arrives before the cell runs (while it compiles) stops it before it runs', async () => {
    await value('let ranAnyway = false;');
    const running = ex.execute('ranAnyway = true;');
    // execute() compiles synchronously, then lets the event loop turn (so a pending SIGINT can
    // be handled) before running the code: this interrupt lands in that window.
    setImmediate(() => ex.interrupt());
    const out = await running;
    assert.equal(out.error?.evalue, 'interrupted by the user before the cell ran');
    assert.equal(await value('ranAnyway'), false);
  });

  test('an interrupt stops a cooperative async loop at a step boundary; state stays consistent', async () => {
    await value('let steps = 0;');
    (globalThis as { loopSteps?: number }).loopSteps = 0;
    const runtime = JSON.stringify(fileURLToPath(new URL('../src/util/interrupt.js', import.meta.url)));
    const running = ex.execute(`import { interruptSignal } from ${runtime};
      const signal = interruptSignal();
      while (!signal.aborted) { steps++; (globalThis as any).loopSteps = steps; await new Promise((r) => setTimeout(r, 5)); }
      "stopped at " + steps`);
    // Interrupt once the loop has taken a few steps (whatever the machine's speed).
    const g = globalThis as { loopSteps?: number };
    while ((g.loopSteps ?? 0) < 3) await new Promise((r) => setTimeout(r, 5));
    ex.interrupt();
    const out = await running;
    assert.equal(out.interrupted, true);
    assert.equal(out.abandoned, false);
    assert.equal(out.error?.ename, 'InterruptedError');
    assert.match(String(out.result?.value), /^stopped at \d+$/);
    const steps = await value('steps');
    assert.equal(`stopped at ${steps}`, out.result?.value, 'the next cell sees the state the loop left');
    assert.equal(interruptSignal().aborted, false, 'the next cell runs in a fresh interrupt scope');
  });

  test('a cell that ignores the interrupt is given up after the grace period', async () => {
    const g = globalThis as { cellStarted?: boolean };
    g.cellStarted = false;
    const running = ex.execute('(globalThis as any).cellStarted = true; await new Promise(() => {})');
    while (!g.cellStarted) await new Promise((r) => setTimeout(r, 5));
    ex.interrupt();
    const out = await running;
    assert.equal(out.abandoned, true);
    assert.equal(out.error?.ename, 'InterruptedError');
    assert.equal(await value('"alive"'), 'alive');
  });
});
