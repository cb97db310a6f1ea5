/**
 * The header stamp of a report: what ran, with what, where and when. The runner fills the parts
 * it can see itself (parameters, kernel, git, host, software, times); everything the run knows
 * better (configs, seeds, dataset fingerprints, model hashes, engine versions, devices) arrives as
 * recorded facts (see facts.ts) gathered from the notebook's outputs.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { mergeFacts, STAMP_MIME, type StampFacts } from './facts.js';
import type { Notebook } from './nbformat.js';
import type { Params } from './params.js';

export interface GitFacts {
  commit: string | null;
  branch: string | null;
  /** null when not a git work tree. */
  dirty: boolean | null;
  /** Paths changed (tracked) and untracked, counted. */
  modified?: number;
  untracked?: number;
}

export interface GpuFact {
  name: string;
  memory?: string;
  driver?: string;
}

export interface Stamp {
  schema: 'vqalab.stamp.v1';
  /** `dir`: the absolute directory it ran in (verify re-runs there when it still exists). */
  notebook: { path: string; sha256: string; dir?: string };
  parameters: Params;
  kernel: {
    name: string;
    displayName?: string;
    language?: string;
    implementation?: string;
    implementationVersion?: string;
    languageVersion?: string;
    protocolVersion?: string;
  };
  git: GitFacts;
  host: {
    hostname: string;
    platform: string;
    release: string;
    arch: string;
    cpu: { model: string; cores: number };
    memoryBytes: number;
    gpus: GpuFact[];
  };
  software: { node: string; vqalab: string; packages: Record<string, string> };
  time: { start: string; end: string; durationSeconds: number };
  run: {
    status: 'ok' | 'error' | 'interrupted';
    allowErrors: boolean;
    cellsRun: number;
    codeCells: number;
    failedCell?: number;
    error?: string;
  };
  facts: StampFacts;
}

function run(cmd: string, args: string[], cwd: string): string | null {
  try {
    return execFileSync(cmd, args, {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    }).trim();
  } catch {
    return null;
  }
}

export function gitFacts(dir: string): GitFacts {
  const commit = run('git', ['rev-parse', 'HEAD'], dir);
  if (!commit) return { commit: null, branch: null, dirty: null };
  const branch = run('git', ['rev-parse', '--abbrev-ref', 'HEAD'], dir);
  const status = run('git', ['status', '--porcelain'], dir) ?? '';
  const lines = status.split('\n').filter(Boolean);
  const untracked = lines.filter((l) => l.startsWith('??')).length;
  return { commit, branch, dirty: lines.length > 0, modified: lines.length - untracked, untracked };
}

/** GPUs visible on this host (nvidia-smi when present); [] when none. */
export function gpuFacts(): GpuFact[] {
  const out = run(
    'nvidia-smi',
    ['--query-gpu=name,memory.total,driver_version', '--format=csv,noheader'],
    process.cwd(),
  );
  if (!out) return [];
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [name, memory, driver] = line.split(',').map((s) => s.trim());
      return { name: name ?? 'unknown', memory, driver };
    });
}

const PACKAGE_ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');

/** Versions of vqalab and the dependencies that shape results, as installed. */
export function softwareFacts(): Stamp['software'] {
  const require = createRequire(path.join(PACKAGE_ROOT, 'package.json'));
  const pkg = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
    version: string;
    dependencies?: Record<string, string>;
  };
  const packages: Record<string, string> = {};
  for (const name of Object.keys(pkg.dependencies ?? {}).sort()) {
    try {
      packages[name] = (
        JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version: string }
      ).version;
    } catch {
      // packages without an exported package.json: find it on the resolution path
      const dir = require.resolve
        .paths(name)
        ?.map((p) => path.join(p, name, 'package.json'))
        .find((p) => {
          try {
            readFileSync(p);
            return true;
          } catch {
            return false;
          }
        });
      packages[name] = dir ? (JSON.parse(readFileSync(dir, 'utf8')) as { version: string }).version : 'not installed';
    }
  }
  return { node: process.version, vqalab: pkg.version, packages };
}

export function hostFacts(): Stamp['host'] {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    cpu: { model: cpus[0]?.model ?? 'unknown', cores: cpus.length },
    memoryBytes: os.totalmem(),
    gpus: gpuFacts(),
  };
}

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Every fact record a notebook's outputs carry, in cell order. */
export function factsFromNotebook(nb: Notebook): StampFacts[] {
  const records: StampFacts[] = [];
  for (const cell of nb.cells) {
    if (cell.cell_type !== 'code') continue;
    for (const o of cell.outputs) {
      if (
        (o.output_type === 'display_data' || o.output_type === 'execute_result') &&
        o.data[STAMP_MIME] &&
        typeof o.data[STAMP_MIME] === 'object'
      ) {
        records.push(o.data[STAMP_MIME] as StampFacts);
      }
    }
  }
  return records;
}

export function mergedFacts(nb: Notebook): StampFacts {
  return mergeFacts(factsFromNotebook(nb));
}

/** The GPU tolerance applies when the run recorded a non-CPU device (or the host has GPUs and none was recorded). */
export function ranOnGpu(stamp: Pick<Stamp, 'facts' | 'host'>): boolean {
  const devices = stamp.facts.devices ?? [];
  if (devices.length) return devices.some((d) => d.kind.toLowerCase() !== 'cpu');
  return false;
}
