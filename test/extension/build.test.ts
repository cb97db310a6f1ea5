import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EXTENSION_NAME, jupyterDataDir, parseWhere, prebuiltExtension } from '../../src/cli/lab.js';

const root = path.resolve(import.meta.dirname, '../../..');
const cli = path.join(root, 'bin/vqalab.js');

test('the committed prebuilt extension matches its sources (else: npm run lab:setup && npm run build:lab, and commit)', async () => {
  const { sourceHash } = (await import(path.join(root, 'extension/source-hash.mjs'))) as {
    sourceHash(root: string): string;
  };
  const info = JSON.parse(readFileSync(path.join(root, 'extension/labextension/vqalab-build.json'), 'utf8')) as {
    sourceHash: string;
    coreMeta: string;
  };
  assert.equal(
    info.sourceHash,
    sourceHash(root),
    'extension/labextension is stale: rebuild it with "npm run build:lab" and commit it',
  );
  assert.equal(info.coreMeta, '4.6.4');
});

test('the prebuilt extension is a federated mime extension with its remote entry and a lazy plotly chunk', () => {
  const ext = prebuiltExtension(root);
  assert.match(ext.load, /^static\/remoteEntry\.[0-9a-f]{20}\.js$/);
  const pkg = JSON.parse(readFileSync(path.join(ext.dir, 'package.json'), 'utf8')) as {
    name: string;
    jupyterlab: { _build: { mimeExtension: string } };
  };
  assert.equal(pkg.name, EXTENSION_NAME);
  assert.equal(pkg.jupyterlab._build.mimeExtension, './mimeExtension');
  const statics = readdirSync(path.join(ext.dir, 'static'));
  assert.ok(
    statics.some((f) => /^plotly\.[0-9a-f]{20}\.js$/.test(f)),
    `plotly chunk among ${statics.join(', ')}`,
  );
  const entry = readFileSync(path.join(ext.dir, ext.load), 'utf8');
  assert.match(entry, /_JUPYTERLAB/);
  assert.match(entry, /vqalab-jupyterlab/);
});

test('vqalab lab install/path/uninstall: the labextensions layout for --prefix and --user', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqa-lab-'));
  try {
    const env = { ...process.env, JUPYTER_DATA_DIR: path.join(dir, 'data') };
    const run = (...args: string[]) => execFileSync(process.execPath, [cli, 'lab', ...args], { env, encoding: 'utf8' });
    const out = run('install', '--prefix', path.join(dir, 'env'));
    const target = path.join(dir, 'env/share/jupyter/labextensions', EXTENSION_NAME);
    assert.match(
      out,
      new RegExp(`^installed vqalab-jupyterlab 0\\.1\\.0 into ${target} \\(\\d+ files, \\d+\\.\\d MB\\)`),
    );
    const installed = JSON.parse(readFileSync(path.join(target, 'package.json'), 'utf8')) as {
      jupyterlab: { _build: { load: string } };
    };
    assert.ok(existsSync(path.join(target, installed.jupyterlab._build.load)));
    assert.equal(JSON.parse(readFileSync(path.join(target, 'install.json'), 'utf8')).packageName, 'vqalab');
    // Installing again replaces the copy (no leftovers from a temp folder).
    run('install', '--prefix', path.join(dir, 'env'));
    assert.deepEqual(readdirSync(path.dirname(target)), [EXTENSION_NAME]);
    assert.equal(run('path').trim(), path.join(dir, 'data/labextensions', EXTENSION_NAME));
    run('install', '--user');
    assert.ok(existsSync(path.join(dir, 'data/labextensions', EXTENSION_NAME, 'package.json')));
    assert.match(run('uninstall', '--user'), /^removed /);
    assert.ok(!existsSync(path.join(dir, 'data/labextensions', EXTENSION_NAME)));
    assert.throws(
      () => execFileSync(process.execPath, [cli, 'lab', 'uninstall', '--user'], { env, stdio: 'pipe' }),
      /not installed/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lab options: one location flag, clear errors; data dir as jupyter_core finds it', () => {
  assert.deepEqual(parseWhere([]), { mode: 'user', python: 'python3' });
  assert.deepEqual(parseWhere(['--prefix=/opt/x', '--python', '/usr/bin/python3']), {
    mode: 'prefix',
    prefix: '/opt/x',
    python: '/usr/bin/python3',
  });
  assert.throws(() => parseWhere(['--user', '--sys-prefix']), {
    message: '--user and --sys-prefix exclude each other; give one',
  });
  assert.throws(() => parseWhere(['--prefix']), { message: '--prefix needs a folder' });
  assert.throws(() => parseWhere(['--global']), { message: 'unknown option --global; run "vqalab lab --help"' });
  assert.equal(jupyterDataDir({}, 'linux', '/home/u'), '/home/u/.local/share/jupyter');
  assert.equal(jupyterDataDir({ XDG_DATA_HOME: '/x' }, 'linux', '/home/u'), '/x/jupyter');
  assert.equal(jupyterDataDir({}, 'darwin', '/Users/u'), '/Users/u/Library/Jupyter');
  assert.equal(jupyterDataDir({ JUPYTER_DATA_DIR: '/j' }, 'linux', '/home/u'), '/j');
});
