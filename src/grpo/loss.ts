/**
 * The GRPO policy loss as one pure function, in TRL's order:
 *
 *   log_ratio = lp − old            ratio = exp(log_ratio)
 *   clipped   = clamp(ratio, 1 − ε_low, 1 + ε_high)
 *   pg        = max(−A·ratio, −A·clipped)            (= −min(ratio·A, clipped·A))
 *   pg        = min(pg, −c·A)  where A < 0            (dual clip, c > 1, when enabled)
 *   loss_t    = pg + β·KL_t(lp, ref)                  (KL in the loss, when β > 0)
 *   loss      = aggregate(loss_t)                     (token-mean, seq-mean-token-sum, ...)
 *
 * It returns the loss value, the metrics (clip fractions, KL, entropy) and dL/dlp for every
 * token: the engine's backward takes exactly that (src/engine/types.ts), so this function is the
 * only place where a loss variant lives.
 */
import type { KlEstimator, LossAggregation } from './config.js';
import { klTerm } from './advantages.js';

export interface LossBatch {
  /** Current policy log-prob of each completion token (from the training forward). */
  logprobs: readonly ArrayLike<number>[];
  /** Log-probs under the policy that sampled (μ > 1 or several minibatches); absent: = logprobs (ratio 1). */
  oldLogprobs?: readonly ArrayLike<number>[];
  /** Reference log-probs; needed when beta > 0. */
  refLogprobs?: readonly ArrayLike<number>[];
  /** One advantage per completion. */
  advantages: readonly number[];
  /** Per-token entropy of the current policy (metrics only). */
  entropy?: readonly ArrayLike<number>[];
  /**
   * Lengths of sequences left out of the forward because their advantage is 0 and no KL term is
   * in the loss: their loss and gradient are exactly 0, but they count in the aggregation's
   * denominators (sequences, tokens) as if present.
   */
  skippedLengths?: readonly number[];
}

export interface LossOptions {
  epsilonLow: number;
  epsilonHigh: number;
  /** Dual-clip c > 1; 0 disables. */
  dualClip: number;
  /** KL coefficient in the loss; 0 disables (refLogprobs then unused). */
  beta: number;
  klEstimator: KlEstimator;
  aggregation: LossAggregation;
  /** The constant of 'seq-mean-token-sum-norm' (the configured maximum completion length). */
  maxCompletionLength: number;
}

export interface LossMetrics {
  /** Completion tokens in the batch. */
  tokens: number;
  /** Fraction of tokens with ratio < 1 − ε_low and A < 0 (clipped from below: no gradient). */
  clipFractionLow: number;
  /** Fraction of tokens with ratio > 1 + ε_high and A > 0. */
  clipFractionHigh: number;
  /** Fraction of tokens capped by the dual clip. */
  clipFractionDual: number;
  /** Token mean of the KL estimate (NaN without reference log-probs). */
  kl: number;
  /** Token mean of the entropy (NaN without entropies). */
  entropy: number;
  /** Token mean of the ratio. */
  ratioMean: number;
  /** The policy-gradient part of the loss, aggregated like the loss. */
  pgLoss: number;
  /** β·KL part of the loss, aggregated like the loss. */
  klLoss: number;
}

export interface LossResult {
  loss: number;
  /** dL/dlp per completion, per token. */
  gradLogprobs: Float32Array[];
  metrics: LossMetrics;
}

/** Weight of each token of sequence i in the aggregate (Σ_i Σ_t w_i · loss_it). */
export function aggregationWeights(
  lengths: readonly number[],
  aggregation: LossAggregation,
  maxCompletionLength: number,
): number[] {
  const B = lengths.length;
  const N = lengths.reduce((a, b) => a + b, 0);
  switch (aggregation) {
    case 'token-mean':
      return lengths.map(() => (N > 0 ? 1 / N : 0));
    case 'seq-mean-token-sum':
      return lengths.map(() => 1 / B);
    case 'seq-mean-token-mean':
      return lengths.map((T) => (T > 0 ? 1 / (B * T) : 0));
    case 'seq-mean-token-sum-norm': {
      for (const [i, T] of lengths.entries()) {
        if (T > maxCompletionLength)
          throw new Error(
            `completion ${i} has ${T} tokens, more than maxCompletionLength ${maxCompletionLength} that seq-mean-token-sum-norm divides by`,
          );
      }
      return lengths.map(() => 1 / (B * maxCompletionLength));
    }
    default:
      throw new Error(`Unknown loss aggregation: ${String(aggregation)}`);
  }
}

export function grpoLoss(batch: LossBatch, options: LossOptions): LossResult {
  const B = batch.logprobs.length;
  if (batch.advantages.length !== B) throw new Error(`${B} completions but ${batch.advantages.length} advantages`);
  const check = (name: string, arr: readonly ArrayLike<number>[] | undefined) => {
    if (!arr) return;
    if (arr.length !== B) throw new Error(`${B} completions but ${arr.length} rows of ${name}`);
    arr.forEach((row, i) => {
      if (row.length !== batch.logprobs[i]!.length)
        throw new Error(`completion ${i}: ${batch.logprobs[i]!.length} log-probs but ${row.length} ${name}`);
    });
  };
  check('oldLogprobs', batch.oldLogprobs);
  check('refLogprobs', batch.refLogprobs);
  check('entropy', batch.entropy);
  const useKl = options.beta > 0;
  if (useKl && !batch.refLogprobs)
    throw new Error('beta > 0 needs refLogprobs (log-probs of the completions under the reference policy)');

  const lengths = batch.logprobs.map((l) => l.length);
  const weights = aggregationWeights(
    [...lengths, ...(batch.skippedLengths ?? [])],
    options.aggregation,
    options.maxCompletionLength,
  );
  const lo = 1 - options.epsilonLow,
    hi = 1 + options.epsilonHigh,
    c = options.dualClip;
  let loss = 0,
    pgLoss = 0,
    klLoss = 0;
  let tokens = 0,
    nLow = 0,
    nHigh = 0,
    nDual = 0,
    klSum = 0,
    entSum = 0,
    ratioSum = 0;
  const grads: Float32Array[] = [];
  for (let i = 0; i < B; i++) {
    const lp = batch.logprobs[i]!,
      old = batch.oldLogprobs?.[i],
      ref = batch.refLogprobs?.[i],
      ent = batch.entropy?.[i];
    const A = batch.advantages[i]!,
      w = weights[i]!;
    const g = new Float32Array(lp.length);
    for (let t = 0; t < lp.length; t++) {
      // Without old log-probs the ratio is exp(lp − stopgrad(lp)) = 1, but a non-finite lp still poisons it (as in TRL).
      const ratio = Math.exp(lp[t]! - (old ? old[t]! : lp[t]!));
      const clipped = Math.min(Math.max(ratio, lo), hi);
      const unclippedLoss = -A * ratio,
        clippedLoss = -A * clipped;
      let pg: number, dPg: number;
      if (unclippedLoss >= clippedLoss) {
        pg = unclippedLoss;
        dPg = -A * ratio;
      } else {
        pg = clippedLoss;
        dPg = 0;
      }
      if (ratio < lo && A < 0) nLow++;
      if (ratio > hi && A > 0) nHigh++;
      if (c > 0 && A < 0 && pg > -c * A) {
        pg = -c * A;
        dPg = 0;
        nDual++;
      }
      let kl = 0,
        dKl = 0;
      if (ref) {
        const k = klTerm(options.klEstimator, lp[t]!, ref[t]!);
        kl = k.value;
        dKl = k.dLp;
        klSum += kl;
      }
      const tokenLoss = useKl ? pg + options.beta * kl : pg;
      loss += w * tokenLoss;
      pgLoss += w * pg;
      if (useKl) klLoss += w * options.beta * kl;
      g[t] = w * (dPg + (useKl ? options.beta * dKl : 0));
      if (ent) entSum += ent[t]!;
      ratioSum += ratio;
      tokens++;
    }
    grads.push(g);
  }
  const frac = (n: number) => (tokens > 0 ? n / tokens : 0);
  return {
    loss,
    gradLogprobs: grads,
    metrics: {
      tokens,
      clipFractionLow: frac(nLow),
      clipFractionHigh: frac(nHigh),
      clipFractionDual: frac(nDual),
      kl: batch.refLogprobs && tokens > 0 ? klSum / tokens : NaN,
      entropy: batch.entropy && tokens > 0 ? entSum / tokens : NaN,
      ratioMean: tokens > 0 ? ratioSum / tokens : NaN,
      pgLoss,
      klLoss,
    },
  };
}

/**
 * SFT cross-entropy on given completions (answers): loss = −(1/N) Σ lp over all N answer tokens;
 * dL/dlp = −1/N for every token.
 */
export function sftLoss(logprobs: readonly ArrayLike<number>[]): {
  loss: number;
  gradLogprobs: Float32Array[];
  tokens: number;
} {
  const N = logprobs.reduce((a, l) => a + l.length, 0);
  let sum = 0;
  for (const l of logprobs) for (let t = 0; t < l.length; t++) sum += l[t]!;
  return {
    loss: N > 0 ? -sum / N : 0,
    gradLogprobs: logprobs.map((l) => new Float32Array(l.length).fill(N > 0 ? -1 / N : 0)),
    tokens: N,
  };
}
