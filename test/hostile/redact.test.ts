/**
 * Secrets planted where output leaves the process (issue 20, defect 5): the CLI's own stderr
 * (`vqalab report run`'s failure line), secret-named variables (SERVICE_KEY, DEPLOY_AUTH), an AWS
 * secret access key, a bare JWT, a Stripe-style bearer token, and an environment secret printed
 * in two halves by two console.log calls.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isSecretEnvName, Redactor, REDACTED, RedactingWriter } from '../../src/report/redact.js';
import { pythonNotebook } from '../report/notebooks.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = path.join(ROOT, 'bin', 'vqalab.js');
const AWS_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
const STRIPE = `tok_live_${'4eC39HqLyjWDarjtT1zdp7dc'}`;

test('names containing KEY, TOKEN, SECRET, PASSWORD or AUTH are secret env vars; look-alikes are not', () => {
  for (const n of ['SERVICE_KEY', 'DEPLOY_AUTH', 'APIKEY', 'HF_TOKEN', 'DB_PASSWORD', 'MY_SECRET_VALUE', 'AUTH_HEADER'])
    assert.ok(isSecretEnvName(n), n);
  for (const n of ['KEYBOARD', 'GIT_AUTHOR_NAME', 'MAX_TOKENS', 'TOKENIZERS_PARALLELISM', 'HOME'])
    assert.ok(!isSecretEnvName(n), n);
});

test('secret shapes: SERVICE_KEY= / DEPLOY_AUTH: assignments, AWS secret key, bare JWT, Bearer tok_live_', () => {
  const r = new Redactor({});
  assert.equal(r.text('export SERVICE_KEY=a8f5f167f44f4964e6c998dee827110c'), `export SERVICE_KEY=${REDACTED}`);
  assert.equal(r.text('DEPLOY_AUTH: "u:Zm9vYmFyYmF6cXV4"'), `DEPLOY_AUTH: "${REDACTED}"`);
  assert.equal(r.text(`aws ${AWS_SECRET} end`), `aws ${REDACTED} end`);
  assert.equal(r.text(`token ${JWT}`), `token ${REDACTED}`);
  assert.equal(r.text(`Bearer ${STRIPE}`), `Bearer ${REDACTED}`);
  assert.ok(!r.text(`got 401 for Bearer ${STRIPE}`).includes('tok_live'));
  // look-alikes stay: a git hash, MAX_TOKENS, prose
  const sha = '3adf61e0c8d1f2a4b5c6d7e8f90a1b2c3d4e5f60';
  assert.equal(r.text(`commit ${sha}`), `commit ${sha}`);
  assert.equal(r.text('MAX_TOKENS=512000 and monkeys'), 'MAX_TOKENS=512000 and monkeys');
});

test('an environment secret printed in two halves (two writes, two lines) is scrubbed', () => {
  const secret = 'dpl_9fK2mQ7xR4tV8wZ1bN6cH3jL5sA0eU';
  const r = new Redactor({ DEPLOY_AUTH: secret });
  const out: string[] = [];
  const w = new RedactingWriter(r, (t) => out.push(t), 60_000);
  w.write(`${secret.slice(0, 17)}\n`);
  w.write(secret.slice(17));
  w.write('\n');
  w.write('ab');
  w.write('c\n');
  w.flush();
  const all = out.join('');
  assert.ok(!all.includes(secret.slice(0, 17)) && !all.includes(secret.slice(17)), all);
  assert.match(all, /^\[REDACTED:DEPLOY_AUTH\]\n\[REDACTED:DEPLOY_AUTH\]\nabc\n$/);
});

test('a process with output redaction installed: console.log of a secret in halves never reaches stdout', () => {
  const secret = 'svc_Q8w7E6r5T4y3U2i1O0pLkJhGfDsA';
  const script = `import { installOutputRedaction } from ${JSON.stringify(path.join(ROOT, 'dist', 'src', 'report', 'redact.js'))};
installOutputRedaction();
const k = process.env.SERVICE_KEY;
console.log(k.slice(0, 15)); console.log(k.slice(15));
process.stdout.write(k.slice(0, 5)); process.stdout.write(k.slice(5) + '\\n');
console.error('Authorization: Bearer ${STRIPE}');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, SERVICE_KEY: secret },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  for (const piece of [secret.slice(0, 15), secret.slice(15), secret.slice(0, 5) + secret.slice(5)])
    assert.ok(!r.stdout.includes(piece), r.stdout);
  assert.ok(!r.stderr.includes('tok_live'), r.stderr);
  assert.equal(r.stdout.split('\n').filter(Boolean).length, 3);
});

test("vqalab report run: the failing cell's Bearer token is not printed on stderr", () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-hostile-redact-'));
  try {
    const nb = pythonNotebook([
      {
        cell_type: 'code',
        metadata: {},
        execution_count: null,
        outputs: [],
        source: `raise RuntimeError("401 from the API with Authorization: Bearer ${STRIPE}")`,
      } as any,
    ]);
    writeFileSync(path.join(dir, 'leak.ipynb'), JSON.stringify(nb));
    const r = spawnSync(process.execPath, [CLI, 'report', 'run', 'leak.ipynb', '--out', 'out'], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 180_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /cell 0 failed: RuntimeError: 401 from the API with Authorization: Bearer \[REDACTED\]/);
    assert.ok(!r.stderr.includes('tok_live') && !r.stdout.includes('tok_live'), r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
