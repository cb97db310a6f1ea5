/**
 * A small byte-level BPE trainer: learns merges from pre-tokenized pieces (already in byte-level
 * characters) with counts. Classic BPE: repeatedly merge the most frequent adjacent pair; ties go
 * to the lexicographically smallest pair, so the result is a pure function of the corpus.
 */

export interface BpeTrainOptions {
  /** Stop after this many merges (default: no limit). */
  maxMerges?: number;
  /** Only merge pairs seen at least this often (default 1: every piece ends as one token). */
  minFrequency?: number;
}

export interface BpeTrainResult {
  /** Merges in rank order, each as [left, right]. */
  merges: [string, string][];
  /** The merged tokens in the order they were created (left + right of each merge). */
  tokens: string[];
}

export function trainBpe(pieces: ReadonlyMap<string, number>, options: BpeTrainOptions = {}): BpeTrainResult {
  const maxMerges = options.maxMerges ?? Infinity;
  const minFrequency = options.minFrequency ?? 1;
  // Each distinct piece as its current symbol sequence, with its count.
  const words: { symbols: string[]; count: number }[] = [];
  for (const [piece, count] of [...pieces].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    if (count <= 0) continue;
    words.push({ symbols: [...piece], count });
  }
  const merges: [string, string][] = [];
  const tokens: string[] = [];
  const known = new Set<string>();
  while (merges.length < maxMerges) {
    const counts = new Map<string, { left: string; right: string; n: number }>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const left = w.symbols[i]!,
          right = w.symbols[i + 1]!;
        const key = `${left}\u0000${right}`;
        const e = counts.get(key);
        if (e) e.n += w.count;
        else counts.set(key, { left, right, n: w.count });
      }
    }
    let best: { left: string; right: string; n: number } | undefined;
    for (const e of counts.values()) {
      if (
        !best ||
        e.n > best.n ||
        (e.n === best.n && (e.left < best.left || (e.left === best.left && e.right < best.right)))
      )
        best = e;
    }
    if (!best || best.n < minFrequency) break;
    const merged = best.left + best.right;
    merges.push([best.left, best.right]);
    if (!known.has(merged)) {
      known.add(merged);
      tokens.push(merged);
    }
    for (const w of words) {
      const s = w.symbols;
      if (s.length < 2) continue;
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === best.left && s[i + 1] === best.right) {
          out.push(merged);
          i++;
        } else out.push(s[i]!);
      }
      w.symbols = out;
    }
  }
  return { merges, tokens };
}
