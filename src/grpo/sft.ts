/**
 * One supervised (SFT warm start) update as a free function: cross-entropy on each sample's
 * reference answer (then <|im_end|>), with the trainer's prompts and engine. A sample whose prompt
 * cannot be built (unreadable image) or does not fit the context is skipped and named.
 */
import type { EngineModel, ForwardRequest } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import type { GrpoConfig } from './config.js';
import type { DataCursor } from './cursor.js';
import { sftLoss } from './loss.js';
import type { SftOptions } from './options.js';
import { learningRateAt } from './schedule.js';
import { emptyMetrics } from './update.js';
import { meanStd, residentMiB, type StepMetrics } from './metrics.js';
import { checkPromptLength, SampleError, type PromptBuilder, type SkippedSample } from './rollout.js';

export interface SftInputs {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  config: Readonly<GrpoConfig>;
  prompts: PromptBuilder;
  log: (line: string) => void;
}

export async function sftUpdate(
  inp: SftInputs,
  samples: readonly VqaSample[],
  lr: number,
  sftStep: number,
): Promise<StepMetrics> {
  const { model, config: c } = inp;
  const t0 = performance.now();
  const requests: ForwardRequest[] = [];
  const skipped: SkippedSample[] = [];
  for (const sample of samples) {
    try {
      const { prompt } = await inp.prompts.promptFor(sample);
      const answer = inp.tokenizer.answerIds(sample.answer);
      checkPromptLength(sample, prompt, answer.length, model.maxSequenceLength, 'its answer length');
      requests.push({ prompt, completions: [answer], keepForBackward: true });
    } catch (err) {
      if (!(err instanceof SampleError)) throw err;
      skipped.push({ sampleId: err.sampleId, kind: err.kind, message: err.message });
      inp.log(`sft step ${sftStep}: skipped ${err.message}`);
    }
  }
  const m = emptyMetrics(sftStep, 'sft');
  m.badSamples = skipped.length;
  if (skipped.length) m.extra = { skipped };
  if (requests.length === 0) {
    m.skippedUpdates = 1;
    m.stepSeconds = m.trainSeconds = (performance.now() - t0) / 1000;
    return m;
  }
  const fwd = await model.forward(requests);
  model.zeroGrad();
  const loss = sftLoss(fwd.flatMap((r) => r.logprobs));
  if (Number.isFinite(loss.loss)) {
    let k = 0;
    await model.backward(fwd.map((r) => r.logprobs.map(() => loss.gradLogprobs[k++]!)));
    const st = await model.step({
      lr,
      beta1: c.adamBeta1,
      beta2: c.adamBeta2,
      eps: c.adamEpsilon,
      weightDecay: c.weightDecay,
      maxGradNorm: c.maxGradNorm,
    });
    m.gradNorm = st.gradNorm;
    m.skippedUpdates = st.skipped ? 1 : 0;
  } else {
    m.skippedUpdates = 1;
    inp.log(`sft step ${sftStep}: the loss is ${loss.loss}; update skipped`);
  }
  m.loss = loss.loss;
  m.entropy = meanStd(fwd.flatMap((r) => r.entropy.flatMap((e) => Array.from(e)))).mean;
  m.learningRate = lr;
  m.groups = requests.length;
  m.completionLength = loss.tokens / requests.length;
  m.stepSeconds = (performance.now() - t0) / 1000;
  m.trainSeconds = m.stepSeconds;
  m.memoryMiB = residentMiB();
  return m;
}

/**
 * The SFT warm start's updates: `options.steps` batches drawn from `draw.cursor`, a constant learning
 * rate after `warmupSteps` of linear warm-up; stops at an update boundary on abort. `onUpdate` gets
 * each update's metrics (the trainer counts the step and records them there).
 */
export async function sftLoop(
  inputs: SftInputs,
  draw: { train: readonly VqaSample[]; cursor: DataCursor },
  options: SftOptions & { batchSize: number },
  firstStep: number,
  onUpdate: (metrics: StepMetrics) => Promise<void>,
): Promise<void> {
  for (let s = 0; s < options.steps; s++) {
    if (options.signal?.aborted) break;
    const samples = draw.cursor.take(options.batchSize).map((i) => draw.train[i]!);
    const lr = learningRateAt(s, {
      learningRate: options.learningRate,
      warmupSteps: options.warmupSteps ?? 0,
      totalSteps: options.steps,
      schedule: 'constant',
      minLrRatio: 0,
    });
    const m = await sftUpdate(inputs, samples, lr, firstStep + s);
    await onUpdate(m);
  }
}
