/** `vqalab eval-policy`: several policies on the same questions, side by side (official VQA metric, latency, tokens, cost). */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { comparisonBundles, comparisonText } from '../display/comparison.js';
import { comparisonToJson, evaluatePolicies, type PriceTable } from '../rollout/compare.js';
import { LocalPolicy } from '../rollout/local.js';
import { readSamplesFile } from '../rollout/samples.js';
import { policyFromSpec } from '../rollout/spec.js';
import type { Policy } from '../rollout/types.js';
import { writeFileAtomic } from '../util/fs.js';
import { interruptible } from '../util/interrupt.js';
import { Progress } from '../util/progress.js';
import { type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const usage = `Usage: vqalab eval-policy --dataset FILE --policy SPEC [--policy SPEC ...] [options]

Evaluates each policy on the same questions with the official VQA metric (overall and per answer
type) and reports latency p50/p99, tokens and cost side by side.

Policies:
  --policy local:DIR              the native engine on a checkpoint folder (local:default = embedded tiny model)
  --policy openai:MODEL@BASE_URL  any OpenAI-compatible server (vLLM, SGLang, OpenAI, vqalab serve)
  --policy openai:MODEL           the same, with --base-url or $OPENAI_BASE_URL
  --policy onnx:DIR               an ONNX export (vqalab export onnx) on onnxruntime-node (CPU)
  --api-key KEY                   API key for openai policies (default $OPENAI_API_KEY, else none)
  --api-key-env VAR               read the API key from environment variable VAR
  --base-url URL                  base URL for openai:MODEL policies without one

Data:
  --dataset FILE                  a Parquet dataset (vqalab data), or JSON (array) / JSON Lines rows
                                  id, image_path, question, answer, and optionally answers (the 10
                                  annotator answers), answer_type, question_type
  --limit N                       the first N samples only

Generation:
  --n-runners K                   questions in flight at once per policy (default 4; 32 when every policy
                                  is local: the engine decodes concurrent questions as one batch)
  --max-tokens N                  default 32
  --temperature T                 default 0 (greedy)
  --seed S                        default 0
  --timeout-ms MS                 per request attempt, openai policies (default 60000)
  --max-retries N                 retries of failed requests (default 3)
  --requests-per-second R         rate limit per openai policy (default none)
  --threads N                     engine threads of local policies

Cost:
  --price NAME=IN,OUT             USD per million input/output tokens for a policy or model name
                                  (repeatable), e.g. --price gpt-4o-mini=0.15,0.6
  --prices FILE                   JSON {"NAME": {"input": IN, "output": OUT}, ...}

Output:
  --json                          print the comparison as JSON (per-question rows included)
  --output FILE                   also write the JSON to FILE (atomically)
  --html FILE                     write a self-contained HTML page with the table, plot and per-question table
  --quiet                         no progress lines
  -h, --help                      show this help
`;

function num(name: string, v: string | undefined, min: number, integer: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n)))
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}; got "${v}"`);
  return n;
}

/** Parse --price NAME=IN,OUT entries and a --prices file into one table. */
export function parsePrices(entries: readonly string[], file?: string): PriceTable {
  const table: PriceTable = {};
  if (file !== undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new UsageError(`--prices ${file}: ${(err as Error).message}`);
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
      throw new UsageError(`--prices ${file}: expected {"NAME": {"input": IN, "output": OUT}, ...}`);
    for (const [name, p] of Object.entries(raw)) {
      const { input, output } = (p ?? {}) as { input?: unknown; output?: unknown };
      if (typeof input !== 'number' || typeof output !== 'number' || input < 0 || output < 0)
        throw new UsageError(
          `--prices ${file}: "${name}" needs non-negative numbers input and output (USD per million tokens)`,
        );
      table[name] = { input, output };
    }
  }
  for (const e of entries) {
    const m = /^(.+)=([0-9.eE+-]+),([0-9.eE+-]+)$/.exec(e);
    const input = m ? Number(m[2]) : NaN,
      output = m ? Number(m[3]) : NaN;
    if (!m || !(input >= 0) || !(output >= 0))
      throw new UsageError(`--price must be NAME=IN,OUT (USD per million input and output tokens); got "${e}"`);
    table[m[1]!] = { input, output };
  }
  return table;
}

function htmlPage(title: string, parts: string[]): string {
  const esc = (s: string) =>
    s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>` +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">` +
    `</head><body style="font-family:system-ui,sans-serif;margin:1.5em">${parts.join('\n')}</body></html>\n`
  );
}

export const evalPolicyCommand: Command = {
  name: 'eval-policy',
  summary: 'compare policies (local checkpoints, OpenAI-compatible servers) on the same VQA questions',
  usage,
  async run(argv) {
    const parse = () =>
      parseArgs({
        args: argv,
        options: {
          dataset: { type: 'string' },
          policy: { type: 'string', multiple: true, default: [] },
          limit: { type: 'string' },
          'n-runners': { type: 'string' },
          'max-tokens': { type: 'string' },
          temperature: { type: 'string' },
          seed: { type: 'string' },
          'api-key': { type: 'string' },
          'api-key-env': { type: 'string' },
          'base-url': { type: 'string' },
          'timeout-ms': { type: 'string' },
          'max-retries': { type: 'string' },
          'requests-per-second': { type: 'string' },
          threads: { type: 'string' },
          price: { type: 'string', multiple: true, default: [] },
          prices: { type: 'string' },
          json: { type: 'boolean', default: false },
          output: { type: 'string' },
          html: { type: 'string' },
          quiet: { type: 'boolean', default: false },
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
    if (!values.dataset) throw new UsageError('missing --dataset FILE (run "vqalab eval-policy --help")');
    const specs = values.policy ?? [];
    if (specs.length === 0) throw new UsageError('give at least one --policy (local:DIR or openai:MODEL@BASE_URL)');
    if (values['api-key'] !== undefined && values['api-key-env'] !== undefined)
      throw new UsageError('give --api-key or --api-key-env, not both');
    const explicitRunners = num('n-runners', values['n-runners'], 1, true);
    let nRunners = explicitRunners ?? 4;
    const prices = parsePrices(values.price ?? [], values.prices);
    let samples: Awaited<ReturnType<typeof readSamplesFile>>;
    try {
      samples = await readSamplesFile(values.dataset);
    } catch (err) {
      throw new UsageError((err as Error).message, 1);
    }
    const policies: Policy[] = [];
    try {
      for (const spec of specs) {
        try {
          policies.push(
            await policyFromSpec(spec, {
              apiKey: values['api-key'],
              apiKeyEnv: values['api-key-env'],
              baseURL: values['base-url'],
              threads: num('threads', values.threads, 1, true),
              concurrency: nRunners,
              timeoutMs: num('timeout-ms', values['timeout-ms'], 1, false),
              maxRetries: num('max-retries', values['max-retries'], 0, true),
              requestsPerSecond: num('requests-per-second', values['requests-per-second'], Number.MIN_VALUE, false),
            }),
          );
        } catch (err) {
          if (err instanceof UsageError) throw err;
          throw new UsageError(`--policy ${spec}: ${(err as Error).message}`, 1);
        }
      }
      // Local engines batch concurrent requests in one decode loop: more in flight is faster, not heavier.
      if (explicitRunners === undefined && policies.every((p) => p instanceof LocalPolicy)) nRunners = 32;
      const total = Math.min(samples.length, num('limit', values.limit, 1, true) ?? samples.length);
      const bars = new Map<string, Progress>();
      const comparison = await interruptible((signal) =>
        evaluatePolicies(policies, samples, {
          limit: total,
          nRunners,
          maxTokens: num('max-tokens', values['max-tokens'], 1, true),
          temperature: num('temperature', values.temperature, 0, false),
          seed: num('seed', values.seed, 0, true),
          prices,
          dataset: path.basename(values.dataset!),
          signal,
          onProgress: (name, done, n) => {
            if (values.quiet) return;
            let bar = bars.get(name);
            if (!bar) bars.set(name, (bar = new Progress({ label: name, total: n, unit: 'questions' })));
            bar.tick();
            if (done === n) bar.done();
          },
        }),
      );
      const json = comparisonToJson(comparison);
      if (values.output) await writeFileAtomic(values.output, JSON.stringify(json, null, 2) + '\n');
      if (values.html) {
        const b = comparisonBundles(comparison);
        await writeFileAtomic(
          values.html,
          htmlPage(
            `vqalab eval-policy: ${comparison.dataset}`,
            [b.table, b.plot, b.questions].map((x) => x['text/html'] as string),
          ),
        );
      }
      process.stdout.write(values.json ? JSON.stringify(json, null, 2) + '\n' : comparisonText(comparison));
      return comparison.policies.every((p) => p.errors < p.questions) ? 0 : 1;
    } finally {
      for (const p of policies) if (p instanceof LocalPolicy) p.dispose();
    }
  },
};
