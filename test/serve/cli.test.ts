/** `vqalab serve` as a command: start-up line, key from the environment, clean stop on SIGINT, a busy port. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServe } from '../helpers/serve-command.js';

test('starts on loopback, takes its key from --api-key-env, logs requests, stops cleanly on SIGINT', async () => {
  const s = startServe(['--port', '0', '--api-key-env', 'SERVE_TEST_KEY', '--name', 'tiny'], {
    SERVE_TEST_KEY: 'sk-abc',
  });
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
    const busy = startServe(['--port', String(port)]);
    assert.equal(await busy.exited, 1);
    assert.match(busy.out().stderr, new RegExp(`vqalab serve: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE`));
  } finally {
    blocker.close();
  }
  const noKey = startServe(['--api-key-env', 'SURELY_NOT_SET_ANYWHERE']);
  assert.equal(await noKey.exited, 2);
  assert.match(
    noKey.out().stderr,
    /--api-key-env SURELY_NOT_SET_ANYWHERE: that environment variable is empty or not set/,
  );
  const noRoot = startServe(['--allowed-media-root', '/nonexistent/media']);
  assert.equal(await noRoot.exited, 2);
  assert.match(noRoot.out().stderr, /--allowed-media-root \/nonexistent\/media: not a folder/);
});
