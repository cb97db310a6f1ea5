/**
 * The byte ↔ character table of byte-level BPE (GPT-2, Qwen2): every byte maps to one printable
 * Unicode character, so that any UTF-8 text is a string over a 256-symbol alphabet and nothing is
 * ever out of vocabulary. Bytes that are printable Latin-1 keep their own code point; the other 68
 * (controls, space, soft hyphen, ...) take code points from U+0100 on, in byte order.
 */

function printable(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/** The 256 bytes in vocabulary order: printable bytes first (ascending), then the rest. */
export const BYTE_ORDER: readonly number[] = (() => {
  const first: number[] = [],
    rest: number[] = [];
  for (let b = 0; b < 256; b++) (printable(b) ? first : rest).push(b);
  return [...first, ...rest];
})();

/** byte → its character. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) out[b] = printable(b) ? String.fromCodePoint(b) : String.fromCodePoint(next++);
  return out;
})();

/** character → its byte. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** UTF-8 bytes of `text` as byte-level characters ("é" → "Ã©", " " → "Ġ"). */
export function toByteLevel(text: string): string {
  let s = '';
  for (const b of Buffer.from(text, 'utf8')) s += BYTE_TO_CHAR[b];
  return s;
}

/** Inverse of {@link toByteLevel}; invalid UTF-8 decodes to U+FFFD like the tokenizer's decoder. */
export function fromByteLevel(chars: string): string {
  const bytes: number[] = [];
  for (const c of chars) {
    const b = CHAR_TO_BYTE.get(c);
    if (b === undefined)
      throw new Error(
        `"${c}" (U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}) is not a byte-level character`,
      );
    bytes.push(b);
  }
  return Buffer.from(bytes).toString('utf8');
}
