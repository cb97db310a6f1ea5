import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isSecretEnvName, isSecretKey, Redactor, REDACTED } from '../../src/report/redact.js';

test('secret-looking names: env vars and config keys', () => {
  for (const n of [
    'OPENAI_API_KEY',
    'HF_TOKEN',
    'GITHUB_TOKEN',
    'AWS_SECRET_ACCESS_KEY',
    'MY_SECRET',
    'DB_PASSWORD',
    'TOKEN',
  ])
    assert.ok(isSecretEnvName(n), n);
  for (const n of ['TOKENIZERS_PARALLELISM', 'HOME', 'PATH', 'MAX_TOKENS', 'KEYBOARD'])
    assert.ok(!isSecretEnvName(n), n);
  for (const k of [
    'apiKey',
    'api_key',
    'token',
    'accessToken',
    'auth_token',
    'client_secret',
    'password',
    'Authorization',
  ])
    assert.ok(isSecretKey(k), k);
  for (const k of ['eos_token', 'pad_token', 'maxTokens', 'max_new_tokens', 'num_tokens', 'tokenizer', 'steps'])
    assert.ok(!isSecretKey(k), k);
});

test('values from the environment, known shapes and secret keys are scrubbed', () => {
  const r = new Redactor({ MY_SERVICE_TOKEN: 'tok-1234567890abcdef', HOME: '/root' });
  assert.equal(r.text('using tok-1234567890abcdef now'), 'using [REDACTED:MY_SERVICE_TOKEN] now');
  assert.equal(r.text('key sk-proj-AbCdEfGhIjKlMnOpQrStUv done'), `key ${REDACTED} done`);
  assert.equal(r.text('Authorization: Bearer abc.def.ghi'), `Authorization: Bearer ${REDACTED}`);
  assert.equal(r.text('{"authorization": "Basic Zm9vOmJhcg=="}'), `{"authorization": "Basic ${REDACTED}"}`);
  assert.equal(r.text('https://user:hunter22@example.invalid/x'), `https://user:${REDACTED}@example.invalid/x`);
  assert.equal(r.text('hf_abcdefghijklmnopqrstuvwxyzABCDEFGH'), REDACTED);
  assert.equal(r.text('/root stays, so does TOKENIZERS'), '/root stays, so does TOKENIZERS');
  const j = r.json({
    openai: { apiKey: 'whatever-it-is', model: 'gpt' },
    eos_token: '<|end|>',
    maxTokens: 5,
    note: 'sk-ABCDEFGHIJKLMNOPQRSTUV',
  });
  assert.deepEqual(j, {
    openai: { apiKey: REDACTED, model: 'gpt' },
    eos_token: '<|end|>',
    maxTokens: 5,
    note: REDACTED,
  });
});

test('a secret learned from a config key is scrubbed wherever it is printed', () => {
  const r = new Redactor({});
  r.collectFrom({ client: { password: 'correct-horse-battery' } });
  assert.equal(r.text('logged in with correct-horse-battery'), 'logged in with [REDACTED:password]');
});
