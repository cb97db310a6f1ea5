/**
 * Micro-batches: a minibatch's training forward + backward split into pieces that fit the device,
 * their gradients summed before the one optimizer step. The split does not change the update: each
 * piece's loss is aggregated with the whole minibatch's denominators (the rest of the minibatch is
 * passed as `skippedLengths`), so the summed gradient is the minibatch's gradient.
 *
 * The size is a budget of forwarded tokens (prompt once per piece + completions). On the CPU there is
 * no budget. On a GPU it comes from the memory the device can still give (free + what the engine's pool
 * keeps for reuse) divided by the bytes a token costs: first a conservative estimate from the model's
 * dims, then what the last pieces measured (the pool's peak over the tokens forwarded); and it is never
 * more than the device's training pack (`EngineModel.packRows`) — nor, when the base weights are frozen
 * (LoRA), than FROZEN_BASE_PIECE_TOKENS. An out-of-memory halves the budget
 * and the minibatch starts again (see update.ts). Groups are kept whole when they fit, in pieces as
 * even as whole groups allow.
 *
 * Activation checkpointing (each layer's input kept, the rest recomputed in the backward) costs one
 * more forward, while more pieces cost little once a piece fills the GPU: so it is turned on only
 * when needed — when a piece that cannot be split (a prompt and one completion) does not fit the
 * budget, or runs out of memory — and stays on for the trainer's life.
 */
import type { EngineModel } from '../engine/types.js';

/**
 * The largest piece on a device when the base weights are frozen (LoRA: fewer parameters trainable
 * than there are). Such an update is cheap per token — no weight gradient but the adapters' — while
 * its saved activations cost what a full fine-tune's do, so they set the step's memory peak: a
 * Qwen2-VL-2B step of 3,408-token pieces peaked at 13.9 GB (bench/results/trainer/h100-2026-12-07).
 * GEMMs of 2k rows already run near full speed, and with the vision feature cache a piece no longer
 * pays the vision tower, so smaller pieces cost little time.
 */
export const FROZEN_BASE_PIECE_TOKENS = 2048;

/** Completions [from, to) of the minibatch's group `group` (indices into its valid completions). */
export interface Piece {
  group: number;
  from: number;
  to: number;
}

/** The groups of a minibatch as the splitter sees them: prompt length and completion lengths. */
export interface SplitGroup {
  promptTokens: number;
  completionTokens: readonly number[];
}

/** Forwarded tokens of a whole group: its prompt once, then every completion. */
function groupCost(g: SplitGroup): number {
  return g.promptTokens + g.completionTokens.reduce((a, b) => a + b, 0);
}

/** Whole groups, in order, into pieces of at most `cap` tokens (greedy: the fewest such pieces). */
function packWhole(costs: readonly number[], cap: number): number[][] {
  const out: number[][] = [];
  let cur: number[] = [];
  let used = 0;
  for (const [i, c] of costs.entries()) {
    if (cur.length > 0 && used + c > cap) {
      out.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(i);
    used += c;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/**
 * Pieces of at most `budget` forwarded tokens, in order.
 *
 * When every group fits the budget whole, groups are never split (a split group pays its prompt and
 * its images again in the next piece): the pieces are as few as the budget allows and as even as
 * whole groups can make them — the smallest largest piece for that count — since a step's time
 * follows its packs, and one large and one small piece cost about two large ones.
 *
 * Otherwise a group is split between completions where it does not fit (the next piece pays its
 * prompt again), and a single completion that alone exceeds the budget gets a piece of its own.
 */
export function splitMinibatch(groups: readonly SplitGroup[], budget: number): Piece[][] {
  const costs = groups.map(groupCost);
  const whole = (ix: number[]) => ix.map((group) => ({ group, from: 0, to: groups[group]!.completionTokens.length }));
  if (costs.every((c) => c <= budget)) {
    const fewest = packWhole(costs, budget);
    if (fewest.length <= 1) return fewest.map(whole);
    // The smallest cap that still gives this many pieces (greedy packing's count only falls as the cap rises).
    let lo = Math.max(...costs),
      hi = Math.min(
        budget,
        costs.reduce((a, b) => a + b, 0),
      );
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (packWhole(costs, mid).length <= fewest.length) hi = mid;
      else lo = mid + 1;
    }
    return packWhole(costs, lo).map(whole);
  }
  return splitBetweenCompletions(groups, budget);
}

/** The general split: pieces filled in order, a group cut between completions where it does not fit. */
function splitBetweenCompletions(groups: readonly SplitGroup[], budget: number): Piece[][] {
  const out: Piece[][] = [];
  let cur: Piece[] = [];
  let used = 0;
  for (const [group, g] of groups.entries()) {
    let open = false; // the current piece holds this group's completions from `from`
    let from = 0;
    for (const [k, t] of g.completionTokens.entries()) {
      let cost = t + (open ? 0 : g.promptTokens);
      if (used > 0 && used + cost > budget) {
        if (open) cur.push({ group, from, to: k });
        out.push(cur);
        cur = [];
        used = 0;
        open = false;
        cost = t + g.promptTokens;
      }
      if (!open) {
        from = k;
        open = true;
      }
      used += cost;
    }
    if (open) cur.push({ group, from, to: g.completionTokens.length });
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

export function isOutOfMemory(err: unknown): boolean {
  return err instanceof Error && /out of GPU memory/.test(err.message);
}

/** Keeps the token budget of a model's training passes across steps. */
export class MicroBatchSizer {
  /** Bytes one forwarded token costs in a training forward + backward (estimate, then measured). */
  private bytesPerToken: number;
  private measured = false;
  /** Set after an out-of-memory: never go above it again. */
  private ceiling = Infinity;
  /** Whether this sizer turned the device's activation checkpointing on. */
  private checkpointing = false;
  /** The pool's peak (MiB) seen since takePeak(): begin() resets the pool's own peak window. */
  private seenPeak = Number.NEGATIVE_INFINITY;
  /** A fixed budget from the config (tokens), or 0 for sizing from memory. */
  constructor(
    private readonly model: EngineModel,
    private readonly fixed: number,
  ) {
    const c = model.config;
    // Saved activations per token and layer in fp32 (q, k, v, attention out, norms, residuals ≈ 6 H;
    // gate, up, act, their grads ≈ 4 I), plus one vocabulary row of logits: an upper estimate until
    // the first pass measures.
    this.bytesPerToken = 4 * ((6 * c.hiddenSize + 4 * c.intermediateSize) * c.numLayers + c.vocabSize);
  }

  /**
   * The budget for a minibatch of these groups: what the memory allows, and no more than the device's
   * training pack (a bigger piece is forwarded as several packs anyway, whose activations all wait for
   * the backward: memory for no speed) or, with a frozen base, FROZEN_BASE_PIECE_TOKENS, unless one
   * unsplittable piece is bigger. When that piece (a
   * prompt and its longest completion) is over the memory's budget, turns activation checkpointing
   * on if the device has it (`switched`), and the budget is the one with checkpointing.
   */
  budgetFor(groups: readonly SplitGroup[]): { budget: number; switched: boolean; unsplittable: number } {
    const unsplittable = Math.max(0, ...groups.map((g) => g.promptTokens + Math.max(0, ...g.completionTokens)));
    const memory = this.budget();
    // The pack cap never turns checkpointing on: a piece larger than a pack is only slower, not out of memory.
    // A fixed budget (the config's microBatchTokens) is taken as it is.
    const capped = (b: number) => (this.fixed > 0 ? b : Math.min(b, Math.max(this.pieceCap(), unsplittable)));
    if (unsplittable <= memory || !this.checkpoint()) return { budget: capped(memory), switched: false, unsplittable };
    return { budget: capped(this.budget()), switched: true, unsplittable };
  }

  /** The largest piece the device's speed calls for: its pack, or less with a frozen base (no limit on the CPU). */
  private pieceCap(): number {
    const pack = this.model.packRows;
    if (pack === undefined) return Infinity;
    const n = this.model.numParameters;
    return n && n.trainable < n.total ? Math.min(pack, FROZEN_BASE_PIECE_TOKENS) : pack;
  }

  /**
   * Turns activation checkpointing on (after an out-of-memory at a piece of one completion, or from
   * budgetFor). Returns false when it is on already, the budget is fixed, or the device cannot.
   */
  checkpoint(): boolean {
    if (this.checkpointing || this.fixed > 0 || !this.model.setCheckpointActivations?.(true)) return false;
    this.checkpointing = true;
    const c = this.model.config;
    // Kept per token: every layer's input, one layer's internals while it is recomputed, a logits
    // row — measured again from the next pass.
    this.bytesPerToken = 4 * (c.hiddenSize * c.numLayers + 6 * c.hiddenSize + 4 * c.intermediateSize + c.vocabSize);
    this.measured = false;
    this.ceiling = Infinity;
    return true;
  }

  /** What the free memory allows a pass, in forwarded tokens (Infinity: one piece). */
  budget(): number {
    if (this.fixed > 0) return this.fixed;
    const mem = this.model.deviceMemory?.(false);
    if (!mem) return this.ceiling;
    // 10 % and 1 GiB kept back for the optimizer's scratch, fragmentation and the estimate's error.
    const bytes = Math.max(0, mem.availableMiB - 1024) * 0.9 * 1024 * 1024;
    const fromMemory = Math.floor(bytes / this.bytesPerToken);
    return Math.max(1, Math.min(this.ceiling, fromMemory));
  }

  /** Call before a pass: starts the peak window. Returns the pool's use before it (MiB). */
  begin(): number | undefined {
    const mem = this.model.deviceMemory?.(true);
    if (mem) this.seenPeak = Math.max(this.seenPeak, mem.peakMiB);
    return mem?.usedMiB;
  }

  /**
   * The pool's peak (MiB, NaN on the CPU) since the last call, then a new window starts. The passes
   * reset the pool's own window (begin()), so the peaks they saw count too.
   */
  takePeak(): number {
    const pool = this.model.deviceMemory?.(true)?.peakMiB ?? Number.NaN;
    const peak = Math.max(pool, this.seenPeak);
    this.seenPeak = Number.NEGATIVE_INFINITY;
    return peak;
  }

  /** After a pass of `tokens` forwarded tokens that began at `usedBefore` MiB: learn its cost. */
  end(usedBefore: number | undefined, tokens: number): void {
    if (usedBefore === undefined || tokens <= 0) return;
    const mem = this.model.deviceMemory?.(false);
    if (!mem) return;
    this.seenPeak = Math.max(this.seenPeak, mem.peakMiB);
    const perToken = (Math.max(0, mem.peakMiB - usedBefore) * 1024 * 1024) / tokens;
    if (perToken <= 0) return;
    // A larger piece can cost more per token (attention's spans); keep 15 % on top of the largest seen.
    const est = perToken * 1.15;
    this.bytesPerToken = this.measured ? Math.max(this.bytesPerToken * 0.5 + est * 0.5, est) : est;
    this.measured = true;
  }

  /** An out-of-memory at a pass of `tokens`: the budget is at most half of it from now on. */
  outOfMemory(tokens: number): number {
    this.ceiling = Math.max(1, Math.floor(tokens / 2));
    return this.ceiling;
  }
}
