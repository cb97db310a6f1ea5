/**
 * GRPO on agent trajectories: the update of src/grpo (same loss function, advantages, AdamW step
 * and config) over what the gateway recorded, with non-policy tokens masked out.
 *
 * - One advantage per trajectory (its group: the G attempts of one task); every segment of a
 *   trajectory shares it. Failed attempts (no reward, crash, timeout) are dropped from their group
 *   before the advantages, as the trainer drops completions whose reward failed.
 * - Each segment is one engine forward request: its recorded prompt (ids with image pads, the
 *   processed images) and its recorded tokens. The loss sees only the tokens with mask 1 — those
 *   the policy sampled —, their gradient flows back to those positions, and the other positions
 *   get a gradient of exactly 0. Token-mean aggregation counts policy tokens only.
 * - Old log-probs are the recorded sampling log-probs (the policy that produced the tokens), so a
 *   ratio ≠ 1 means the weights moved since sampling; PPO's clip then bounds the update (truncated
 *   importance sampling, as in the trainer). A trajectory sampled by another weight version than
 *   `expectedVersion` is refused (dropped, and counted).
 * - β must be 0 here (no reference model for agent trajectories yet).
 */
import type { EngineModel, ForwardRequest } from '../engine/types.js';
import { computeAdvantages, isZeroVariance } from '../grpo/advantages.js';
import type { GrpoConfig } from '../grpo/config.js';
import { grpoLoss, type LossMetrics, type LossOptions } from '../grpo/loss.js';
import type { AgentGroup } from './agent.js';
import type { TrajectorySegment } from './trajectory.js';

export interface AgentUpdateOptions {
  /** Learning rate of this step (default config.learningRate). */
  lr?: number;
  /** Refuse trajectories sampled by other weight versions (see Gateway.weightVersion). */
  expectedVersion?: number;
  /** Random order of minibatches (a seeded shuffle), default: in order. */
  shuffle?: (indices: number[]) => number[];
  log?: (line: string) => void;
}

export interface AgentUpdateResult {
  /** Mean loss over minibatches that updated. */
  loss: number;
  updates: number;
  skippedUpdates: number;
  /** Trajectories trained on, and dropped (failed attempts, other weight versions). */
  trajectories: number;
  failedTrajectories: number;
  offPolicyTrajectories: number;
  /** Policy tokens (mask 1) and masked tokens (mask 0) in the forwarded segments. */
  policyTokens: number;
  maskedTokens: number;
  /** Mean entropy over policy tokens. */
  entropy: number;
  gradNorm: number;
  /** Largest |forward log-prob − recorded sampling log-prob| over policy tokens at the first forward (≈0 on-policy: the ids trained on are the ids sampled). */
  maxLogprobDrift: number;
  zeroVarianceGroups: number;
}

interface Item {
  seg: TrajectorySegment;
  advantage: number;
  /** Positions with mask 1. */
  positions: number[];
}

function positionsOf(seg: TrajectorySegment): number[] {
  const out: number[] = [];
  for (let i = 0; i < seg.mask.length; i++) if (seg.mask[i]) out.push(i);
  return out;
}

function pick(row: ArrayLike<number>, positions: readonly number[]): Float32Array {
  const out = new Float32Array(positions.length);
  positions.forEach((p, k) => {
    out[k] = row[p]!;
  });
  return out;
}

/** One segment in the loss: its mask, its recorded sampling log-probs and its trajectory's advantage. */
export interface MaskedRow {
  mask: Uint8Array;
  /** Recorded sampling log-probs (used where mask is 1). */
  logprobs: Float32Array;
  advantage: number;
}

export type MaskedLossOptions = Omit<LossOptions, 'beta' | 'klEstimator'> & {
  klEstimator?: LossOptions['klEstimator'];
};

/**
 * grpoLoss over the mask-1 tokens of each row: `current` and `entropy` are the forward's full
 * rows (every token after the prompt). Returns dL/dlp as full rows, exactly 0 where mask is 0.
 */
export function maskedGrpoLoss(
  rows: readonly MaskedRow[],
  current: readonly ArrayLike<number>[],
  options: MaskedLossOptions,
  extra: { entropy?: readonly ArrayLike<number>[]; skippedLengths?: number[] } = {},
): { loss: number; gradLogprobs: Float32Array[]; metrics: LossMetrics } {
  if (current.length !== rows.length) throw new Error(`${rows.length} rows but ${current.length} rows of log-probs`);
  const positions = rows.map((r, i) => {
    if (current[i]!.length !== r.mask.length)
      throw new Error(`row ${i}: ${r.mask.length} tokens in the mask but ${current[i]!.length} log-probs`);
    const out: number[] = [];
    for (let t = 0; t < r.mask.length; t++) if (r.mask[t]) out.push(t);
    return out;
  });
  const loss = grpoLoss(
    {
      logprobs: current.map((row, i) => pick(row, positions[i]!)),
      oldLogprobs: rows.map((r, i) => pick(r.logprobs, positions[i]!)),
      advantages: rows.map((r) => r.advantage),
      ...(extra.entropy ? { entropy: extra.entropy.map((row, i) => pick(row, positions[i]!)) } : {}),
      skippedLengths: extra.skippedLengths,
    },
    { ...options, beta: 0, klEstimator: options.klEstimator ?? 'k3' },
  );
  const gradLogprobs = rows.map((r, i) => {
    const g = new Float32Array(r.mask.length);
    positions[i]!.forEach((p, j) => {
      g[p] = loss.gradLogprobs[i]![j]!;
    });
    return g;
  });
  return { loss: loss.loss, gradLogprobs, metrics: loss.metrics };
}

/** The GRPO update on agent groups (see the file comment). Mutates nothing but the model. */
export async function updateOnAgentGroups(
  model: EngineModel,
  groups: readonly AgentGroup[],
  c: GrpoConfig,
  o: AgentUpdateOptions = {},
): Promise<AgentUpdateResult> {
  if (c.beta > 0)
    throw new Error(
      'agent training supports beta = 0 only (no reference model for agent trajectories); set config.beta to 0',
    );
  const res: AgentUpdateResult = {
    loss: NaN,
    updates: 0,
    skippedUpdates: 0,
    trajectories: 0,
    failedTrajectories: 0,
    offPolicyTrajectories: 0,
    policyTokens: 0,
    maskedTokens: 0,
    entropy: NaN,
    gradNorm: NaN,
    maxLogprobDrift: 0,
    zeroVarianceGroups: 0,
  };
  // Valid trajectories per group, then one advantage each.
  const perGroup: Item[][] = [];
  const rewards: number[][] = [];
  const kept: { segs: TrajectorySegment[] }[][] = [];
  for (const g of groups) {
    const ok: { segs: TrajectorySegment[]; reward: number }[] = [];
    for (const t of g.trajectories) {
      if (
        !Number.isFinite(t.reward) ||
        t.segments.length === 0 ||
        t.segments.every((s) => !s.mask.some((m) => m === 1))
      ) {
        res.failedTrajectories++;
        continue;
      }
      if (o.expectedVersion !== undefined && t.weightVersions.some((v) => v !== o.expectedVersion)) {
        res.offPolicyTrajectories++;
        o.log?.(
          `attempt ${t.attemptId} of rollout ${t.rolloutId} was sampled by weight version ${t.weightVersions.join(', ')}, not ${o.expectedVersion}: not trained on`,
        );
        continue;
      }
      ok.push({ segs: t.segments, reward: t.reward });
    }
    rewards.push(ok.map((x) => x.reward));
    kept.push(ok);
    res.trajectories += ok.length;
    if (ok.length < 2 || isZeroVariance(ok.map((x) => x.reward))) res.zeroVarianceGroups++;
  }
  const adv = computeAdvantages(rewards, {
    estimator: c.advantageEstimator,
    scale: c.scaleRewards,
    epsilon: c.advantageEpsilon,
  });
  kept.forEach((ok, gi) => {
    perGroup.push(
      ok.flatMap((t, ti) => t.segs.map((seg) => ({ seg, advantage: adv[gi]![ti]!, positions: positionsOf(seg) }))),
    );
  });
  const lr = o.lr ?? c.learningRate;
  let lossSum = 0,
    lossRuns = 0,
    entSum = 0,
    entN = 0,
    gnSum = 0,
    gnN = 0,
    firstForward = true;
  const mbSize = c.miniBatchPrompts > 0 ? c.miniBatchPrompts : groups.length;
  for (let iter = 0; iter < c.numIterations; iter++) {
    const order = o.shuffle ? o.shuffle(perGroup.map((_, i) => i)) : perGroup.map((_, i) => i);
    for (let m = 0; m < order.length; m += mbSize) {
      const mb = order.slice(m, m + mbSize);
      const items = mb.flatMap((gi) => perGroup[gi]!);
      const active = items.filter((it) => it.advantage !== 0 && it.positions.length > 0);
      const skippedLengths = items
        .filter((it) => !(it.advantage !== 0 && it.positions.length > 0))
        .map((it) => it.positions.length);
      if (active.length === 0) continue;
      const requests: ForwardRequest[] = active.map((it) => ({
        prompt: it.seg.prompt,
        completions: [it.seg.tokenIds],
        keepForBackward: true,
      }));
      const fwd = await model.forward(requests);
      model.zeroGrad();
      if (iter === 0) {
        for (const it of active) {
          res.policyTokens += it.positions.length;
          res.maskedTokens += it.seg.tokenIds.length - it.positions.length;
        }
      }
      if (firstForward) {
        active.forEach((it, k) =>
          it.positions.forEach((p) => {
            res.maxLogprobDrift = Math.max(
              res.maxLogprobDrift,
              Math.abs(fwd[k]!.logprobs[0]![p]! - it.seg.logprobs[p]!),
            );
          }),
        );
        firstForward = false;
      }
      const loss = maskedGrpoLoss(
        active.map((it) => ({ mask: it.seg.mask, logprobs: it.seg.logprobs, advantage: it.advantage })),
        active.map((_, k) => fwd[k]!.logprobs[0]!),
        {
          epsilonLow: c.epsilonLow,
          epsilonHigh: c.epsilonHigh,
          dualClip: c.dualClip,
          aggregation: c.lossAggregation,
          maxCompletionLength: Math.max(c.maxCompletionLength, ...active.map((it) => it.positions.length)),
        },
        { entropy: active.map((_, k) => fwd[k]!.entropy[0]!), skippedLengths },
      );
      if (!Number.isFinite(loss.loss)) {
        res.skippedUpdates++;
        o.log?.(`agent update: the loss is ${loss.loss}; update skipped, weights untouched`);
        continue;
      }
      lossSum += loss.loss;
      lossRuns++;
      if (Number.isFinite(loss.metrics.entropy)) {
        entSum += loss.metrics.entropy * loss.metrics.tokens;
        entN += loss.metrics.tokens;
      }
      await model.backward(loss.gradLogprobs.map((g) => [g]));
      const st = await model.step({
        lr,
        beta1: c.adamBeta1,
        beta2: c.adamBeta2,
        eps: c.adamEpsilon,
        weightDecay: c.weightDecay,
        maxGradNorm: c.maxGradNorm,
      });
      if (st.skipped) {
        res.skippedUpdates++;
        o.log?.(`agent update: the engine skipped an update (${st.reason ?? 'non-finite gradient'})`);
      } else res.updates++;
      if (Number.isFinite(st.gradNorm)) {
        gnSum += st.gradNorm;
        gnN++;
      }
    }
  }
  res.loss = lossRuns ? lossSum / lossRuns : NaN;
  res.entropy = entN ? entSum / entN : NaN;
  res.gradNorm = gnN ? gnSum / gnN : NaN;
  return res;
}
