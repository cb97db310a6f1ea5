/** `vqalab serve`: an OpenAI-compatible chat-completions server over the native engine. */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MODEL_DIR } from '../model/default.js';
import { LocalPolicy } from '../rollout/local.js';
import { loadOnnxLocalPolicy } from '../rollout/onnx-engine.js';
import { serve } from '../serve/server.js';
import { Gateway } from '../gateway/gateway.js';
import { type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const usage = `Usage: vqalab serve [--model DIR] [options]

An OpenAI-compatible HTTP server over the native engine: GET /v1/models, POST /v1/chat/completions
(text and image_url parts, n, temperature, top_p, top_k, max_tokens, stop, seed, logprobs,
top_logprobs, stream), GET /health. Any OpenAI client (the openai package, vLLM's and SGLang's
clients, vqalab's OpenAIPolicy) talks to it. Concurrent requests are decoded together (continuous
batching: a request joins the running decode loop at its next step); streams send each token as it
is produced. Requests wait for room fairly (round robin between clients).

Model:
  --model DIR              a Hugging Face Qwen2-VL folder, a vqalab trainer checkpoint (trainer.json +
                           model/), a run folder (checkpoints/latest) or a PEFT adapter folder
                           (default: the embedded tiny model)
  --backend engine|onnx    what runs the model: the native engine (default), or onnxruntime-node over
                           a folder written by \`vqalab export onnx\` (--model is then that folder;
                           requests run one at a time, each using every --threads)
  --name NAME              the model name clients send (default "vqalab")
  --threads N              engine CPU threads (default: VQALAB_THREADS or all cores)
  --max-sequence-length N  longest prompt + completion (default: the model's)

Network:
  --host HOST              interface to bind (default 127.0.0.1, loopback only; 0.0.0.0 exposes it)
  --port PORT              port (default 8000; 0 picks a free one)
  --api-key KEY            require "Authorization: Bearer KEY"
  --api-key-env VAR        read the key from environment variable VAR instead

Limits:
  --allowed-media-root DIR read file:// and absolute image paths under DIR (default: refused)
  --max-body-mb N          largest request body (default 32)
  --max-image-mb N         largest encoded image (default 16)
  --max-image-pixels N     most pixels per image (default 16777216 = 4096x4096)
  --max-images N           images per request (default 8)
  --max-n N                choices per request (default 64)
  --max-prompt-chars N     characters of message text per request, checked before tokenising
                           (default: context length x longest token, i.e. only prompts that cannot fit)
  --max-stops N            stop strings per request (default 16)
  --max-stop-chars N       characters per stop string (default 1024)
  --workers N              worker threads that parse, tokenise and decode large requests off the
                           event loop (default 1; 0 = none)
  --max-queue N            requests waiting for the engine before 503 (default 256)
  --default-max-tokens N   max_tokens when a request gives none (default 512, at most the context left)

Batching:
  --max-batch-rows N       most rows (the sum of n) decoding together; further requests wait (default 64)
  --no-batching            queue-only mode: one request on the engine at a time (for comparison)

Training gateway and weight push (docs/agents.md):
  --gateway-key-env VAR    mount per-attempt URLs /rollouts/{r}/attempts/{a}/v1 and /events; a runner
                           opens attempts with "Authorization: Bearer $VAR" (POST /rollouts/{r}/attempts/{a});
                           the same key pushes weights (below)
  --admin-key-env VAR      PUT /admin/weights with "Authorization: Bearer $VAR": a trainer pushes its
                           weights (LoRA adapters or all, safetensors) and the server switches to them
                           between requests; every reply names its weight_version
  --max-weight-mb N        largest weight push (default 16384)

Output:
  --quiet                  no access log (default: one line per request on stderr)
  -h, --help               show this help

It prints "listening on URL" on stdout once ready, and stops cleanly on Ctrl-C / SIGTERM.
`;

function positiveNumber(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number; got "${v}"`);
  return n;
}

function integer(name: string, v: string | undefined, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}; got "${v}"`);
  return n;
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'OpenAI-compatible chat-completions server over the native engine',
  usage,
  async run(argv) {
    const parse = () =>
      parseArgs({
        args: argv,
        options: {
          model: { type: 'string' },
          backend: { type: 'string', default: 'engine' },
          name: { type: 'string' },
          threads: { type: 'string' },
          'max-sequence-length': { type: 'string' },
          host: { type: 'string', default: '127.0.0.1' },
          port: { type: 'string', default: '8000' },
          'api-key': { type: 'string' },
          'api-key-env': { type: 'string' },
          'allowed-media-root': { type: 'string' },
          'max-body-mb': { type: 'string' },
          'max-image-mb': { type: 'string' },
          'max-image-pixels': { type: 'string' },
          'max-images': { type: 'string' },
          'max-n': { type: 'string' },
          'max-queue': { type: 'string' },
          'max-prompt-chars': { type: 'string' },
          'max-stops': { type: 'string' },
          'max-stop-chars': { type: 'string' },
          workers: { type: 'string' },
          'default-max-tokens': { type: 'string' },
          quiet: { type: 'boolean', default: false },
          'max-batch-rows': { type: 'string' },
          'no-batching': { type: 'boolean', default: false },
          'gateway-key-env': { type: 'string' },
          'admin-key-env': { type: 'string' },
          'max-weight-mb': { type: 'string' },
        },
        strict: true,
        allowPositionals: false,
      });
    let values: ReturnType<typeof parse>['values'];
    try {
      values = parse().values;
    } catch (err) {
      throw new UsageError(`${(err as Error).message}\n\n${usage}`);
    }
    const port = integer('port', values.port, 0)!;
    if (port > 65535) throw new UsageError(`--port must be at most 65535; got ${port}`);
    let apiKey = values['api-key'];
    if (values['api-key-env'] !== undefined) {
      if (apiKey !== undefined) throw new UsageError('give --api-key or --api-key-env, not both');
      apiKey = process.env[values['api-key-env']];
      if (!apiKey)
        throw new UsageError(`--api-key-env ${values['api-key-env']}: that environment variable is empty or not set`);
    }
    const root = values['allowed-media-root'];
    if (root !== undefined && !(existsSync(root) && statSync(root).isDirectory()))
      throw new UsageError(`--allowed-media-root ${root}: not a folder`);
    const dir = values.model ?? DEFAULT_MODEL_DIR;
    const loopback = ['127.0.0.1', '::1', 'localhost'].includes(values.host!);
    if (!loopback && apiKey === undefined)
      process.stderr.write(`vqalab serve: warning: --host ${values.host} exposes the server without --api-key\n`);
    const backend = values.backend!;
    if (backend !== 'engine' && backend !== 'onnx')
      throw new UsageError(`--backend must be engine or onnx; got "${backend}"`);
    if (backend === 'onnx' && values.model === undefined)
      throw new UsageError('--backend onnx needs --model DIR: a folder written by `vqalab export onnx`');
    let policy: LocalPolicy;
    try {
      const threads = integer('threads', values.threads),
        maxSequenceLength = integer('max-sequence-length', values['max-sequence-length']);
      policy =
        backend === 'onnx'
          ? await loadOnnxLocalPolicy(dir, {
              ...(threads ? { threads } : {}),
              ...(maxSequenceLength ? { maxSequenceLength } : {}),
              name: `onnx:${values.model}`,
            })
          : await LocalPolicy.load(dir, { threads, maxSequenceLength, name: `local:${values.model ?? 'default'}` });
    } catch (err) {
      throw new UsageError(`cannot load --model ${dir}: ${(err as Error).message}`, 1);
    }
    // The training gateway (docs/agents.md): per-attempt URLs, opened by a runner with the admin key.
    const gatewayKey = values['gateway-key-env'] === undefined ? undefined : process.env[values['gateway-key-env']];
    if (values['gateway-key-env'] !== undefined && !gatewayKey)
      throw new UsageError(
        `--gateway-key-env ${values['gateway-key-env']}: that environment variable is empty or not set`,
      );
    const gateway = gatewayKey ? new Gateway({ adminKey: gatewayKey }) : undefined;
    const adminEnv = values['admin-key-env'];
    const adminKey = adminEnv === undefined ? gatewayKey : process.env[adminEnv];
    if (adminEnv !== undefined && !adminKey)
      throw new UsageError(`--admin-key-env ${adminEnv}: that environment variable is empty or not set`);
    if (adminEnv !== undefined && gatewayKey !== undefined && adminKey !== gatewayKey)
      throw new UsageError(
        "--admin-key-env and --gateway-key-env name different keys; the gateway's admin key also pushes weights: give one of them",
      );
    const maxWeightMb = positiveNumber('max-weight-mb', values['max-weight-mb']);
    const mb = (name: 'max-body-mb' | 'max-image-mb') => {
      const v = positiveNumber(name, values[name]);
      return v === undefined ? undefined : Math.floor(v * 1024 * 1024);
    };
    const handle = await serve({
      policy,
      modelName: values.name ?? 'vqalab',
      host: values.host,
      port,
      apiKey,
      allowedMediaRoot: root ? path.resolve(root) : undefined,
      maxBodyBytes: mb('max-body-mb'),
      maxImageBytes: mb('max-image-mb'),
      maxImagePixels: integer('max-image-pixels', values['max-image-pixels']),
      maxImages: integer('max-images', values['max-images']),
      maxN: integer('max-n', values['max-n']),
      maxQueue: integer('max-queue', values['max-queue']),
      defaultMaxTokens: integer('default-max-tokens', values['default-max-tokens']),
      maxPromptChars: integer('max-prompt-chars', values['max-prompt-chars']),
      maxStops: integer('max-stops', values['max-stops']),
      maxStopChars: integer('max-stop-chars', values['max-stop-chars']),
      workers: integer('workers', values.workers, 0),
      batching: !values['no-batching'],
      maxBatchRows: integer('max-batch-rows', values['max-batch-rows']),
      log: values.quiet ? undefined : (line) => process.stderr.write(`vqalab serve: ${line}\n`),
      disposeOnClose: true,
      ...(gateway ? { routes: gateway.routes } : {}),
      ...(adminKey ? { adminKey } : {}),
      ...(maxWeightMb !== undefined ? { maxWeightBytes: Math.floor(maxWeightMb * 1024 * 1024) } : {}),
    }).catch((err: NodeJS.ErrnoException) => {
      policy.dispose();
      throw new UsageError(`cannot listen on ${values.host}:${port}: ${err.code ?? err.message}`, 1);
    });
    process.stdout.write(
      `vqalab serve: model "${handle.modelName}" (${values.model ?? 'embedded tiny model'}, context ${policy.maxSequenceLength} tokens)\n`,
    );
    process.stdout.write(
      `vqalab serve: ${
        backend === 'onnx'
          ? 'onnxruntime-node backend (one request at a time)'
          : values['no-batching']
            ? 'queue-only mode (one request on the engine at a time)'
            : `continuous batching (at most ${integer('max-batch-rows', values['max-batch-rows']) ?? 64} rows decoding together)`
      }\n`,
    );
    gateway?.attach(handle, policy);
    if (adminKey)
      process.stdout.write(
        `vqalab serve: weight push on ${handle.url.replace(/\/v1$/, '')}/admin/weights (weight version ${handle.weights.version})\n`,
      );
    if (gateway)
      process.stdout.write(
        `vqalab serve: training gateway on ${handle.url.replace(/\/v1$/, '')}/rollouts/{rollout}/attempts/{attempt}/ (docs/agents.md)\n`,
      );
    process.stdout.write(`listening on ${handle.url}\n`);
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        process.stderr.write(`vqalab serve: ${sig}: finishing running requests, then stopping\n`);
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        handle.close().then(resolve, resolve);
      };
      const onInt = () => stop('SIGINT');
      const onTerm = () => stop('SIGTERM');
      process.on('SIGINT', onInt);
      process.on('SIGTERM', onTerm);
    });
    return 0;
  },
};
