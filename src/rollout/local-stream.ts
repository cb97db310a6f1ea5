/**
 * Incremental text of one completion while its tokens stream in, consistent with
 * {@link LocalPolicy.complete}: the pieces returned by push() and finish() add up to exactly the
 * choice's final `text` (stop ids end it and are not text; a stop string cuts the text before it
 * and ends the choice at the token that completed it).
 *
 * Held back until it is certain: a UTF-8 character split over tokens (its bytes decode to U+FFFD
 * until complete), and a tail of the text that may be the start of a stop string.
 *
 * Decoding is windowed: the text of the tokens up to the last character boundary is kept, and only
 * the tokens after it are decoded again (byte-level BPE decodes a concatenation of tokens to the
 * concatenation of their texts when the split falls on a character boundary), so a completion of k
 * tokens costs O(k) token decodes, not O(k²).
 */
import type { VlmTokenizer } from '../text/tokenizer.js';

/** The first position of any of `stops` in `text`, or -1. */
export function firstIndexOf(text: string, stops: readonly string[]): number {
  let best = -1;
  for (const s of stops) {
    if (s === '') continue;
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function stopPrefixTail(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let len = Math.min(s.length - 1, text.length); len > hold; len--) {
      if (text.endsWith(s.slice(0, len))) { hold = len; break; }
    }
  }
  return hold;
}

export class ChoiceTextStream {
  private readonly ids: number[] = [];
  /** Text of ids[0..window), ending on a character boundary. */
  private stable = '';
  private window = 0;
  private sentText = '';
  private ended = false;
  private count = 0;

  constructor(private readonly tokenizer: VlmTokenizer, private readonly stopIds: ReadonlySet<number>, private readonly stopStrings: readonly string[]) {}

  /** True once a stop id or stop string ended the choice: later tokens are not part of it. */
  get done(): boolean {
    return this.ended;
  }

  /** Tokens that belong to the choice so far (a stop id that ended it included). */
  get tokens(): number {
    return this.count;
  }

  /** The text returned so far. */
  get sent(): string {
    return this.sentText;
  }

  private text(): string {
    const tail = this.tokenizer.decode(this.ids.slice(this.window));
    const full = this.stable + tail;
    if (!tail.endsWith('\uFFFD')) {
      this.stable = full;
      this.window = this.ids.length;
    }
    return full;
  }

  private emit(upTo: string): string {
    if (upTo.length <= this.sentText.length || !upTo.startsWith(this.sentText)) return '';
    const delta = upTo.slice(this.sentText.length);
    this.sentText = upTo;
    return delta;
  }

  /** The next token; returns the text that became certain ('' when none). */
  push(id: number): string {
    if (this.ended) return '';
    this.count++;
    if (this.stopIds.has(id)) {
      this.ended = true;
      return this.emit(this.text());
    }
    this.ids.push(id);
    const full = this.text();
    const at = firstIndexOf(full, this.stopStrings);
    if (at >= 0) {
      this.ended = true;
      return this.emit(full.slice(0, at));
    }
    let safe = full.replace(/\uFFFD+$/, '');
    safe = safe.slice(0, safe.length - stopPrefixTail(safe, this.stopStrings));
    return this.emit(safe);
  }

  /** The choice ended (max tokens, or the request finished): the rest of its text. */
  finish(): string {
    if (this.ended) return '';
    this.ended = true;
    return this.emit(this.text());
  }
}
