/**
 * `vqalab train-agent`: usage errors name the fix; a one-step run with the example agent writes
 * metrics.jsonl and the model, and ends with its JSON line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError } from '../../src/util/errors.js';
import { runTrainAgent } from '../../src/cli/train-agent.js';
import { trainCommand } from '../../src/cli/train.js';

const EXAMPLE = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'examples',
  'agents',
  'vqa-agent.js',
);

test('usage errors', async () => {
  await assert.rejects(
    runTrainAgent([]),
    (e: unknown) => e instanceof UsageError && /--agent "CMD" is required/.test(e.message),
  );
  await assert.rejects(
    runTrainAgent(['--agent', 'x', '--env', 'NOEQUALS']),
    (e: unknown) => e instanceof UsageError && /--env must be KEY=VALUE; got "NOEQUALS"/.test(e.message),
  );
  await assert.rejects(
    runTrainAgent(['--agent', 'x', '--lr', 'fast']),
    (e: unknown) => e instanceof UsageError && /--lr must be a positive number/.test(e.message),
  );
  await assert.rejects(
    runTrainAgent(['--agent', 'x', '--bogus']),
    (e: unknown) => e instanceof UsageError && /bogus/.test(e.message),
  );
  // `vqalab train --agent` is the same command.
  await assert.rejects(
    trainCommand.run(['--agent', 'x', '--env', 'NOEQUALS']),
    (e: unknown) => e instanceof UsageError && /--env must be KEY=VALUE; got "NOEQUALS"/.test(e.message),
  );
});

test('remote rollouts: --gateway and --gateway-key-env usage errors (the key is never printed)', async () => {
  const usage = (args: string[], re: RegExp) =>
    assert.rejects(
      runTrainAgent(['--agent', 'x', ...args]),
      (e: unknown) => e instanceof UsageError && re.test(e.message),
    );
  await usage(['--gateway', 'http://127.0.0.1:9'], /--gateway needs --gateway-key-env VAR/);
  await usage(['--gateway-key-env', 'K'], /--gateway-key-env is for remote rollouts: give --gateway URL too/);
  await usage(['--push', 'full'], /--push is for remote rollouts/);
  await usage(['--gateway', 'localhost:8000', '--gateway-key-env', 'K'], /--gateway must be the http\(s\) URL/);
  delete process.env.VQALAB_TEST_UNSET_KEY;
  await usage(
    ['--gateway', 'http://127.0.0.1:9', '--gateway-key-env', 'VQALAB_TEST_UNSET_KEY'],
    /--gateway-key-env VQALAB_TEST_UNSET_KEY: that environment variable is empty or not set/,
  );
  process.env.VQALAB_TEST_KEY = 'secret-admin-key-value';
  try {
    await usage(
      ['--gateway', 'http://127.0.0.1:9', '--gateway-key-env', 'VQALAB_TEST_KEY', '--push', 'half'],
      /--push must be lora or full; got "half"/,
    );
    await usage(
      ['--gateway', 'http://127.0.0.1:9', '--gateway-key-env', 'VQALAB_TEST_KEY', '--eval-attempts', '2'],
      /--eval-attempts is not available with --gateway/,
    );
    // `vqalab train --agent` is the same command.
    await assert.rejects(
      trainCommand.run(['--agent', 'x', '--gateway', 'http://127.0.0.1:9']),
      (e: unknown) => e instanceof UsageError && /--gateway needs --gateway-key-env VAR/.test(e.message),
    );
    // Nothing listens there: said before the data and the model load, without the key.
    await assert.rejects(
      runTrainAgent(['--agent', 'x', '--gateway', 'http://127.0.0.1:9', '--gateway-key-env', 'VQALAB_TEST_KEY']),
      (e: unknown) =>
        e instanceof Error &&
        /cannot reach the remote gateway: GET http:\/\/127\.0\.0\.1:9\/admin\/weights/.test(e.message) &&
        !e.message.includes('secret-admin-key-value'),
    );
  } finally {
    delete process.env.VQALAB_TEST_KEY;
  }
});

test('one step with the example agent', async () => {
  const out = mkdtempSync(path.join(tmpdir(), 'vqalab-train-agent-'));
  try {
    const lines: string[] = [],
      errs: string[] = [];
    const code = await runTrainAgent(
      [
        '--agent',
        `"${process.execPath}" "${EXAMPLE}"`,
        '--steps',
        '1',
        '--prompts',
        '1',
        '--group',
        '2',
        '--synth-images',
        '1',
        '--threads',
        '1',
        '--out',
        out,
        '--env',
        'AGENT_MAX_TOKENS=3',
      ],
      { out: (l) => lines.push(l), err: (l) => errs.push(l) },
    );
    assert.equal(code, 0, errs.join('\n'));
    const result = JSON.parse(lines.at(-1)!) as { steps: number; failedAttempts: number };
    assert.deepEqual([result.steps, result.failedAttempts], [1, 0]);
    const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { step: number; attempts: number });
    assert.deepEqual(
      metrics.map((m) => [m.step, m.attempts]),
      [[0, 2]],
    );
    assert.ok(existsSync(path.join(out, 'model', 'config.json')));
    assert.match(errs.join('\n'), /step 0: reward \d\.\d{3}, 2\/2 attempts succeeded/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
