/**
 * The trainer's evaluate(): a split (a name of the trainer's evalSets, or samples given directly)
 * answered greedily by evaluateSamples (evaluate.ts), summarised, and turned into the 'eval' row of
 * the metrics log. A sample that cannot be answered scores 0 and is named in the rows and the log.
 */
import type { VqaSample } from '../data/types.js';
import { evaluateSamples, summarize, type EvalSummary, type EvaluateInputs } from './evaluate.js';
import type { StepMetrics } from './metrics.js';
import { AbortError } from './options.js';
import { emptyMetrics } from './update.js';

export async function evaluateSplit(
  inp: Omit<EvaluateInputs, 'signal'> & {
    evalSets: Readonly<Record<string, readonly VqaSample[]>> | undefined;
    /** The GRPO step the metrics row is recorded at. */
    step: number;
    log: (line: string) => void;
  },
  split: string | readonly VqaSample[],
  options: { limit?: number; signal?: AbortSignal; name?: string },
): Promise<{ summary: EvalSummary; metrics: StepMetrics }> {
  let name: string, samples: readonly VqaSample[];
  if (typeof split === 'string') {
    const set = inp.evalSets?.[split];
    if (!set)
      throw new Error(
        `no evaluation split "${split}"; the trainer has ${
          Object.keys(inp.evalSets ?? {})
            .map((s) => `"${s}"`)
            .join(', ') || 'none (pass evalSets)'
        }`,
      );
    name = split;
    samples = set;
  } else {
    // Samples given directly: `options.name` names them in the summary and the metrics log.
    name = options.name ?? 'samples';
    samples = split;
  }
  if (options.limit !== undefined) samples = samples.slice(0, options.limit);
  if (options.signal?.aborted) throw new AbortError();
  const t0 = performance.now();
  let rows;
  try {
    rows = await evaluateSamples({ ...inp, signal: options.signal }, samples);
  } catch (err) {
    if (options.signal?.aborted) throw new AbortError('evaluation aborted');
    throw err;
  }
  for (const r of rows) if (r.error) inp.log(`evaluate ${name}: ${r.error}`);
  const summary = summarize(name, rows, (performance.now() - t0) / 1000);
  const m = emptyMetrics(inp.step, 'eval');
  m.accuracy = summary.overall / 100;
  m.extra = { split: name, overall: summary.overall, perAnswerType: summary.perAnswerType, n: summary.n };
  const failed = rows.filter((r) => r.error).map((r) => r.id);
  if (failed.length) {
    m.badSamples = failed.length;
    m.extra.skipped = failed;
  }
  m.stepSeconds = summary.seconds;
  return { summary, metrics: m };
}
