/**
 * `vqalab train-agent --agent "CMD"` (and `vqalab train --agent "CMD"`, which hands over to
 * `runTrainAgent`): GRPO of the model behind the gateway, on what an agent command did with it.
 */
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { VqaDataset } from '../data/dataset.js';
import { synthSamples } from '../data/synth.js';
import type { VqaSample } from '../data/types.js';
import type { Device } from '../engine/types.js';
import { loadModel } from '../engine/index.js';
import type { RemoteAgentGateway } from '../grpo/agent-step.js';
import { Trainer, type TrainerOptions } from '../grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { vqaAccuracy } from '../reward/basic.js';
import { resolveModelFolder } from '../engine/folder.js';
import { processorOptionsFrom } from '../vision/processor-config.js';
import { VlmTokenizer } from '../text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../vision/qwen2vl.js';
import { UsageError } from '../util/errors.js';
import type { Command } from './command.js';
import { rolloutAgentGroups } from '../gateway/agent.js';
import { AgentTraining } from '../gateway/loop.js';
import { remoteWeightVersion } from '../gateway/remote.js';
import '../gateway/trainer-step.js'; // registers the agent step Trainer({ agent }) runs

const usage = `Usage: vqalab train-agent --agent "CMD" [options]

Trains the model behind a training gateway on what an agent did with it (GRPO, Agent Lightning's
runner contract). The agent command runs once per attempt (G attempts per task) with
AGL_OPENAI_BASE_URL, AGL_EVENT_URL, AGL_KEY, QUESTION, ANSWER, IMAGE_PATH, ID and TASK_JSON in its
environment; every chat completion it makes is recorded token-exactly, and the reward it posts
to AGL_EVENT_URL is what GRPO learns from. Multi-turn attempts are one trajectory each, the tokens
the model did not sample masked out. See docs/agents.md.

Agent:
  --agent CMD          the agent's command line (run by /bin/sh -c), required
  --env K=V            an extra variable for the agent (repeatable)
  --concurrency N      agents running at once (default 8)
  --timeout-ms N       per attempt; the agent is then stopped and the attempt failed (default 120000)

Remote rollouts (on-policy; the agents still run here):
  --gateway URL        open the attempts on this \`vqalab serve --gateway-key-env VAR\` instead of a
                       gateway over the model in this process; after each update the weights are
                       pushed there, so the next step samples with them
  --gateway-key-env V  the variable holding that server's admin key (required with --gateway)
  --push KIND          what a push sends: lora (default for a LoRA model: the adapters) or full

Data and model:
  --data FILE          a Parquet dataset (id, image_path, question, answer); default: synthetic
                       shapes written to OUT/synth (--synth-images, 1 shape, colour and shape questions)
  --synth-images N     synthetic images (2 questions each; default 200)
  --model DIR          a Qwen2-VL folder (default: the embedded tiny model)
  --device D           cpu (default), cuda or cuda:N
  --threads N          engine CPU threads
  --sft-steps N        supervised warm start on the answers first (default 0; the tiny model needs ~25)

GRPO:
  --steps N            GRPO steps (default 20)
  --prompts N          tasks per step (default 4)
  --group G            attempts per task (default 4)
  --lr X               learning rate (default 5e-4)
  --seed N             seed of the data order and of the calls' sampling (default 0)
  --eval-attempts N    before and after training, run every task N times with the same seeds
                       (the calls' seeds come from the attempt ids) and report the mean reward of
                       each (evalBefore, evalAfter): a paired comparison, only the weights differ

Output:
  --out DIR            metrics.jsonl and the final model (default out/train-agent)
  --quiet              no per-step lines
  -h, --help           show this help

Ends with one JSON line: {"steps", "rewardFirst", "rewardLast", "failedAttempts", "seconds"} (and
"evalBefore", "evalAfter" with --eval-attempts).
`;

function int(name: string, v: string | undefined, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}; got "${v}"`);
  return n;
}

async function synthSet(dir: string, images: number, seed: number): Promise<VqaSample[]> {
  mkdirSync(dir, { recursive: true });
  const out: VqaSample[] = [];
  let current = '';
  for await (const { sample, png } of synthSamples({
    images,
    questionsPerImage: 2,
    seed,
    difficulty: 'easy',
    shapeCount: [1, 1],
    shapeSize: [0.16, 0.22],
    families: ['color', 'shape'],
  })) {
    if (png) {
      current = path.resolve(dir, `${sample.id.replace(/[^A-Za-z0-9._-]/g, '_')}.png`);
      writeFileSync(current, png);
    }
    out.push({ ...sample, imagePath: current });
  }
  return out;
}

export async function runTrainAgent(
  argv: string[],
  io: { out: (l: string) => void; err: (l: string) => void } = {
    out: (l) => process.stdout.write(`${l}\n`),
    err: (l) => process.stderr.write(`${l}\n`),
  },
): Promise<number> {
  let v: Record<string, string | string[] | boolean | undefined>;
  try {
    v = parseArgs({
      args: argv,
      options: {
        agent: { type: 'string' },
        env: { type: 'string', multiple: true },
        concurrency: { type: 'string' },
        'timeout-ms': { type: 'string' },
        data: { type: 'string' },
        'synth-images': { type: 'string' },
        model: { type: 'string' },
        device: { type: 'string' },
        threads: { type: 'string' },
        'sft-steps': { type: 'string' },
        steps: { type: 'string' },
        prompts: { type: 'string' },
        group: { type: 'string' },
        lr: { type: 'string' },
        seed: { type: 'string' },
        out: { type: 'string' },
        quiet: { type: 'boolean' },
        gateway: { type: 'string' },
        'gateway-key-env': { type: 'string' },
        push: { type: 'string' },
        'eval-attempts': { type: 'string' },
      },
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; run "vqalab train-agent --help"`);
  }
  const command = v.agent as string | undefined;
  if (!command || !command.trim())
    throw new UsageError('--agent "CMD" is required: the command that runs the agent once per attempt');
  const env: Record<string, string> = {};
  for (const kv of (v.env as string[] | undefined) ?? []) {
    const at = kv.indexOf('=');
    if (at <= 0) throw new UsageError(`--env must be KEY=VALUE; got "${kv}"`);
    env[kv.slice(0, at)] = kv.slice(at + 1);
  }
  const lr = v.lr === undefined ? 5e-4 : Number(v.lr);
  if (!Number.isFinite(lr) || lr <= 0) throw new UsageError(`--lr must be a positive number; got "${String(v.lr)}"`);
  const device = (v.device as string | undefined) ?? 'cpu';
  if (!/^(cpu|cuda(:\d+)?)$/.test(device))
    throw new UsageError(`--device must be cpu, cuda or cuda:N; got "${device}"`);
  const seed = int('seed', v.seed as string | undefined, 0);
  const remote = remoteOption(v);
  const evalAttempts = int('eval-attempts', v['eval-attempts'] as string | undefined, 0);
  if (remote && evalAttempts > 0) throw new UsageError('--eval-attempts is not available with --gateway yet');
  // A server that is down or refuses the key: said now, before the data and the model load.
  if (remote) await remoteWeightVersion(remote);
  const out = path.resolve((v.out as string | undefined) ?? path.join('out', 'train-agent'));
  mkdirSync(out, { recursive: true });
  const quiet = v.quiet === true;
  const t0 = performance.now();

  const train = v.data
    ? [...(await VqaDataset.fromParquet(v.data as string))]
    : await synthSet(
        path.join(out, 'synth'),
        int('synth-images', v['synth-images'] as string | undefined, 200, 1),
        seed + 1,
      );
  const dir = resolveModelFolder((v.model as string | undefined) ?? DEFAULT_MODEL_DIR);
  const threads = v.threads === undefined ? undefined : int('threads', v.threads as string, 1, 1);
  const model = await loadModel(dir.modelDir, {
    device: device as Device,
    ...(threads ? { threads } : {}),
    ...(dir.lora ? { lora: dir.lora, adapter: dir.adapterDir } : {}),
  });
  try {
    const tokenizer = VlmTokenizer.load(dir.tokenizerDir);
    const sftSteps = int('sft-steps', v['sft-steps'] as string | undefined, 0);
    if (sftSteps > 0) {
      const proc = new Qwen2VLImageProcessor(processorOptionsFrom(dir.tokenizerDir));
      const trainer = new Trainer({
        model,
        tokenizer,
        train,
        rewards: [vqaAccuracy()],
        recordFacts: false,
        loadImages: async (s) =>
          Promise.all(
            (s.imagePaths ?? [s.imagePath]).map(async (p) => {
              const r = await proc.process(p);
              return { pixels: r.pixels, gridThw: r.gridThw };
            }),
          ),
      });
      const m = await trainer.sft({
        steps: sftSteps,
        batchSize: 16,
        learningRate: 2e-3,
        warmupSteps: Math.min(5, sftSteps),
      });
      if (!quiet)
        io.err(
          `SFT warm start: ${m.length} steps, cross-entropy ${m[0]?.loss.toFixed(3)} → ${m.at(-1)?.loss.toFixed(3)}`,
        );
    }
    const agent = {
      command,
      env,
      concurrency: int('concurrency', v.concurrency as string | undefined, 8, 1),
      timeoutMs: int('timeout-ms', v['timeout-ms'] as string | undefined, 120_000, 1),
    };
    const config = {
      promptsPerStep: int('prompts', v.prompts as string | undefined, 4, 1),
      numGenerations: int('group', v.group as string | undefined, 4, 2),
      learningRate: lr,
      epsilonHigh: 0.28,
      seed,
    };
    const metricsFile = path.join(out, 'metrics.jsonl');
    writeFileSync(metricsFile, '');
    const nSteps = int('steps', v.steps as string | undefined, 20, 1);
    let steps: { rewardMean: number; failedAttempts: number; attempts: number }[];
    const evaluation: { before?: number; after?: number } = {};
    if (remote) {
      steps = await runRemote({ model, tokenizer, train, agent: { ...agent, gateway: remote }, config }, nSteps, {
        metricsFile,
        log: quiet ? undefined : io.err,
      });
    } else {
      const training = await AgentTraining.start({
        model,
        tokenizer,
        train,
        agent,
        config,
        log: quiet ? undefined : io.err,
      });
      try {
        if (evalAttempts > 0) evaluation.before = await evalReward(training, train, evalAttempts);
        steps = await training.run(nSteps, (o) => {
          const m = o.metrics;
          appendFileSync(metricsFile, `${JSON.stringify({ ...m, update: { ...m.update } })}\n`);
          if (!quiet) {
            io.err(
              `step ${m.step}: reward ${m.rewardMean.toFixed(3)}, ${m.attempts - m.failedAttempts}/${m.attempts} attempts succeeded, ${m.turnsMean.toFixed(2)} turns, ` +
                `${m.update.policyTokens} policy / ${m.update.maskedTokens} masked tokens, loss ${m.update.loss.toFixed(4)} (${(m.rolloutSeconds + m.trainSeconds).toFixed(1)}s)`,
            );
          }
        });
        if (evalAttempts > 0) evaluation.after = await evalReward(training, train, evalAttempts);
      } finally {
        await training.close();
      }
    }
    await model.save(path.join(out, 'model'));
    const k = Math.max(1, Math.floor(steps.length / 4));
    const avg = (xs: number[]) => xs.filter(Number.isFinite).reduce((s, x, _i, a) => s + x / a.length, 0);
    const result = {
      steps: steps.length,
      rewardFirst: avg(steps.slice(0, k).map((m) => m.rewardMean)),
      rewardLast: avg(steps.slice(-k).map((m) => m.rewardMean)),
      failedAttempts: steps.reduce((s, m) => s + m.failedAttempts, 0),
      ...(evaluation.before !== undefined ? { evalBefore: evaluation.before, evalAfter: evaluation.after } : {}),
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    };
    io.out(JSON.stringify(result));
    return steps.every((m) => m.failedAttempts === m.attempts) ? 1 : 0;
  } finally {
    model.dispose();
  }
}

/**
 * Mean reward of every task run `n` times on the training gateway. The rollout ids are the same
 * each time, so are the calls' seeds: two evaluations differ by the weights only.
 */
async function evalReward(training: AgentTraining, tasks: readonly VqaSample[], n: number): Promise<number> {
  const groups = await rolloutAgentGroups(training.gateway, tasks, n, training.agent, { rolloutPrefix: 'eval' });
  for (const g of groups) training.gateway.release(g.rolloutId);
  const r = groups
    .flatMap((g) => g.attempts)
    .filter((a) => a.status === 'succeeded')
    .map((a) => a.reward!);
  return r.length ? r.reduce((a, b) => a + b, 0) / r.length : NaN;
}

/** --gateway URL with --gateway-key-env VAR (and --push): the remote gateway, the key read from VAR. */
function remoteOption(v: Record<string, unknown>): RemoteAgentGateway | undefined {
  const url = v.gateway as string | undefined,
    env = v['gateway-key-env'] as string | undefined,
    push = v.push as string | undefined;
  if (url === undefined) {
    if (env !== undefined) throw new UsageError('--gateway-key-env is for remote rollouts: give --gateway URL too');
    if (push !== undefined) throw new UsageError('--push is for remote rollouts: give --gateway URL too');
    return undefined;
  }
  if (!/^https?:\/\/[^/\s]+/.test(url))
    throw new UsageError(
      `--gateway must be the http(s) URL of a \`vqalab serve --gateway-key-env\` server; got "${url}"`,
    );
  if (env === undefined)
    throw new UsageError(
      "--gateway needs --gateway-key-env VAR: the environment variable that holds the server's admin key",
    );
  const adminKey = process.env[env];
  if (!adminKey) throw new UsageError(`--gateway-key-env ${env}: that environment variable is empty or not set`);
  if (push !== undefined && push !== 'lora' && push !== 'full')
    throw new UsageError(`--push must be lora or full; got "${push}"`);
  return { url, adminKey, ...(push ? { weights: push as 'lora' | 'full' } : {}) };
}

/** Remote rollouts: Trainer({ agent: { gateway } }) runs the steps (src/gateway/remote-step.ts). */
async function runRemote(
  o: Pick<TrainerOptions, 'model' | 'tokenizer' | 'train' | 'agent' | 'config'>,
  steps: number,
  io: { metricsFile: string; log?: (line: string) => void },
): Promise<{ rewardMean: number; failedAttempts: number; attempts: number }[]> {
  const trainer = new Trainer({
    ...o,
    rewards: [],
    recordFacts: false,
    loadImages: async () => {
      throw new Error('not used: the agents read their images');
    },
    log: io.log ?? (() => {}),
  });
  const all: { rewardMean: number; failedAttempts: number; attempts: number }[] = [];
  await trainer.run({
    steps,
    dashboard: false,
    onStep: (out) => {
      const m = out.metrics,
        a = m.extra!.agent as Record<string, number>;
      appendFileSync(io.metricsFile, `${JSON.stringify(m)}\n`);
      all.push({ rewardMean: m.rewardMean, failedAttempts: a.failedAttempts!, attempts: a.attempts! });
      io.log?.(
        `step ${m.step}: reward ${m.rewardMean.toFixed(3)}, ${a.attempts! - a.failedAttempts!}/${a.attempts} attempts succeeded, ${a.turnsMean!.toFixed(2)} turns, ` +
          `${a.policyTokens} policy / ${a.maskedTokens} masked tokens, loss ${m.loss.toFixed(4)}, sampled by weight version ${a.weightVersion}` +
          `${a.pushedVersion === null ? '' : `, pushed ${a.pushedVersion}`} (${m.stepSeconds.toFixed(1)}s)`,
      );
    },
  });
  return all;
}

export const trainAgentCommand: Command = {
  name: 'train-agent',
  summary: 'GRPO of the served model on what an agent command does with it (Agent Lightning contract)',
  usage,
  run: (argv) => runTrainAgent(argv),
};
