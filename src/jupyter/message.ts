/**
 * The Jupyter wire protocol (messaging spec 5.3): typed messages, and their ZeroMQ frames signed
 * with the connection's HMAC key. Pure functions, no sockets: the kernel (kernel/server.ts) and
 * the report's kernel client (src/report/protocol/kernel.ts) own those, and both code messages here.
 *
 * Frames of one message: [...routing identities, "<IDS|MSG>", signature, header, parent_header,
 * metadata, content, ...buffers]. The signature is the hex HMAC of the four JSON parts.
 */
import { createHmac, getHashes, randomUUID, timingSafeEqual } from 'node:crypto';

export const PROTOCOL_VERSION = '5.3';
const DELIMITER = Buffer.from('<IDS|MSG>');

export interface Header {
  msg_id: string;
  msg_type: string;
  session: string;
  username: string;
  date: string;
  version: string;
  /** Fields other implementations add (subshell_id, ...) are kept as they came. */
  [extra: string]: unknown;
}

export interface Message<C = Record<string, unknown>> {
  /** ZeroMQ routing identities (ROUTER sockets); replies go back through the same ones. */
  identities: Buffer[];
  header: Header;
  /** The request this message answers or was caused by; `{}` for none. */
  parent_header: Partial<Header>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
}

/** The contents of a kernel's connection file (written by the Jupyter client). */
export interface ConnectionInfo {
  transport: 'tcp' | 'ipc';
  ip: string;
  key: string;
  signature_scheme: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
}

/** A received message whose signature did not match, or whose frames are malformed; or an unsupported signature scheme. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const HASHES = new Set(getHashes());

/** The HMAC algorithm of a connection's signature_scheme (`hmac-` + a hash Node knows); throws ProtocolError otherwise. */
export function hmacAlgorithm(scheme: string): string {
  const algorithm = scheme.startsWith('hmac-') ? scheme.slice(5) : '';
  if (!HASHES.has(algorithm)) {
    throw new ProtocolError(
      `unsupported signature_scheme "${scheme}" (expected hmac-<hash>, e.g. hmac-sha256, hmac-sha512)`,
    );
  }
  return algorithm;
}

/** The HMAC over the four JSON parts; "" when the connection has no key (signing disabled). */
export function sign(key: string, scheme: string, parts: readonly (string | Buffer)[]): string {
  if (key === '') return '';
  const hmac = createHmac(hmacAlgorithm(scheme), key);
  for (const part of parts) hmac.update(part);
  return hmac.digest('hex');
}

function parseJson(frame: Buffer | undefined, what: string): Record<string, unknown> {
  if (frame === undefined) throw new ProtocolError(`message has no ${what} frame`);
  let value: unknown;
  try {
    value = JSON.parse(frame.toString('utf8'));
  } catch (err) {
    throw new ProtocolError(`message ${what} is not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new ProtocolError(`message ${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/** Parse and verify one multipart message. Throws ProtocolError on a bad signature or shape. */
export function decode(frames: readonly Buffer[], key: string, scheme = 'hmac-sha256'): Message {
  const delimiter = frames.findIndex((f) => f.equals(DELIMITER));
  if (delimiter < 0) throw new ProtocolError('message has no <IDS|MSG> delimiter');
  const signature = frames[delimiter + 1]?.toString('ascii') ?? '';
  const parts = frames.slice(delimiter + 2, delimiter + 6);
  if (parts.length < 4) throw new ProtocolError(`message has ${parts.length} of the 4 JSON frames`);
  if (key !== '') {
    const expected = Buffer.from(sign(key, scheme, parts), 'ascii');
    const got = Buffer.from(signature, 'ascii');
    if (got.length !== expected.length || !timingSafeEqual(got, expected))
      throw new ProtocolError('message signature does not match the connection key');
  }
  const header = parseJson(parts[0], 'header') as unknown as Header;
  if (typeof header.msg_type !== 'string' || typeof header.msg_id !== 'string')
    throw new ProtocolError('message header lacks msg_id or msg_type');
  return {
    identities: frames.slice(0, delimiter),
    header,
    parent_header: parseJson(parts[1], 'parent_header') as Partial<Header>,
    metadata: parseJson(parts[2], 'metadata'),
    content: parseJson(parts[3], 'content'),
    buffers: frames.slice(delimiter + 6),
  };
}

/** The frames of `msg`, signed. */
export function encode(msg: Message<unknown>, key: string, scheme = 'hmac-sha256'): Buffer[] {
  const parts = [msg.header, msg.parent_header, msg.metadata, msg.content].map((p) =>
    Buffer.from(JSON.stringify(p ?? {}), 'utf8'),
  );
  return [...msg.identities, DELIMITER, Buffer.from(sign(key, scheme, parts), 'ascii'), ...parts, ...msg.buffers];
}

/**
 * A new message caused by `parent`: same session and username, parent_header set. For replies
 * on shell/control the routing identities are the parent's; iopub messages carry none (the
 * topic frame is added by the publisher).
 */
export function childMessage<C>(
  parent: Message<unknown>,
  msgType: string,
  content: C,
  identities: Buffer[] = parent.identities,
): Message<C> {
  return {
    identities,
    header: {
      msg_id: randomUUID(),
      msg_type: msgType,
      session: parent.header.session,
      username: parent.header.username,
      date: new Date().toISOString(),
      version: PROTOCOL_VERSION,
    },
    parent_header: parent.header,
    metadata: {},
    content,
    buffers: [],
  };
}

/** A message with no parent (the kernel's first `status: starting`). */
export function orphanMessage<C>(session: string, msgType: string, content: C): Message<C> {
  return {
    identities: [],
    header: {
      msg_id: randomUUID(),
      msg_type: msgType,
      session,
      username: 'kernel',
      date: new Date().toISOString(),
      version: PROTOCOL_VERSION,
    },
    parent_header: {},
    metadata: {},
    content,
    buffers: [],
  };
}

/**
 * The client side of one session (the report's kernel client): messages it creates carry its
 * session id and username; encode and decode use its key and scheme.
 */
export class MessageCodec {
  readonly session = randomUUID();

  constructor(
    private readonly key: string,
    private readonly scheme = 'hmac-sha256',
    readonly username = 'vqalab',
  ) {
    hmacAlgorithm(scheme);
  }

  /** A new message of `msgType` (optionally answering `parent`). */
  create<C>(
    msgType: string,
    content: C,
    parent?: Message<unknown>,
    metadata: Record<string, unknown> = {},
  ): Message<C> {
    const header: Header = {
      msg_id: randomUUID(),
      msg_type: msgType,
      session: this.session,
      username: this.username,
      date: new Date().toISOString(),
      version: PROTOCOL_VERSION,
    };
    return { identities: [], header, parent_header: parent ? parent.header : {}, metadata, content, buffers: [] };
  }

  encode(msg: Message<unknown>): Buffer[] {
    return encode(msg, this.key, this.scheme);
  }

  /** Parse and verify wire frames; throws ProtocolError on a bad signature or layout. */
  decode(frames: readonly Buffer[]): Message {
    return decode(frames, this.key, this.scheme);
  }
}

// ── Cursor positions ──────────────────────────────────────────────────────────────────────────
// Since protocol 5.2 cursor positions count Unicode code points; JavaScript strings index UTF-16
// code units. The two differ after any character outside the Basic Multilingual Plane (emoji).

/** A code-point offset in `text` → the UTF-16 index. */
export function codePointsToUtf16(text: string, codePoints: number): number {
  let index = 0;
  for (let cp = 0; cp < codePoints && index < text.length; cp++) {
    const c = text.charCodeAt(index);
    index += c >= 0xd800 && c <= 0xdbff && index + 1 < text.length ? 2 : 1;
  }
  return index;
}

/** A UTF-16 index in `text` → the code-point offset. */
export function utf16ToCodePoints(text: string, index: number): number {
  let cps = 0;
  for (let i = 0; i < index && i < text.length; cps++) {
    const c = text.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < text.length ? 2 : 1;
  }
  return cps;
}

// ── Message contents used by the handler ─────────────────────────────────────────────────────

export interface ExecuteRequest {
  code: string;
  silent?: boolean;
  store_history?: boolean;
  user_expressions?: Record<string, string>;
  allow_stdin?: boolean;
  stop_on_error?: boolean;
}

/** 'ok' | 'error' (with ename/evalue/traceback) | 'aborted' (not run: an earlier cell failed). */
export type ExecuteReply =
  | { status: 'ok'; execution_count: number; payload: unknown[]; user_expressions: Record<string, unknown> }
  | { status: 'error'; execution_count: number; ename: string; evalue: string; traceback: string[] }
  | { status: 'aborted' };

export interface ErrorContent {
  ename: string;
  evalue: string;
  traceback: string[];
}

export interface CompleteRequest {
  code: string;
  cursor_pos: number;
}
export interface InspectRequest {
  code: string;
  cursor_pos: number;
  detail_level?: 0 | 1;
}
export interface IsCompleteRequest {
  code: string;
}

export interface HistoryRequest {
  output: boolean;
  raw: boolean;
  hist_access_type: 'range' | 'tail' | 'search';
  session?: number;
  start?: number;
  stop?: number;
  n?: number;
  pattern?: string;
  unique?: boolean;
}

/** display_data / update_display_data / execute_result content (the last adds execution_count). */
export interface DisplayContent {
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  transient?: { display_id?: string };
}
