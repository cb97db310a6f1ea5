/** `vqalab serve` as a command: start-up line, key from the environment, clean stop on SIGINT, a busy port. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');

function start(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [BIN, 'serve', '--threads', '1', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stdout = '',
    stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      const m = /listening on (\S+)/.exec(stdout);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`exited with ${code}: ${stderr}`)));
  });
  ready.catch(() => undefined); // awaited only by tests that expect a start
  return { child, ready, exited, out: () => ({ stdout, stderr }) };
}

test('starts on loopback, takes its key from --api-key-env, logs requests, stops cleanly on SIGINT', async () => {
  const s = start(['--port', '0', '--api-key-env', 'SERVE_TEST_KEY', '--name', 'tiny'], { SERVE_TEST_KEY: 'sk-abc' });
  const url = await s.ready;
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  assert.match(s.out().stdout, /^vqalab serve: model "tiny" \(embedded tiny model, context 1024 tokens\)\n/);
  assert.equal((await fetch(`${url}/models`)).status, 401);
  const ok = await fetch(`${url}/models`, { headers: { authorization: 'Bearer sk-abc' } });
  assert.deepEqual(
    ((await ok.json()) as { data: { id: string }[] }).data.map((m) => m.id),
    ['tiny'],
  );
  s.child.kill('SIGINT');
  assert.equal(await s.exited, 0);
  assert.match(s.out().stderr, /vqalab serve: GET \/v1\/models 401 \d+ms/);
  assert.match(s.out().stderr, /SIGINT: finishing running requests, then stopping/);
});

test('a busy port, an unset key variable and a missing media root are clear errors', async () => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const busy = start(['--port', String(port)]);
    assert.equal(await busy.exited, 1);
    assert.match(busy.out().stderr, new RegExp(`vqalab serve: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
  } finally {
    blocker.close();
  }
  const noKey = start(['--api-key-env', 'SURELY_NOT_SET_ANYWHERE']);
  assert.equal(await noKey.exited, 2);
  assert.match(
    noKey.out().stderr,
    /--api-key-env SURELY_NOT_SET_ANYWHERE: that environment variable is empty or not set/,
  );
  const noRoot = start(['--allowed-media-root', '/nonexistent/media']);
  assert.equal(await noRoot.exited, 2);
  assert.match(noRoot.out().stderr, /--allowed-media-root \/nonexistent\/media: not a folder/);
});
