/**
 * What the kernel publishes on IOPub, in order. Stream text (stdout/stderr) is batched: a loop that
 * logs ten thousand lines sends a few dozen messages, not ten thousand. A write after a quiet
 * spell goes out at once (so "starting..." shows before a long synchronous computation); writes
 * that follow within `flushMs` are batched. Pending text is flushed before any other message (so
 * text and displays keep their order), when a batch grows past `maxBatchChars`, `flushMs` after
 * the first pending write, and at the end of each request.
 */
import type { Message } from '../src/jupyter/message.js';

export type StreamName = 'stdout' | 'stderr';

/** Sends one message on the IOPub socket, as a child of `parent`. */
export type Publish = (parent: Message<unknown>, msgType: string, content: unknown) => void;

export interface IOPubOptions {
  flushMs?: number;
  maxBatchChars?: number;
}

export class IOPub {
  private pending: { parent: Message<unknown>; name: StreamName; text: string } | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lastStreamAt = -Infinity;
  private readonly flushMs: number;
  private readonly maxBatchChars: number;

  constructor(
    private readonly send: Publish,
    options: IOPubOptions = {},
  ) {
    this.flushMs = options.flushMs ?? 50;
    this.maxBatchChars = options.maxBatchChars ?? 64 * 1024;
  }

  /** Queue stream text for `parent`'s output area. */
  stream(parent: Message<unknown>, name: StreamName, text: string): void {
    if (text === '') return;
    const now = performance.now();
    if (!this.pending && now - this.lastStreamAt >= this.flushMs) {
      this.lastStreamAt = now;
      this.send(parent, 'stream', { name, text });
      return;
    }
    const p = this.pending;
    if (p && (p.parent !== parent || p.name !== name)) this.flush();
    if (this.pending) this.pending.text += text;
    else this.pending = { parent, name, text };
    if (this.pending.text.length >= this.maxBatchChars) this.flush();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.flushMs);
      this.timer.unref();
    }
  }

  /** Publish a message (after any pending stream text). */
  publish(parent: Message<unknown>, msgType: string, content: unknown): void {
    this.flush();
    this.send(parent, msgType, content);
  }

  /** Send pending stream text now. */
  flush(): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    this.lastStreamAt = performance.now();
    this.send(p.parent, 'stream', { name: p.name, text: p.text });
  }
}
