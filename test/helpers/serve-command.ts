/**
 * `vqalab serve` started as a command (bin/vqalab.js in a child process, one thread), for tests of
 * the command itself: its start-up line, its exit code and what it wrote.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'vqalab.js');

export interface ServeCommand {
  child: ChildProcess;
  /** The server's base URL from its "listening on" line; rejects with stderr when it exits first. */
  ready: Promise<string>;
  /** The exit code. */
  exited: Promise<number | null>;
  /** What it has written so far. */
  out(): { stdout: string; stderr: string };
  /** SIGTERM (if it still runs), then its exit. */
  stop(): Promise<void>;
}

/** Starts `vqalab serve --threads 1 ...args` with `env` added to this process's environment. */
export function startServe(args: string[], env: Record<string, string> = {}): ServeCommand {
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
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return { child, ready, exited, out: () => ({ stdout, stderr }), stop };
}
