/**
 * Streaming reader for JSON files of one known shape: a top-level object holding one large array
 * (VQAv2's `{"info": ..., "questions": [...]}` and `{"annotations": [...]}`). The file is read in
 * chunks; each array element is cut out by a byte scanner (tracking nesting, strings and
 * escapes) and parsed on its own with JSON.parse, so memory holds one chunk and one element, not
 * the document: the 330 MB VQAv2 train annotations never become one string.
 *
 * The other top-level members (small: `info`, `data_subtype`, ...) are parsed and returned; one
 * larger than 1 MB is skipped (it is not what the caller asked for, and may be another big array).
 *
 * Errors name the file, the byte offset, the element index and what was expected.
 */
import { createReadStream } from 'node:fs';

const MAX_OTHER_VALUE = 1 << 20;

export interface JsonArrayScanOptions {
  /** The top-level key whose array elements are streamed, e.g. "questions". */
  arrayKey: string;
  /**
   * Called for each element, in order; may throw (the scan stops and the error propagates). When
   * it returns a promise the scan waits for it (e.g. to write a full row group).
   */
  onItem: (item: unknown, index: number) => void | Promise<void>;
  /** Called with the bytes read so far, after each chunk. */
  onProgress?: (bytesRead: number) => void;
  signal?: AbortSignal;
  /** Read size; default 4 MiB. */
  chunkSize?: number;
}

export interface JsonArrayScanResult {
  /** Elements passed to onItem. */
  count: number;
  /** The other top-level members (those of 1 MB or less), parsed. */
  topLevel: Record<string, unknown>;
  /** Top-level keys whose values were too large to keep. */
  skippedKeys: string[];
  bytes: number;
}

const enum Phase {
  Start,
  BeforeKey,
  Key,
  Colon,
  BeforeValue,
  Value,
  BeforeItem,
  Item,
  AfterItem,
  End,
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** The phases in which the scanner reads a key, a value or an element. */
function inToken(p: Phase): boolean {
  return p === Phase.Key || p === Phase.Value || p === Phase.Item;
}

function isDelimiter(c: number): boolean {
  return isWs(c) || c === 0x2c || c === 0x7d || c === 0x5d;
}

function show(c: number | undefined): string {
  if (c === undefined) return 'end of file';
  return c >= 0x20 && c < 0x7f ? `'${String.fromCharCode(c)}'` : `byte 0x${c.toString(16).padStart(2, '0')}`;
}

/**
 * Scans one JSON value incrementally. `run` returns the index just past the value, or -1 when it
 * needs more input; its state survives across chunks (the caller keeps the bytes from the value's
 * start when it wants them, or drops them when skipping).
 */
class ValueScanner {
  depth = 0;
  inString = false;
  escape = false;
  started = false;
  scalar = false;

  reset(): void {
    this.depth = 0;
    this.inString = false;
    this.escape = false;
    this.started = false;
    this.scalar = false;
  }

  run(buf: Buffer, from: number): number {
    let i = from;
    const n = buf.length;
    if (!this.started) {
      if (i >= n) return -1;
      this.started = true;
      const c = buf[i]!;
      if (c === 0x22) {
        this.inString = true;
        i++;
      } else if (c === 0x7b || c === 0x5b) {
        this.depth = 1;
        i++;
      } else this.scalar = true;
    }
    if (this.scalar) {
      while (i < n && !isDelimiter(buf[i]!)) i++;
      return i < n ? i : -1;
    }
    // State lives in locals inside the loop (much faster than fields) and is saved on exit.
    let depth = this.depth,
      inString = this.inString,
      escape = this.escape;
    for (;;) {
      if (inString) {
        if (escape) {
          if (i >= n) break;
          escape = false;
          i++;
        }
        // Jump to the next quote; it ends the string unless an odd run of backslashes precedes it.
        const q = buf.indexOf(0x22, i);
        if (q < 0) {
          let b = n - 1;
          while (b >= i && buf[b] === 0x5c) b--;
          escape = (n - 1 - b) % 2 === 1;
          i = n;
          break;
        }
        let b = q - 1;
        while (b >= i && buf[b] === 0x5c) b--;
        i = q + 1;
        if ((q - 1 - b) % 2 === 1) continue; // escaped quote: still inside the string
        inString = false;
        if (depth === 0) {
          this.depth = 0;
          this.inString = false;
          this.escape = false;
          return i;
        }
        continue;
      }
      if (i >= n) break;
      const c = buf[i++]!;
      if (c === 0x22) inString = true;
      else if (c === 0x7b || c === 0x5b) depth++;
      else if (c === 0x7d || c === 0x5d) {
        if (--depth === 0) {
          this.depth = 0;
          this.inString = false;
          this.escape = false;
          return i;
        }
      }
    }
    this.depth = depth;
    this.inString = inString;
    this.escape = escape;
    return -1;
  }
}

/**
 * Stream the elements of `topLevel[arrayKey]` from a JSON file. Throws when the file is not a
 * JSON object, when the key is missing or not an array, or when an element is not valid JSON.
 */
export async function scanJsonArray(file: string, options: JsonArrayScanOptions): Promise<JsonArrayScanResult> {
  const { arrayKey, onItem, onProgress, signal } = options;
  const where = (offset: number) => `${file}: byte ${offset}`;
  const topLevel: Record<string, unknown> = {};
  const skippedKeys: string[] = [];
  const scanner = new ValueScanner();
  let phase = Phase.Start as Phase;
  let buf: Buffer = Buffer.alloc(0);
  let base = 0; // file offset of buf[0]
  let pos = 0; // next byte of buf to look at
  let start = -1; // start of the value or key being scanned (index in buf), -1 when none
  let key = '';
  let keepValue = true;
  let foundArray = false;
  let count = 0;
  let bytes = 0;

  // Complete elements are parsed in batches: one JSON.parse over "[" + the bytes from the first
  // element's start to the last one's end + "]" (the separators in between are already ','),
  // which costs far less than one parse per element. A batch that fails is re-parsed element by
  // element to name the bad one.
  let batchStarts: number[] = [];
  let batchEnds: number[] = [];
  const flushBatch = async (): Promise<void> => {
    const m = batchStarts.length;
    if (m === 0) return;
    const starts = batchStarts,
      ends = batchEnds;
    batchStarts = [];
    batchEnds = [];
    let items: unknown[];
    try {
      items = JSON.parse(`[${buf.toString('utf8', starts[0], ends[m - 1])}]`) as unknown[];
    } catch {
      for (let k = 0; k < m; k++) {
        try {
          JSON.parse(buf.toString('utf8', starts[k], ends[k]));
        } catch (err) {
          throw new Error(
            `${where(base + starts[k]!)}: ${arrayKey}[${count + k}] is not valid JSON (${(err as Error).message})`,
          );
        }
      }
      throw new Error(
        `${where(base + starts[0]!)}: ${arrayKey}[${count}..${count + m - 1}] are not valid JSON together`,
      );
    }
    for (let k = 0; k < m; k++) {
      const wait = onItem(items[k], count++);
      if (wait) await wait;
    }
  };

  const stream = createReadStream(file, { highWaterMark: options.chunkSize ?? 4 << 20 });
  // An abort must also end a read that is waiting (a pipe, a slow disk), not only the next chunk.
  const onAbort = () => stream.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      bytes += chunk.length;
      // Keep unfinished bytes from `start` (a value or key in progress); drop the rest.
      let keepFrom = start >= 0 ? start : pos;
      if (phase === Phase.Value && !keepValue) keepFrom = pos; // skipping: no need to keep
      const rest = buf.subarray(keepFrom);
      base += keepFrom;
      pos -= keepFrom;
      if (start >= 0) start = phase === Phase.Value && !keepValue ? -1 : start - keepFrom;
      buf = rest.length ? Buffer.concat([rest, chunk]) : chunk;
      const n = buf.length;
      scan: while (pos < n) {
        // White space between tokens is skipped here, whatever the phase expects next; inside a key,
        // value or element it belongs to the token and the scanner reads it.
        if (isWs(buf[pos]!) && !inToken(phase)) {
          pos++;
          continue;
        }
        switch (phase) {
          case Phase.Start: {
            const c = buf[pos]!;
            const at = base + pos; // a UTF-8 byte order mark may open the file
            if ((at === 0 && c === 0xef) || (at === 1 && c === 0xbb) || (at === 2 && c === 0xbf)) {
              pos++;
              break;
            }
            if (c === 0x7b) {
              pos++;
              phase = Phase.BeforeKey;
              break;
            }
            throw new Error(
              `${where(base + pos)}: expected a JSON object with a "${arrayKey}" array at the top level, found ${c === 0x5b ? 'an array' : show(c)}`,
            );
          }
          case Phase.BeforeKey: {
            const c = buf[pos]!;
            if (c === 0x2c) {
              pos++;
              break;
            }
            if (c === 0x7d) {
              pos++;
              phase = Phase.End;
              break;
            }
            if (c !== 0x22)
              throw new Error(
                `${where(base + pos)}: expected a key (a string) in the top-level object, found ${show(c)}`,
              );
            start = pos;
            scanner.reset();
            phase = Phase.Key;
            break;
          }
          case Phase.Key: {
            const end = scanner.run(buf, pos);
            if (end < 0) {
              pos = n;
              break scan;
            }
            key = JSON.parse(buf.toString('utf8', start, end)) as string;
            start = -1;
            pos = end;
            phase = Phase.Colon;
            break;
          }
          case Phase.Colon: {
            const c = buf[pos]!;
            if (c !== 0x3a) throw new Error(`${where(base + pos)}: expected ':' after key "${key}", found ${show(c)}`);
            pos++;
            phase = Phase.BeforeValue;
            break;
          }
          case Phase.BeforeValue: {
            const c = buf[pos]!;
            if (key === arrayKey) {
              if (c !== 0x5b) throw new Error(`${where(base + pos)}: "${arrayKey}" must be an array, found ${show(c)}`);
              foundArray = true;
              pos++;
              phase = Phase.BeforeItem;
              break;
            }
            start = pos;
            keepValue = true;
            scanner.reset();
            phase = Phase.Value;
            break;
          }
          case Phase.Value: {
            const end = scanner.run(buf, pos);
            if (end < 0) {
              if (keepValue && n - start > MAX_OTHER_VALUE) {
                keepValue = false;
                skippedKeys.push(key);
              }
              pos = n;
              break scan;
            }
            if (keepValue) {
              try {
                topLevel[key] = JSON.parse(buf.toString('utf8', start, end));
              } catch (err) {
                throw new Error(
                  `${where(base + start)}: top-level "${key}" is not valid JSON (${(err as Error).message})`,
                );
              }
            }
            start = -1;
            pos = end;
            phase = Phase.BeforeKey;
            break;
          }
          case Phase.BeforeItem: {
            const c = buf[pos]!;
            if (c === 0x5d) {
              pos++;
              phase = Phase.BeforeKey;
              break;
            }
            if (c === 0x2c)
              throw new Error(`${where(base + pos)}: ${arrayKey}[${count + batchStarts.length}]: unexpected ','`);
            start = pos;
            scanner.reset();
            phase = Phase.Item;
            break;
          }
          case Phase.Item: {
            const end = scanner.run(buf, pos);
            if (end < 0) {
              pos = n;
              break scan;
            }
            batchStarts.push(start);
            batchEnds.push(end);
            start = -1;
            pos = end;
            phase = Phase.AfterItem;
            break;
          }
          case Phase.AfterItem: {
            const c = buf[pos]!;
            if (c === 0x2c) {
              pos++;
              phase = Phase.BeforeItem;
              break;
            }
            if (c === 0x5d) {
              pos++;
              phase = Phase.BeforeKey;
              await flushBatch();
              break;
            }
            await flushBatch();
            throw new Error(
              `${where(base + pos)}: after ${arrayKey}[${count - 1}]: expected ',' or ']', found ${show(c)}`,
            );
          }
          case Phase.End: {
            const c = buf[pos]!;
            throw new Error(`${where(base + pos)}: unexpected ${show(c)} after the end of the top-level object`);
          }
        }
      }
      await flushBatch();
      onProgress?.(bytes);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    stream.destroy();
  }
  // A scalar element can only end at a delimiter, so one at the very end is still open here.
  if (phase === Phase.Item && scanner.scalar && start >= 0) {
    batchStarts.push(start);
    batchEnds.push(buf.length);
    await flushBatch();
    phase = Phase.AfterItem;
  }
  if (phase !== Phase.End) {
    const inside =
      phase === Phase.Item || phase === Phase.AfterItem || phase === Phase.BeforeItem
        ? ` inside "${arrayKey}" (after ${count} complete elements)`
        : '';
    throw new Error(`${file}: unexpected end of file at byte ${bytes}${inside}: the JSON is truncated`);
  }
  if (!foundArray) {
    const keys = Object.keys(topLevel).concat(skippedKeys);
    throw new Error(
      `${file}: no "${arrayKey}" array at the top level (keys: ${keys.length ? keys.map((k) => `"${k}"`).join(', ') : 'none'})`,
    );
  }
  return { count, topLevel, skippedKeys, bytes };
}
