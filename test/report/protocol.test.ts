/**
 * The protocol client against a real kernel (Debian's ipykernel): handshake, outputs in nbformat
 * form, display updates across cells, stdin, timeouts, interrupts in both modes, death, shutdown.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MessageCodec, ProtocolError } from '../../src/jupyter/message.js';
import { findKernelSpecs, getKernelSpec, jupyterDataDirs, KernelSpecError } from '../../src/jupyter/kernelspec.js';
import { Kernel, KernelDiedError } from '../../src/report/protocol/kernel.js';
import { applyCarriageReturns, DisplayRegistry } from '../../src/report/protocol/outputs.js';
import { runNotebook } from '../../src/report/runner.js';
import { pythonNotebook } from './notebooks.js';

test('messages are signed with HMAC-SHA256 and a tampered frame is refused', () => {
  const codec = new MessageCodec('secret-key');
  const msg = codec.create('execute_request', { code: '1+1' });
  const frames = codec.encode(msg);
  assert.equal(frames[0]!.toString(), '<IDS|MSG>');
  assert.match(frames[1]!.toString(), /^[0-9a-f]{64}$/);
  const back = codec.decode(frames);
  assert.deepEqual(back.content, { code: '1+1' });
  assert.equal(back.header.msg_type, 'execute_request');
  const tampered = frames.slice();
  tampered[5] = Buffer.from(JSON.stringify({ code: 'import os' }));
  assert.throws(() => codec.decode(tampered), {
    name: 'ProtocolError',
    message: 'message signature does not match the connection key',
  });
  assert.throws(() => new MessageCodec('other').decode(frames), ProtocolError);
  assert.throws(() => codec.decode([Buffer.from('x')]), { message: 'message has no <IDS|MSG> delimiter' });
  // An empty key disables signing, as the protocol says.
  const open = new MessageCodec('');
  assert.equal(open.encode(msg)[1]!.toString(), '');
  assert.throws(() => new MessageCodec('k', 'hmac-sha3'), /unsupported signature_scheme "hmac-sha3"/);
});

test('carriage returns overwrite the line, as a terminal shows it', () => {
  assert.equal(applyCarriageReturns('step 1\rstep 2\rstep 3\ndone\n'), 'step 3\ndone\n');
  assert.equal(applyCarriageReturns('a\r\nb'), 'a\nb');
});

describe('kernelspec discovery', () => {
  let root: string;
  before(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'vq-spec-'));
    const mk = (dir: string, name: string, spec: object) => {
      mkdirSync(path.join(dir, 'kernels', name), { recursive: true });
      writeFileSync(path.join(dir, 'kernels', name, 'kernel.json'), JSON.stringify(spec));
    };
    mk(path.join(root, 'jp'), 'alpha', {
      argv: ['a', '{connection_file}'],
      display_name: 'Alpha (JUPYTER_PATH)',
      language: 'python',
      env: { X: '${HOME}/x' },
    });
    mk(path.join(root, 'user'), 'alpha', { argv: ['b'], display_name: 'Alpha (user)', language: 'python' });
    mk(path.join(root, 'user'), 'beta', {
      argv: ['b'],
      display_name: 'Beta',
      language: 'typescript',
      interrupt_mode: 'message',
    });
    mk(path.join(root, 'pfx', 'share', 'jupyter'), 'gamma', { argv: ['g'], display_name: 'Gamma', language: 'python' });
    mk(path.join(root, 'user'), 'broken', { argv: 'not-a-list' });
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test('JUPYTER_PATH wins over the user dir; --prefix layouts are found; env values expand', () => {
    const env = {
      HOME: '/home/someone',
      JUPYTER_PATH: path.join(root, 'jp'),
      JUPYTER_DATA_DIR: path.join(root, 'user'),
    };
    const dirs = jupyterDataDirs({ env, prefixes: [path.join(root, 'pfx')] });
    assert.deepEqual(dirs.slice(0, 3), [
      path.join(root, 'pfx', 'share', 'jupyter'),
      path.join(root, 'jp'),
      path.join(root, 'user'),
    ]);
    assert.ok(dirs.includes('/usr/share/jupyter'));
    const alpha = getKernelSpec('alpha', { env });
    assert.equal(alpha.displayName, 'Alpha (JUPYTER_PATH)');
    assert.equal(alpha.env.X, '/home/someone/x');
    assert.equal(alpha.interruptMode, 'signal');
    assert.equal(getKernelSpec('beta', { env }).interruptMode, 'message');
    assert.equal(getKernelSpec('gamma', { env, prefixes: [path.join(root, 'pfx')] }).displayName, 'Gamma');
    assert.ok(findKernelSpecs({ env }).has('python3'), 'the system python3 kernelspec is found in /usr/share/jupyter');
  });

  test('errors name the file, the field, and what was searched', () => {
    const env = { HOME: '/nonexistent', JUPYTER_DATA_DIR: path.join(root, 'user') };
    assert.throws(
      () => getKernelSpec('broken', { env }),
      (err: Error) =>
        err instanceof KernelSpecError &&
        err.message.includes(path.join(root, 'user', 'kernels', 'broken', 'kernel.json')) &&
        err.message.includes('field "argv" must be a non-empty array of strings'),
    );
    assert.throws(
      () => getKernelSpec('nope', { env }),
      (err: Error) => /no kernel named "nope" \(found: .*beta.*; searched .*kernels/.test(err.message),
    );
  });
});

describe('a real ipykernel', { timeout: 120_000 }, () => {
  let kernel: Kernel;
  before(async () => {
    kernel = await Kernel.start({ name: 'python3' });
  });
  after(async () => {
    await kernel?.shutdown();
  });

  test('kernel_info handshake', () => {
    assert.equal(kernel.info.status, 'ok');
    assert.equal(kernel.info.language_info.name, 'python');
    assert.match(kernel.info.protocol_version, /^5\./);
  });

  test('outputs: streams merge per name, display, execute_result, error', async () => {
    const r = await kernel.execute(
      'import sys\nprint("a")\nprint("b")\nsys.stdout.flush()\nprint("e", file=sys.stderr)\nsys.stderr.flush()\nfrom IPython.display import display, HTML\ndisplay(HTML("<b>x</b>"))\n6*7',
    );
    assert.equal(r.status, 'ok');
    assert.deepEqual(r.outputs[0], { output_type: 'stream', name: 'stdout', text: 'a\nb\n' });
    assert.deepEqual(r.outputs[1], { output_type: 'stream', name: 'stderr', text: 'e\n' });
    assert.equal(r.outputs[2]!.output_type, 'display_data');
    assert.equal((r.outputs[2] as any).data['text/html'], '<b>x</b>');
    assert.deepEqual(r.outputs[3], {
      output_type: 'execute_result',
      execution_count: r.executionCount,
      data: { 'text/plain': '42' },
      metadata: {},
    });
    // stopOnError false: otherwise ipykernel aborts an execute request that arrives right after the
    // error (the next test's first cell, under load).
    const e = await kernel.execute('raise KeyError("k9")', { stopOnError: false });
    assert.equal(e.status, 'error');
    assert.equal(e.error?.ename, 'KeyError');
    assert.equal(e.outputs.filter((o) => o.output_type === 'error').length, 1);
  });

  test('update_display_data rewrites the output in an earlier cell; clear_output clears', async () => {
    const displays = new DisplayRegistry();
    const first = await kernel.execute(
      'from IPython.display import display\nh = display({"text/plain": "v1"}, raw=True, display_id="dash")',
      { displays },
    );
    await kernel.execute('h.update({"text/plain": "v2"}, raw=True)', { displays });
    assert.deepEqual((first.outputs[0] as any).data, { 'text/plain': 'v2' });
    const cleared = await kernel.execute(
      'from IPython.display import clear_output\nprint("gone")\nclear_output()\nprint("kept")',
      { displays },
    );
    assert.deepEqual(cleared.outputs, [{ output_type: 'stream', name: 'stdout', text: 'kept\n' }]);
  });

  test('stdin: input() is answered', async () => {
    const r = await kernel.execute('v = input("name? ")\nprint("hello", v)', {
      allowStdin: true,
      onInput: (prompt) => (prompt === 'name? ' ? 'vqa' : '?'),
    });
    assert.equal(r.status, 'ok');
    assert.deepEqual(r.outputs.at(-1), { output_type: 'stream', name: 'stdout', text: 'hello vqa\n' });
  });

  test('a cell over its timeout is interrupted (SIGINT) and the kernel stays usable', async () => {
    const t0 = Date.now();
    const r = await kernel.execute('import time\nfor i in range(600): time.sleep(0.05)', {
      timeoutMs: 500,
      stopOnError: false,
    });
    assert.ok(Date.now() - t0 < 25_000, 'interrupted long before the 30 s the cell would run');
    assert.equal(r.status, 'error');
    assert.deepEqual(
      r.outputs.filter((o) => o.output_type === 'error').map((o: any) => o.ename),
      ['KeyboardInterrupt', 'CellTimeoutError'],
    );
    const ok = await kernel.execute('print("still here")');
    assert.deepEqual(ok.outputs, [{ output_type: 'stream', name: 'stdout', text: 'still here\n' }]);
  });
});

test('interrupt_mode "message" interrupts through the control channel', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vq-msgint-'));
  try {
    const sys = getKernelSpec('python3');
    const target = path.join(dir, 'kernels', 'py-msg');
    cpSync(sys.resourceDir, target, { recursive: true });
    const spec = JSON.parse(readFileSync(path.join(target, 'kernel.json'), 'utf8'));
    writeFileSync(path.join(target, 'kernel.json'), JSON.stringify({ ...spec, interrupt_mode: 'message' }));
    const kernel = await Kernel.start({
      name: 'py-msg',
      search: { prefixes: [], env: { ...process.env, JUPYTER_PATH: dir } },
    });
    try {
      assert.equal(kernel.spec.interruptMode, 'message');
      const running = kernel.execute('import time\nfor i in range(600): time.sleep(0.05)');
      await new Promise((r) => setTimeout(r, 300));
      await kernel.interrupt();
      const r = await running;
      assert.equal(r.status, 'error');
      assert.equal(r.error?.ename, 'KeyboardInterrupt');
    } finally {
      await kernel.shutdown();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a cell allowed to fail does not make the kernel abort the next cell (stop_on_error off, like nbclient)', async () => {
  // ipykernel aborts execute requests that arrive within stop_on_error_timeout of an error while
  // stop_on_error is set. The default window is one event-loop turn, which a loaded machine
  // sometimes hits; a kernelspec with a 3 s window makes the race certain.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vq-stoperr-'));
  try {
    const sys = getKernelSpec('python3');
    const target = path.join(dir, 'kernels', 'py-slow-abort');
    cpSync(sys.resourceDir, target, { recursive: true });
    const spec = JSON.parse(readFileSync(path.join(target, 'kernel.json'), 'utf8'));
    writeFileSync(
      path.join(target, 'kernel.json'),
      JSON.stringify({ ...spec, argv: [...spec.argv, '--IPythonKernel.stop_on_error_timeout=3'] }),
    );
    const code = (source: string, tags: string[] = []) => ({
      cell_type: 'code' as const,
      execution_count: null,
      metadata: tags.length ? { tags } : {},
      outputs: [],
      source,
    });
    const nb = pythonNotebook([
      code('raise ValueError("expected")', ['raises-exception']),
      code('print("ran")'),
      code('1/0'),
      code('print("ran too")'),
    ]);
    writeFileSync(path.join(dir, 'nb.ipynb'), JSON.stringify(nb));
    const search = { prefixes: [], env: { ...process.env, JUPYTER_PATH: dir } };
    const r = await runNotebook({
      notebook: path.join(dir, 'nb.ipynb'),
      kernel: 'py-slow-abort',
      search,
      allowErrors: true,
    });
    assert.equal(r.status, 'ok');
    const outs = r.notebook.cells.map((c) => (c.cell_type === 'code' ? c.outputs : []));
    assert.equal((outs[0]![0] as any).ename, 'ValueError');
    assert.deepEqual(
      outs[1],
      [{ output_type: 'stream', name: 'stdout', text: 'ran\n' }],
      'the cell after a raises-exception cell ran',
    );
    assert.equal((outs[2]![0] as any).ename, 'ZeroDivisionError');
    assert.deepEqual(
      outs[3],
      [{ output_type: 'stream', name: 'stdout', text: 'ran too\n' }],
      'the cell after an error ran under --allow-errors',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('kernel death is detected: the running request fails with its exit code', async () => {
  const kernel = await Kernel.start({ name: 'python3' });
  let deathEvent = false;
  kernel.on('death', () => (deathEvent = true));
  try {
    await assert.rejects(
      kernel.execute('import os\nos._exit(7)'),
      (err: Error) => err instanceof KernelDiedError && err.exitCode === 7,
    );
    assert.equal(kernel.alive, false);
    assert.ok(deathEvent);
    await assert.rejects(kernel.execute('1'), KernelDiedError);
  } finally {
    await kernel.close();
  }
});

test('shutdown stops the kernel process', async () => {
  const kernel = await Kernel.start({ name: 'python3' });
  const pid = kernel.pid!;
  await kernel.shutdown();
  assert.equal(kernel.alive, false);
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
});
