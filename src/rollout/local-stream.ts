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
 *
 * Stop strings are matched incrementally ({@link StopMatcher}: one Knuth–Morris–Pratt automaton
 * per stop string, built once per request and shared by its choices): each new character costs
 * O(number of stop strings) amortised, whatever the length of the text or of the stop strings, and
 * the automaton's state is also the length of the longest tail that may start a stop string.
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

/**
 * Stop strings compiled for streaming search: for each, the KMP failure table (built in
 * O(length), once per request). Immutable; each choice keeps its own {@link StopState}.
 */
export class StopMatcher {
  readonly stops: readonly string[];
  private readonly fail: Int32Array[];

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s !== '');
    this.fail = this.stops.map((s) => {
      const f = new Int32Array(s.length + 1);
      f[0] = -1;
      let k = -1;
      for (let i = 0; i < s.length; i++) {
        while (k >= 0 && s.charCodeAt(k) !== s.charCodeAt(i)) k = f[k]!;
        k++;
        f[i + 1] = k;
      }
      return f;
    });
  }

  /** A fresh state (nothing matched yet). */
  state(): StopState {
    return { matched: new Int32Array(this.stops.length), hold: 0 };
  }

  /**
   * Feed `text` (the characters after those already fed). Returns the offset in `text` where the
   * earliest-starting stop string completed within it starts (relative to `text`; it may be
   * negative when the match began in earlier text), or null when none completed. `state.hold` is
   * then the length of the longest tail of all text fed that is a proper prefix of a stop string.
   */
  feed(st: StopState, text: string): number | null {
    let best: number | null = null;
    const n = this.stops.length;
    const done = new Uint8Array(n);
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      for (let j = 0; j < n; j++) {
        const s = this.stops[j]!,
          f = this.fail[j]!;
        let k = st.matched[j]!;
        if (k === s.length) k = f[k]!;
        while (k >= 0 && s.charCodeAt(k) !== c) k = f[k]!;
        k++;
        st.matched[j] = k;
        if (k === s.length && !done[j]) {
          done[j] = 1;
          const start = i + 1 - s.length;
          if (best === null || start < best) best = start;
        }
      }
    }
    let hold = 0;
    for (let j = 0; j < n; j++) {
      const k = st.matched[j]!;
      if (k < this.stops[j]!.length && k > hold) hold = k;
    }
    st.hold = hold;
    return best;
  }
}

export interface StopState {
  /** Per stop string: characters of it matched by the tail of the text fed. */
  matched: Int32Array;
  /** Longest tail of the text fed that is a proper prefix of some stop string. */
  hold: number;
}

/** Length of the text without its trailing U+FFFD characters (an incomplete UTF-8 character). */
function withoutReplacementTail(text: string): number {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 0xfffd) end--;
  return end;
}

export class ChoiceTextStream {
  private readonly ids: number[] = [];
  private readonly matcher: StopMatcher;
  private readonly stopState: StopState;
  /** Text of ids[0..window), ending on a character boundary. */
  private stable = '';
  private window = 0;
  /** The certain text fed to the stop matcher (all of it), and what of it lies past `stable`. */
  private fedLength = 0;
  private fedPastStable = '';
  /** Fed text not sent yet (a possible stop-string start); always a suffix of the fed text. */
  private unsent = '';
  private sentParts: string[] = [];
  private sentLength = 0;
  private ended = false;
  private count = 0;

  constructor(
    private readonly tokenizer: VlmTokenizer,
    private readonly stopIds: ReadonlySet<number>,
    stopStrings: readonly string[] | StopMatcher,
  ) {
    this.matcher = stopStrings instanceof StopMatcher ? stopStrings : new StopMatcher(stopStrings);
    this.stopState = this.matcher.state();
  }

  /** Another stream with the same stops (the compiled stop strings are shared, not rebuilt). */
  sibling(): ChoiceTextStream {
    return new ChoiceTextStream(this.tokenizer, this.stopIds, this.matcher);
  }

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
    if (this.sentParts.length > 1) this.sentParts = [this.sentParts.join('')];
    return this.sentParts[0] ?? '';
  }

  /** Decode the tokens after the window: a tail that ends on a character boundary joins `stable` (returns ''); else returns the tail. */
  private decodeTail(): string {
    const tail = this.tokenizer.decode(this.ids.slice(this.window));
    if (tail.endsWith('\uFFFD')) return tail;
    this.stable += tail;
    this.window = this.ids.length;
    return '';
  }

  private send(piece: string): string {
    if (piece) {
      this.sentParts.push(piece);
      this.sentLength += piece.length;
    }
    return piece;
  }

  /**
   * Bring the stop matcher up to date with the certain text. Returns the match position in the
   * whole text (or -1) and the new certain characters.
   */
  private advance(final: boolean): number {
    const before = this.stable.length;
    const tail = this.decodeTail();
    // The certain text: `stable` plus the tail up to an incomplete character (all of it when final).
    const tailKept = final ? tail : tail.slice(0, withoutReplacementTail(tail));
    const stableGrew = this.stable.length - before;
    // What is new since the last feed: past the old stable point, the fed text was `fedPastStable`.
    const nowPast = (stableGrew > 0 ? this.stable.slice(before) : '') + tailKept;
    let fresh: string;
    if (nowPast.startsWith(this.fedPastStable)) {
      fresh = nowPast.slice(this.fedPastStable.length);
    } else {
      // Not expected (decoding more bytes changed earlier characters): match the whole text again.
      const all = this.stable + tailKept;
      this.stopState.matched.fill(0);
      this.fedLength = 0;
      const at = this.matcher.feed(this.stopState, all);
      this.fedLength = all.length;
      this.fedPastStable = tailKept;
      this.unsent = all.slice(this.sentLength);
      return at === null ? -1 : at;
    }
    const at = this.matcher.feed(this.stopState, fresh);
    const start = this.fedLength;
    this.fedLength += fresh.length;
    this.fedPastStable = tailKept;
    this.unsent += fresh;
    return at === null ? -1 : start + at;
  }

  /** The next token; returns the text that became certain ('' when none). */
  push(id: number): string {
    if (this.ended) return '';
    this.count++;
    if (this.stopIds.has(id)) {
      this.ended = true;
      return this.flush(this.advance(true));
    }
    this.ids.push(id);
    const at = this.advance(false);
    if (at >= 0) {
      this.ended = true;
      return this.flush(at);
    }
    // Send all but a possible stop-string start.
    const keep = Math.min(this.stopState.hold, this.unsent.length);
    const piece = this.unsent.slice(0, this.unsent.length - keep);
    this.unsent = this.unsent.slice(this.unsent.length - keep);
    return this.send(piece);
  }

  /** The end: everything up to `at` (a stop string's start in the whole text; -1: all). */
  private flush(at: number): string {
    const unsentStart = this.fedLength - this.unsent.length;
    const piece = at >= 0 ? this.unsent.slice(0, Math.max(0, at - unsentStart)) : this.unsent;
    this.unsent = '';
    return this.send(piece);
  }

  /** The choice ended (max tokens, or the request finished): the rest of its text. */
  finish(): string {
    if (this.ended) return '';
    this.ended = true;
    return this.flush(this.advance(true));
  }
}
