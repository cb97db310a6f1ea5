/**
 * `vqalab train --gpus N` as a user runs it, on CPU ranks (--device cpu: the cpu collective): two ranks
 * train the embedded default and checkpoint; the run resumes with --resume on one process (no --gpus),
 * which goes on from the two ranks' checkpoint; bad multi-host flags get exact messages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const bin = path.join(root, 'bin', 'vqalab.js');
const work = mkdtempSync(path.join(tmpdir(), 'vqalab-dist-cli-'));
test.after(() => rmSync(work, { recursive: true, force: true }));
const vqalab = (...args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, VQALAB_THREADS: '1' } });

const cfg = path.join(work, 'config.json');
writeFileSync(
  cfg,
  JSON.stringify({ promptsPerStep: 4, numGenerations: 4, maxCompletionLength: 4, learningRate: 1e-3 }),
);
const common = [
  '--device',
  'cpu',
  '--config',
  cfg,
  '--sft-steps',
  '0',
  '--limit-train',
  '16',
  '--limit-val',
  '4',
  '--threads',
  '1',
];

test('vqalab train --gpus 2 on CPU ranks: step lines, metrics and a checkpoint; --resume goes on in one process', () => {
  const out = path.join(work, 'run');
  const r = vqalab('train', ...common, '--gpus', '2', '--max-steps', '2', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /vqalab train: 2 ranks \(1 node × 2\); 2 GRPO steps of 4×4/);
  assert.match(r.stdout, /step 1\/2 \| reward/);
  assert.match(r.stdout, /step 2\/2 \| reward/);
  assert.match(r.stdout, /done: 2 steps .* on 2 ranks; checkpoint .*checkpoint-000002/);
  const metrics = readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
  assert.equal(metrics.filter((l) => JSON.parse(l).kind === 'grpo').length, 2);
  const resumed = vqalab('train', ...common, '--max-steps', '3', '--out', out, '--resume');
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /resuming at step 2, 1 GRPO steps/);
  assert.match(resumed.stdout, /step 3\/3 \| reward/);
  assert.ok(existsSync(path.join(out, 'checkpoints', 'checkpoint-000003')));
});

test('vqalab train: several nodes need --master-addr and --master-port; --node-rank below --nodes', () => {
  const r = vqalab(
    'train',
    ...common,
    '--gpus',
    '2',
    '--nodes',
    '2',
    '--node-rank',
    '0',
    '--out',
    path.join(work, 'x'),
  );
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--nodes > 1 needs --master-addr and --master-port/);
  const r2 = vqalab(
    'train',
    ...common,
    '--gpus',
    '2',
    '--nodes',
    '2',
    '--node-rank',
    '2',
    '--master-addr',
    '127.0.0.1',
    '--master-port',
    '1',
    '--out',
    path.join(work, 'y'),
  );
  assert.equal(r2.status, 2);
  assert.match(r2.stderr, /--node-rank 2 must be below --nodes 2/);
});

/** A free port on loopback (the system's pick, released for the driver to take). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Runs the CLI to its exit; resolves with its status and output. */
function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, VQALAB_THREADS: '1' } });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

test('two nodes on loopback: node 0 drives, node 1 runs its rank through the node agent', async () => {
  const port = String(await freePort());
  const out = path.join(work, 'two-nodes');
  const hosts = ['--nodes', '2', '--master-addr', '127.0.0.1', '--master-port', port];
  const [driver, agent] = await Promise.all([
    run(['train', ...common, '--gpus', '1', ...hosts, '--node-rank', '0', '--max-steps', '2', '--out', out]),
    run([
      'train',
      ...common,
      '--gpus',
      '1',
      ...hosts,
      '--node-rank',
      '1',
      '--max-steps',
      '2',
      '--out',
      path.join(work, 'unused'),
    ]),
  ]);
  assert.equal(driver.status, 0, driver.stderr);
  assert.equal(agent.status, 0, agent.stderr);
  assert.match(driver.stdout, /vqalab train: 2 ranks \(2 nodes × 1\)/);
  assert.match(driver.stdout, /done: 2 steps .* on 2 ranks/);
  assert.ok(existsSync(path.join(out, 'checkpoints', 'checkpoint-000002')));
  assert.equal(existsSync(path.join(work, 'unused')), false, 'only node 0 writes --out');
});

test('Ctrl-C to the whole process group: the driver stops at a step boundary, saves, exits 130; the ranks end with it', async () => {
  const out = path.join(work, 'interrupted');
  const child = spawn(process.execPath, [bin, 'train', ...common, '--gpus', '2', '--max-steps', '400', '--out', out], {
    env: { ...process.env, VQALAB_THREADS: '1' },
    detached: true, // its own process group, which the terminal's Ctrl-C reaches as a whole
  });
  let stdout = '',
    stderr = '',
    sent = false;
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!sent && /\nstep 1\/400 /.test(stdout)) {
        sent = true;
        process.kill(-child.pid!, 'SIGINT');
      }
    });
    child.on('close', (c) => resolve(c));
  });
  assert.ok(sent, `no step line: ${stdout}${stderr}`);
  assert.equal(code, 130, stdout + stderr);
  const m = /interrupted after step (\d+): checkpoint (\S+); continue with --resume/.exec(stdout);
  assert.ok(m, stdout);
  assert.ok(existsSync(m[2]!), `${m[2]} was not written`);
  assert.doesNotMatch(stderr, /distributed run stopped/);
});
