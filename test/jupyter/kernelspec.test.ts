import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  installKernelspec,
  kernelsDir,
  launcherPath,
  listKernelspecs,
  removeKernelspec,
  userDataDir,
} from '../../src/jupyter/kernelspec.js';

const root = mkdtempSync(path.join(tmpdir(), 'vqalab-kernelspec-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('install writes kernel.json with absolute node and launcher paths; reinstall replaces it', async () => {
  const dir = await installKernelspec({ prefix: root });
  assert.equal(dir, path.join(root, 'share', 'jupyter', 'kernels', 'vqalab'));
  const spec = JSON.parse(readFileSync(path.join(dir, 'kernel.json'), 'utf8'));
  assert.deepEqual(spec.argv, [process.execPath, launcherPath, '--connection-file', '{connection_file}']);
  assert.ok(path.isAbsolute(spec.argv[0]) && path.isAbsolute(spec.argv[1]));
  assert.ok(existsSync(spec.argv[1]), 'the launcher exists');
  assert.equal(spec.display_name, 'TypeScript (vqalab)');
  assert.equal(spec.language, 'typescript');
  assert.equal(spec.interrupt_mode, 'signal');
  await installKernelspec({ prefix: root });
  assert.deepEqual(JSON.parse(readFileSync(path.join(dir, 'kernel.json'), 'utf8')).argv, spec.argv);
});

test('list finds ours in search order, flags stale and shadowed ones, ignores other kernels', async () => {
  const other = path.join(root, 'other');
  await installKernelspec({ prefix: other });
  const stale = path.join(root, 'stale', 'kernels', 'vqalab-old');
  mkdirSync(stale, { recursive: true });
  writeFileSync(
    path.join(stale, 'kernel.json'),
    JSON.stringify({
      argv: ['/usr/bin/node', '/gone/dist/kernel/main.js', '-f', '{connection_file}'],
      display_name: 'old',
    }),
  );
  const py = path.join(root, 'py', 'kernels', 'python3');
  mkdirSync(py, { recursive: true });
  writeFileSync(
    path.join(py, 'kernel.json'),
    JSON.stringify({ argv: ['python3', '-m', 'ipykernel_launcher'], display_name: 'Python 3' }),
  );
  const found = listKernelspecs([
    path.join(root, 'share', 'jupyter'),
    path.join(other, 'share', 'jupyter'),
    path.join(root, 'stale'),
    path.join(root, 'py'),
  ]);
  assert.deepEqual(
    found.map((f) => [f.name, f.thisPackage, f.launcherExists, f.shadowed]),
    [
      ['vqalab', true, true, false],
      ['vqalab', true, true, true],
      ['vqalab-old', false, false, false],
    ],
  );
});

test('remove deletes ours only; location flags are exclusive; user dir follows JUPYTER_DATA_DIR / XDG', () => {
  assert.equal(removeKernelspec({ prefix: root }), path.join(root, 'share', 'jupyter', 'kernels', 'vqalab'));
  assert.equal(removeKernelspec({ prefix: root }), null);
  const foreign = path.join(root, 'foreign', 'share', 'jupyter', 'kernels', 'vqalab');
  mkdirSync(foreign, { recursive: true });
  writeFileSync(path.join(foreign, 'kernel.json'), JSON.stringify({ argv: ['python3'], display_name: 'not ours' }));
  assert.throws(
    () => removeKernelspec({ prefix: path.join(root, 'foreign') }),
    /is not a vqalab kernelspec; not removing it/,
  );
  assert.throws(() => kernelsDir({ user: true, prefix: root }), {
    message: 'choose one of --user, --prefix and --sys-prefix',
  });
  assert.equal(userDataDir({ JUPYTER_DATA_DIR: '/x/data' }), '/x/data');
  if (process.platform === 'linux') assert.equal(userDataDir({ XDG_DATA_HOME: '/x/xdg' }), '/x/xdg/jupyter');
});
