/**
 * Agent rollouts: an agent is a command run once per rollout attempt, Agent Lightning's runner
 * contract. Its environment holds
 *
 *   AGL_OPENAI_BASE_URL   the attempt's OpenAI-compatible base URL (…/rollouts/{r}/attempts/{a}/v1)
 *   AGL_EVENT_URL         POST {"event_type": "reward", "data": {"value": n}} here
 *   AGL_KEY               the bearer key of both
 *   QUESTION, ANSWER, IMAGE_PATH (absolute), ID, TASK_JSON (the whole row, snake_case as in Parquet)
 *
 * plus the caller's `env`. G attempts of one task form a group; each attempt's recorded calls
 * become its trajectory (src/gateway/trajectory.ts). Agents run as subprocesses (their own process
 * group, so a shell's children go too) with a concurrency limit and a timeout; the tail of each
 * one's stdout and stderr is kept with its attempt. An attempt that exits without posting a reward
 * is failed with its stderr tail (Gateway.finishAttempt).
 *
 * It sits in src/gateway because it drives a Gateway; its option type, `AgentOptions`, is
 * declared in src/grpo/agent-step.ts (it is the Trainer's `agent` option) and re-exported here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { VqaSample } from '../data/types.js';
import type { AgentOptions } from '../grpo/agent-step.js';
import type { AttemptRecord, FinishInfo, Gateway } from './gateway.js';
import { attemptHost, type AttemptHost } from './host.js';
import { trajectoryOf, type Trajectory, type TrajectoryOptions } from './trajectory.js';
import { expectInteger, invalidParameterError } from '../util/validate.js';

export type { AgentOptions };

/** All attempts of one task. */
export interface AgentGroup {
  sample: VqaSample;
  rolloutId: string;
  attempts: AttemptRecord[];
  /** One per attempt, in attempt order; a failed attempt's reward is NaN. */
  trajectories: Trajectory[];
}

// The trainer keeps each step's groups (`Trainer.lastAgentGroups`); src/grpo names their type
// through this slot instead of importing it from this higher layer.
type TheAgentGroup = AgentGroup;
declare module '../grpo/agent-step.js' {
  interface AgentStepTypes {
    group: TheAgentGroup;
  }
}

export interface AgentRolloutOptions {
  signal?: AbortSignal;
  /** Called as each attempt finishes. */
  onAttempt?: (rec: AttemptRecord) => void;
  trajectory?: TrajectoryOptions;
  /**
   * Rollout ids are `<prefix>-<index>-<sample id>` (default prefix "ro"); a rollout id must be new on the
   * gateway, so give each round its own prefix (the trainer uses the step: "s12").
   */
  rolloutPrefix?: string;
}

/** The task's variables of the contract: QUESTION, ANSWER, IMAGE_PATH, ID, TASK_JSON. */
export function vqaTaskEnv(sample: VqaSample): Record<string, string> {
  const row: Record<string, unknown> = {
    ...(sample.extra ?? {}),
    id: sample.id,
    image_path: path.resolve(sample.imagePath),
    question: sample.question,
    answer: sample.answer,
    answers: sample.answers,
  };
  if (sample.imagePaths) row.image_paths = sample.imagePaths.map((p) => path.resolve(p));
  if (sample.answerType !== undefined) row.answer_type = sample.answerType;
  if (sample.questionType !== undefined) row.question_type = sample.questionType;
  return {
    QUESTION: sample.question,
    ANSWER: sample.answer,
    IMAGE_PATH: path.resolve(sample.imagePath),
    ID: sample.id,
    TASK_JSON: JSON.stringify(row),
  };
}

/** Keeps the last `max` bytes written. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max: number) {}
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
    while (this.size - this.chunks[0]!.length >= this.max) this.size -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.max)).toString('utf8');
  }
}

/** At most `n` holders at once, FIFO. */
export class Semaphore {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private readonly n: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.n) await new Promise<void>((r) => this.queue.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}

function checkAgent(o: AgentOptions): void {
  if (o === null || typeof o !== 'object')
    throw invalidParameterError('agent', 'an object {command, env?, concurrency?, timeoutMs?}', o);
  const c = o.command;
  if (
    !(typeof c === 'string' && c.trim() !== '') &&
    !(Array.isArray(c) && c.length > 0 && c.every((x) => typeof x === 'string'))
  ) {
    throw invalidParameterError('agent.command', 'a non-empty command line or argv list', c);
  }
  if (o.concurrency !== undefined) expectInteger('agent.concurrency', o.concurrency, 1, 4096);
  if (o.timeoutMs !== undefined) expectInteger('agent.timeoutMs', o.timeoutMs, 1);
  if (
    o.env !== undefined &&
    (typeof o.env !== 'object' || o.env === null || Object.values(o.env).some((v) => typeof v !== 'string'))
  ) {
    throw invalidParameterError('agent.env', 'an object of string values', o.env);
  }
}

/**
 * Run the agent once for an attempt opened on `gateway` (a Gateway here, or any AttemptHost: a
 * remote one); resolves with the finished record (never rejects for the agent's failures).
 */
export async function runAgentAttempt(
  gateway: Gateway | AttemptHost,
  sample: VqaSample,
  o: AgentOptions,
  ids: { rolloutId: string; attemptId?: string },
  signal?: AbortSignal,
): Promise<AttemptRecord> {
  checkAgent(o);
  const host = attemptHost(gateway);
  const ep = await host.open(
    { rolloutId: ids.rolloutId, attemptId: ids.attemptId ?? `at-${randomBytes(6).toString('hex')}` },
    sample,
  );
  const env: Record<string, string | undefined> = {
    ...(o.inheritEnv === false ? {} : process.env),
    ...o.env,
    ...(o.taskEnv ?? vqaTaskEnv)(sample),
    AGL_OPENAI_BASE_URL: ep.baseUrl,
    AGL_EVENT_URL: ep.eventUrl,
    AGL_KEY: ep.key,
    AGL_ROLLOUT_ID: ep.rolloutId,
    AGL_ATTEMPT_ID: ep.attemptId,
  };
  const max = o.outputBytes ?? 16384;
  const out = new Tail(max),
    err = new Tail(max);
  const timeoutMs = o.timeoutMs ?? 120_000;
  const info = await new Promise<FinishInfo>((resolve) => {
    const finish = (i: FinishInfo) => resolve({ ...i, stdoutTail: out.text(), stderrTail: err.text() });
    if (signal?.aborted) return finish({ error: 'cancelled before the agent started' });
    const argv = typeof o.command === 'string' ? ['/bin/sh', '-c', o.command] : [...o.command];
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), { env, cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (e) {
      return finish({ error: `cannot start the agent ${JSON.stringify(argv[0])}: ${(e as Error).message}` });
    }
    let timedOut = false,
      cancelled = false,
      spawnError: string | undefined;
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        /* already gone */
      }
    };
    let hard: NodeJS.Timeout | undefined;
    const stop = () => {
      killGroup('SIGTERM');
      hard = setTimeout(() => killGroup('SIGKILL'), 2000);
      hard.unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, timeoutMs);
    const onAbort = () => {
      cancelled = true;
      stop();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      spawnError = `cannot start the agent ${JSON.stringify(argv[0])}: ${e.message}`;
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (hard) clearTimeout(hard);
      signal?.removeEventListener('abort', onAbort);
      // A shell may leave children behind (an agent that forked and exited): end the group.
      killGroup('SIGKILL');
      finish({
        exitCode: code,
        signal: timedOut || cancelled ? null : sig,
        timedOut,
        ...(spawnError
          ? { error: spawnError }
          : timedOut
            ? { error: `the agent was stopped after its timeout of ${timeoutMs} ms` }
            : cancelled
              ? { error: 'cancelled' }
              : {}),
      });
    });
  });
  return host.finish({ rolloutId: ep.rolloutId, attemptId: ep.attemptId }, info);
}

/**
 * G attempts per sample, every attempt of every sample under one concurrency limit; groups in
 * sample order, attempts in attempt order.
 */
export async function rolloutAgentGroups(
  gateway: Gateway | AttemptHost,
  samples: readonly VqaSample[],
  G: number,
  agent: AgentOptions,
  options: AgentRolloutOptions = {},
): Promise<AgentGroup[]> {
  checkAgent(agent);
  expectInteger('G', G, 1, 4096);
  const host = attemptHost(gateway);
  const sem = new Semaphore(agent.concurrency ?? 8);
  const groups = samples.map((sample, i) => {
    const rolloutId = `${options.rolloutPrefix ?? 'ro'}-${i}-${sample.id.replace(/[^A-Za-z0-9._~-]/g, '_').slice(0, 60)}`;
    return { sample, rolloutId, attempts: [] as AttemptRecord[], trajectories: [] as Trajectory[] };
  });
  await Promise.all(
    groups.flatMap((g) =>
      Array.from({ length: G }, (_, k) =>
        sem.run(async () => {
          const rec = await runAgentAttempt(
            host,
            g.sample,
            agent,
            { rolloutId: g.rolloutId, attemptId: `a${k}` },
            options.signal,
          );
          g.attempts[k] = rec;
          options.onAttempt?.(rec);
        }),
      ),
    ),
  );
  for (const g of groups) g.trajectories = g.attempts.map((a) => trajectoryOf(a, options.trajectory));
  return groups;
}
