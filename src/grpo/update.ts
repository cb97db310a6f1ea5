/**
 * The update half of a GRPO step as free functions: advantages of the kept groups, then μ passes
 * of minibatch updates (old log-probs when the ratio can leave 1, reference log-probs when β > 0),
 * and the step's metrics from what the rollout and the updates saw.
 */
import type { EngineModel, ForwardRequest } from '../engine/types.js';
import { needsOldLogprobs, type GrpoConfig } from './config.js';
import { computeAdvantages, klPenalizedRewards } from './advantages.js';
import { grpoLoss, type LossMetrics } from './loss.js';
import { learningRateAt } from './schedule.js';
import type { Rng } from '../util/rng.js';
import { meanStd, residentMiB, type StepMetrics } from './metrics.js';
import type { RolloutCompletion, RolloutGroup } from './rollout.js';
import { isOutOfMemory, splitMinibatch, type MicroBatchSizer, type Piece, type SplitGroup } from './micro.js';

export function validCompletion(c: RolloutCompletion): boolean {
  return c.finishReason !== 'error' && Number.isFinite(c.reward) && c.tokenIds.length > 0;
}

export function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export function forwardRequests(groups: readonly RolloutGroup[], keep: boolean): ForwardRequest[] {
  return groups.map((g) => ({
    prompt: g.prompt,
    completions: g.completions.filter(validCompletion).map((x) => x.tokenIds),
    keepForBackward: keep,
  }));
}

/** Log-probs of each group's valid completions under `model`, in chunks of `miniBatchPrompts`. */
export async function logprobsUnder(
  model: EngineModel,
  groups: readonly RolloutGroup[],
  miniBatchPrompts: number,
): Promise<Float32Array[][]> {
  const out: Float32Array[][] = [];
  for (const chunk of chunks(groups, miniBatchPrompts)) {
    const res = await model.forward(forwardRequests(chunk, false));
    for (const r of res) out.push(r.logprobs);
  }
  return out;
}

export function emptyMetrics(step: number, kind: StepMetrics['kind']): StepMetrics {
  return {
    step,
    kind,
    time: new Date().toISOString(),
    rewardMean: NaN,
    rewardStd: NaN,
    rewardParts: {},
    accuracy: NaN,
    loss: NaN,
    kl: NaN,
    clipFractionLow: NaN,
    clipFractionHigh: NaN,
    clipFractionDual: NaN,
    entropy: NaN,
    gradNorm: NaN,
    learningRate: NaN,
    completionLength: NaN,
    completionLengthMax: NaN,
    truncatedFraction: NaN,
    zeroVarianceFraction: NaN,
    groups: 0,
    samplingRounds: 0,
    rewardFailures: 0,
    skippedUpdates: 0,
    tokensPerSecond: NaN,
    stepSeconds: NaN,
    rolloutSeconds: NaN,
    rewardSeconds: NaN,
    trainSeconds: NaN,
    memoryMiB: residentMiB(),
  };
}

/** What the updates of a step add up to. */
export interface UpdateTotals {
  tokens: number;
  loss: number;
  lossRuns: number;
  updates: number;
  low: number;
  high: number;
  dual: number;
  kl: number;
  klTokens: number;
  ent: number;
  entTokens: number;
  gradNorm: number;
  gradNorms: number;
  skipped: number;
  /** Prompt + completion tokens forwarded in training passes. */
  trainTokens: number;
  lr: number;
}

function addLossMetrics(acc: UpdateTotals, m: LossMetrics, loss: number): void {
  acc.tokens += m.tokens;
  acc.loss += loss;
  acc.lossRuns++;
  acc.low += m.clipFractionLow * m.tokens;
  acc.high += m.clipFractionHigh * m.tokens;
  acc.dual += m.clipFractionDual * m.tokens;
  if (Number.isFinite(m.kl)) {
    acc.kl += m.kl * m.tokens;
    acc.klTokens += m.tokens;
  }
  if (Number.isFinite(m.entropy)) {
    acc.ent += m.entropy * m.tokens;
    acc.entTokens += m.tokens;
  }
}

export interface UpdateInputs {
  model: EngineModel;
  config: Readonly<GrpoConfig>;
  /** Minibatch order (the trainer's seeded RNG). */
  rng: Rng;
  /** Reference log-probs of the groups' valid completions (β > 0). */
  referenceLogprobs: (groups: readonly RolloutGroup[]) => Promise<Float32Array[][]>;
  log: (line: string) => void;
  /** Micro-batch budget of the training passes (kept by the trainer across steps). */
  sizer: MicroBatchSizer;
}

/**
 * Advantages of `kept` (written into each completion), then the step's updates. Groups whose
 * advantages are all 0 are not forwarded when no KL term is in the loss.
 */
export async function grpoUpdate(
  inp: UpdateInputs,
  kept: readonly RolloutGroup[],
  step: number,
): Promise<UpdateTotals> {
  const { model, config: c } = inp;
  let oldLogprobs: Float32Array[][] | undefined;
  let refLogprobs: Float32Array[][] | undefined;
  const validRewards = kept.map((g) => g.completions.filter(validCompletion).map((x) => x.reward));
  let rewardsForAdvantage = validRewards;
  if (c.beta > 0 && c.klPlacement === 'reward') {
    oldLogprobs = await logprobsUnder(model, kept, c.miniBatchPrompts);
    refLogprobs = await inp.referenceLogprobs(kept);
    rewardsForAdvantage = validRewards.map(
      (rs, g) => klPenalizedRewards(rs, oldLogprobs![g]!, refLogprobs![g]!, c.beta, c.klEstimator).rewards,
    );
  }
  const advantages = computeAdvantages(rewardsForAdvantage, {
    estimator: c.advantageEstimator,
    scale: c.scaleRewards,
    epsilon: c.advantageEpsilon,
  });
  kept.forEach((g, gi) => {
    let k = 0;
    for (const comp of g.completions) if (validCompletion(comp)) comp.advantage = advantages[gi]![k++]!;
  });

  const klInLoss = c.beta > 0 && c.klPlacement === 'loss';
  if (!oldLogprobs && needsOldLogprobs(c)) oldLogprobs = await logprobsUnder(model, kept, c.miniBatchPrompts);
  if (klInLoss && !refLogprobs) refLogprobs = await inp.referenceLogprobs(kept);
  const lr = learningRateAt(step, {
    learningRate: c.learningRate,
    warmupSteps: c.warmupSteps,
    totalSteps: c.totalSteps,
    schedule: c.lrSchedule,
    minLrRatio: c.minLrRatio,
  });
  const acc: UpdateTotals = {
    tokens: 0,
    loss: 0,
    lossRuns: 0,
    updates: 0,
    low: 0,
    high: 0,
    dual: 0,
    kl: 0,
    klTokens: 0,
    ent: 0,
    entTokens: 0,
    gradNorm: 0,
    gradNorms: 0,
    skipped: 0,
    trainTokens: 0,
    lr,
  };
  const validOf = (gi: number) => kept[gi]!.completions.filter(validCompletion);
  for (let iter = 0; iter < c.numIterations; iter++) {
    const order = inp.rng.shuffle(kept.map((_, i) => i));
    for (const mb of chunks(order, c.miniBatchPrompts)) {
      const active = mb.filter(
        (gi) => klInLoss || kept[gi]!.completions.some((x) => validCompletion(x) && x.advantage !== 0),
      );
      if (active.length === 0) continue;
      const idleLengths = mb
        .filter((gi) => !active.includes(gi))
        .flatMap((gi) => validOf(gi).map((x) => x.tokenIds.length));
      const shape = active.map((gi) => ({
        promptTokens: kept[gi]!.prompt.ids.length,
        completionTokens: validOf(gi).map((x) => x.tokenIds.length),
      }));
      for (;;) {
        const { budget, switched, unsplittable } = inp.sizer.budgetFor(shape);
        if (switched)
          inp.log(
            `step ${step}: activation checkpointing on: a prompt with one completion (${unsplittable} tokens) did not fit the free memory without it`,
          );
        const pieces = splitMinibatch(shape, budget);
        try {
          await minibatchUpdate(
            inp,
            {
              kept,
              active,
              pieces,
              idleLengths,
              oldLogprobs,
              refLogprobs: klInLoss ? refLogprobs : undefined,
              lr,
              step,
            },
            acc,
          );
          break;
        } catch (err) {
          const largest = Math.max(...pieces.map((p) => piecesTokens(shape, p)));
          if (!isOutOfMemory(err)) throw err;
          model.zeroGrad();
          // A piece of one completion that does not fit cannot be split further: checkpointing is
          // the last resort.
          if (pieces.every((p) => p.length === 1 && p[0]!.to - p[0]!.from === 1)) {
            if (!inp.sizer.checkpoint()) throw err;
            inp.log(
              `step ${step}: out of GPU memory in a micro-batch of one completion (${largest} tokens); the minibatch starts again with activation checkpointing on`,
            );
            continue;
          }
          const ceiling = inp.sizer.outOfMemory(largest);
          inp.log(
            `step ${step}: out of GPU memory in a micro-batch of ${largest} tokens; the minibatch starts again in micro-batches of at most ${ceiling} tokens`,
          );
        }
      }
    }
  }
  return acc;
}

function piecesTokens(shape: readonly SplitGroup[], pieces: readonly Piece[]): number {
  return pieces.reduce(
    (a, p) =>
      a +
      shape[p.group]!.promptTokens +
      shape[p.group]!.completionTokens.slice(p.from, p.to).reduce((x, y) => x + y, 0),
    0,
  );
}

interface Minibatch {
  kept: readonly RolloutGroup[];
  /** Indices into `kept` of the groups forwarded; `pieces` index into this list. */
  active: readonly number[];
  pieces: Piece[][];
  /** Completion lengths of the minibatch's groups left out (advantage 0): they count in the denominators. */
  idleLengths: readonly number[];
  oldLogprobs?: Float32Array[][];
  refLogprobs?: Float32Array[][];
  lr: number;
  step: number;
}

/**
 * One optimizer update: forward + backward of each micro-batch (gradients add up), then the step.
 * Each micro-batch's loss uses the whole minibatch's denominators, so the sum is the minibatch's loss.
 */
async function minibatchUpdate(inp: UpdateInputs, mb: Minibatch, acc: UpdateTotals): Promise<void> {
  const { model, config: c } = inp;
  const valid = mb.active.map((gi) => mb.kept[gi]!.completions.filter(validCompletion));
  const lengths = valid.map((cs) => cs.map((x) => x.tokenIds.length));
  // Gradients accumulate over this minibatch's backwards only.
  model.zeroGrad();
  const sum: UpdateTotals = {
    ...acc,
    tokens: 0,
    loss: 0,
    lossRuns: 0,
    low: 0,
    high: 0,
    dual: 0,
    kl: 0,
    klTokens: 0,
    ent: 0,
    entTokens: 0,
    trainTokens: 0,
  };
  for (const [m, micro] of mb.pieces.entries()) {
    const others = mb.pieces.flatMap((ps, j) =>
      j === m ? [] : ps.flatMap((p) => lengths[p.group]!.slice(p.from, p.to)),
    );
    const reqs: ForwardRequest[] = micro.map((p) => ({
      prompt: mb.kept[mb.active[p.group]!]!.prompt,
      completions: valid[p.group]!.slice(p.from, p.to).map((x) => x.tokenIds),
      keepForBackward: true,
    }));
    const tokens = reqs.reduce((a, r) => a + r.prompt.ids.length + r.completions.reduce((x, y) => x + y.length, 0), 0);
    sum.trainTokens += tokens;
    const usedBefore = inp.sizer.begin();
    const fwd = await model.forward(reqs);
    const rows = <T>(all: T[][] | undefined) =>
      all ? micro.flatMap((p) => all[mb.active[p.group]!]!.slice(p.from, p.to)) : undefined;
    const loss = grpoLoss(
      {
        logprobs: fwd.flatMap((r) => r.logprobs),
        entropy: fwd.flatMap((r) => r.entropy),
        oldLogprobs: rows(mb.oldLogprobs),
        refLogprobs: rows(mb.refLogprobs),
        advantages: micro.flatMap((p) => valid[p.group]!.slice(p.from, p.to).map((x) => x.advantage)),
        // Lengths of this micro-batch's groups that sit in other pieces are in `others`.
        skippedLengths: [...mb.idleLengths, ...others],
      },
      {
        epsilonLow: c.epsilonLow,
        epsilonHigh: c.epsilonHigh,
        dualClip: c.dualClip,
        beta: mb.refLogprobs ? c.beta : 0,
        klEstimator: c.klEstimator,
        aggregation: c.lossAggregation,
        maxCompletionLength: c.maxCompletionLength,
      },
    );
    if (!Number.isFinite(loss.loss)) {
      acc.skipped++;
      acc.trainTokens += sum.trainTokens;
      inp.log(`step ${mb.step}: the loss is ${loss.loss}; update skipped, weights untouched`);
      return;
    }
    addLossMetrics(sum, loss.metrics, loss.loss);
    // Back to per-request, per-completion rows for the engine.
    let k = 0;
    await model.backward(fwd.map((r) => r.logprobs.map(() => loss.gradLogprobs[k++]!)));
    inp.sizer.end(usedBefore, tokens);
  }
  acc.tokens += sum.tokens;
  acc.loss += sum.loss;
  acc.lossRuns++;
  acc.low += sum.low;
  acc.high += sum.high;
  acc.dual += sum.dual;
  acc.kl += sum.kl;
  acc.klTokens += sum.klTokens;
  acc.ent += sum.ent;
  acc.entTokens += sum.entTokens;
  acc.trainTokens += sum.trainTokens;
  const st = await model.step({
    lr: mb.lr,
    beta1: c.adamBeta1,
    beta2: c.adamBeta2,
    eps: c.adamEpsilon,
    weightDecay: c.weightDecay,
    maxGradNorm: c.maxGradNorm,
  });
  if (st.skipped) {
    acc.skipped++;
    inp.log(`step ${mb.step}: the engine skipped an update (${st.reason ?? 'non-finite gradient'}); weights untouched`);
  } else {
    acc.updates++;
  }
  if (Number.isFinite(st.gradNorm)) {
    acc.gradNorm += st.gradNorm;
    acc.gradNorms++;
  }
}

/**
 * The step's metrics. Rewards, accuracy and lengths describe every completion sampled this step
 * (all rounds), so they measure the policy even when dynamic sampling kept few groups (or none).
 */
export function fillStepMetrics(
  m: StepMetrics,
  sampled: readonly RolloutGroup[],
  kept: readonly RolloutGroup[],
  acc: UpdateTotals,
  rounds: number,
): void {
  const all = sampled.flatMap((g) => g.completions);
  const valid = all.filter(validCompletion);
  const rs = meanStd(valid.map((x) => x.reward));
  m.rewardMean = rs.mean;
  m.rewardStd = rs.std;
  const partSums = new Map<string, { s: number; n: number }>();
  for (const comp of valid)
    for (const [p, v] of Object.entries(comp.rewardParts)) {
      const e = partSums.get(p) ?? { s: 0, n: 0 };
      e.s += v;
      e.n++;
      partSums.set(p, e);
    }
  m.rewardParts = Object.fromEntries([...partSums].map(([p, e]) => [p, e.s / e.n]));
  m.accuracy = meanStd(all.filter((x) => x.finishReason !== 'error').map((x) => x.accuracy)).mean;
  m.loss = acc.lossRuns > 0 ? acc.loss / acc.lossRuns : NaN;
  m.kl = acc.klTokens > 0 ? acc.kl / acc.klTokens : NaN;
  m.clipFractionLow = acc.tokens > 0 ? acc.low / acc.tokens : 0;
  m.clipFractionHigh = acc.tokens > 0 ? acc.high / acc.tokens : 0;
  m.clipFractionDual = acc.tokens > 0 ? acc.dual / acc.tokens : 0;
  m.entropy = acc.entTokens > 0 ? acc.ent / acc.entTokens : NaN;
  m.gradNorm = acc.gradNorms > 0 ? acc.gradNorm / acc.gradNorms : NaN;
  m.learningRate = acc.lr;
  const lengths = all.filter((x) => x.finishReason !== 'error').map((x) => x.tokenIds.length);
  m.completionLength = meanStd(lengths).mean;
  m.completionLengthMax = lengths.length ? Math.max(...lengths) : NaN;
  m.truncatedFraction = lengths.length ? all.filter((x) => x.finishReason === 'length').length / lengths.length : NaN;
  m.zeroVarianceFraction = sampled.length ? sampled.filter((g) => g.zeroVariance).length / sampled.length : NaN;
  m.groups = kept.length;
  m.samplingRounds = rounds;
  m.rewardFailures = sampled.reduce((a, g) => a + g.completions.filter((x) => x.errors.length > 0).length, 0);
  m.skippedUpdates = acc.skipped;
}
