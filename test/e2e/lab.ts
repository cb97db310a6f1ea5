/**
 * The real JupyterLab 4.6.4 front end for end-to-end tests: installs the lab tree from its lock
 * (npm ci in test/e2e/app, once per lock), builds the app (webpack, once per input), and serves it
 * with Debian's jupyter-server + jupyterlab-server on a free loopback port.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../../..');
export const APP = path.join(ROOT, 'test/e2e/app');

export interface LabTreeTimes {
  installSeconds: number | null;
  buildSeconds: number | null;
}

/**
 * The lab tree installed from its lock when that changed, by the script `npm run lab:setup` runs
 * (scripts/lab-tree.mjs: one stamp, written and checked there). Returns the install's seconds, or
 * null when the tree was up to date.
 */
export function ensureLabTree(app: string = APP): number | null {
  const out = execFileSync(process.execPath, [path.join(ROOT, 'scripts/lab-tree.mjs'), '--if-changed', app], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  const r = JSON.parse(out) as { installed: boolean; seconds?: number };
  return r.installed ? r.seconds! : null;
}

/**
 * npm ci + webpack when their inputs changed (scripts/lab-tree.mjs --build: under the lab tree's lock, so
 * test files starting at once do not build into one folder together); returns what it had to do and how
 * long it took.
 */
export function ensureLabApp(log: (s: string) => void = () => {}): LabTreeTimes {
  log('checking the lab tree and app (npm ci in test/e2e/app when its lock changed, webpack when its inputs did)');
  const out = execFileSync(
    process.execPath,
    [path.join(ROOT, 'scripts/lab-tree.mjs'), '--if-changed', '--build', APP],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      encoding: 'utf8',
    },
  );
  const r = JSON.parse(out) as { installed: boolean; seconds?: number; built: boolean; buildSeconds?: number };
  return { installSeconds: r.installed ? r.seconds! : null, buildSeconds: r.built ? r.buildSeconds! : null };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface LabServer {
  url: string;
  token: string;
  process: ChildProcess;
  output: string[];
  stop(): Promise<void>;
}

/** Start the server on a free port; resolves once /api/status answers. */
export async function startLab(rootDir: string, env: NodeJS.ProcessEnv): Promise<LabServer> {
  const port = await freePort();
  const token = `vqalab-e2e-${process.pid}`;
  const proc = spawn(
    '/usr/bin/python3',
    [
      path.join(APP, 'main.py'),
      '--ServerApp.ip=127.0.0.1',
      `--ServerApp.port=${port}`,
      '--ServerApp.port_retries=0',
      '--ServerApp.open_browser=False',
      '--ServerApp.allow_root=True',
      `--ServerApp.token=${token}`,
      `--ServerApp.root_dir=${rootDir}`,
    ],
    { cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output: string[] = [];
  proc.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
  proc.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  // A guard against a server that never answers (on a loaded 2-core machine it may take a while).
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`jupyter server exited with ${proc.exitCode}:\n${output.join('')}`);
    try {
      const r = await fetch(`${url}/api/status?token=${token}`);
      if (r.ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`jupyter server did not answer within 180 s:\n${output.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, token, process: proc, output, stop };
}
