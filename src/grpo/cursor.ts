/**
 * Where the trainer is in its data: an epoch number and a position in that epoch's order. Each
 * epoch's order is a shuffle seeded by (seed, epoch), so the cursor is two integers and a resumed
 * run draws the same prompts as the uninterrupted one.
 */
import { Rng } from '../util/rng.js';

export interface CursorState {
  epoch: number;
  index: number;
}

export class DataCursor {
  private order: number[];
  private state: CursorState;

  constructor(
    readonly size: number,
    readonly seed: number,
    state: CursorState = { epoch: 0, index: 0 },
  ) {
    if (!Number.isInteger(size) || size <= 0)
      throw new Error(`the training set is empty (${size} samples); give the trainer at least one sample`);
    this.state = { ...state };
    this.order = this.orderOf(this.state.epoch);
  }

  private orderOf(epoch: number): number[] {
    const rng = new Rng((this.seed * 1_000_003 + epoch * 7919 + 17) >>> 0);
    return rng.shuffle(Array.from({ length: this.size }, (_, i) => i));
  }

  /** The next `n` sample indices (wrapping into the next epoch, reshuffled). */
  take(n: number): number[] {
    const out: number[] = [];
    while (out.length < n) {
      if (this.state.index >= this.size) {
        this.state = { epoch: this.state.epoch + 1, index: 0 };
        this.order = this.orderOf(this.state.epoch);
      }
      out.push(this.order[this.state.index++]!);
    }
    return out;
  }

  /** The next `n` sample indices, as take(n) would give them, without moving the cursor. */
  peek(n: number): number[] {
    const saved = this.position;
    try {
      return this.take(n);
    } finally {
      this.position = saved;
    }
  }

  get position(): CursorState {
    return { ...this.state };
  }

  set position(s: CursorState) {
    if (s.epoch !== this.state.epoch) this.order = this.orderOf(s.epoch);
    this.state = { ...s };
  }
}
