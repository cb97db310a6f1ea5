/**
 * Jupyter messages on the wire (messaging protocol 5.x): the frame layout, HMAC signing and
 * verification. A message is `[identities…, "<IDS|MSG>", signature, header, parent_header,
 * metadata, content, buffers…]`; the signature is the hex HMAC of the four JSON frames under the
 * connection key (no signing when the key is empty).
 */
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';

export const PROTOCOL_VERSION = '5.3';
const DELIMITER = '<IDS|MSG>';

export interface MessageHeader {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
  [extra: string]: unknown;
}

export interface JupyterMessage<C = Record<string, any>> {
  header: MessageHeader;
  /** Empty object when the message answers nothing. */
  parent_header: Partial<MessageHeader>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
  /** ZeroMQ routing identities that preceded the delimiter (iopub: the topic). */
  identities: Buffer[];
}

/** A received message whose signature did not match, or whose frames are malformed. */
export class MessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MessageError';
  }
}

const SCHEMES: Record<string, string> = { 'hmac-sha256': 'sha256', 'hmac-sha512': 'sha512', 'hmac-sha1': 'sha1', 'hmac-md5': 'md5' };

/** Encodes and decodes messages of one session under one key. */
export class MessageCodec {
  readonly session = randomUUID();
  private readonly algorithm: string;

  constructor(private readonly key: string, scheme = 'hmac-sha256', readonly username = 'vqalab') {
    const algorithm = SCHEMES[scheme];
    if (!algorithm) throw new MessageError(`unsupported signature_scheme "${scheme}" (expected one of ${Object.keys(SCHEMES).join(', ')})`);
    this.algorithm = algorithm;
  }

  /** Hex HMAC of the four JSON frames; '' when the key is empty (signing disabled). */
  sign(frames: readonly (Buffer | string)[]): string {
    if (this.key === '') return '';
    const hmac = createHmac(this.algorithm, this.key);
    for (const f of frames) hmac.update(f);
    return hmac.digest('hex');
  }

  header(msgType: string): MessageHeader {
    return {
      msg_id: randomUUID(),
      session: this.session,
      username: this.username,
      date: new Date().toISOString(),
      msg_type: msgType,
      version: PROTOCOL_VERSION,
    };
  }

  /** A new message of `msgType` (optionally answering `parent`). */
  create<C>(msgType: string, content: C, parent?: JupyterMessage<unknown>, metadata: Record<string, unknown> = {}): JupyterMessage<C> {
    return { header: this.header(msgType), parent_header: parent ? parent.header : {}, metadata, content, buffers: [], identities: [] };
  }

  encode(msg: JupyterMessage<unknown>): Buffer[] {
    const parts = [msg.header, msg.parent_header, msg.metadata, msg.content].map((p) => Buffer.from(JSON.stringify(p ?? {}), 'utf8'));
    return [...msg.identities, Buffer.from(DELIMITER), Buffer.from(this.sign(parts)), ...parts, ...msg.buffers];
  }

  /** Parse and verify wire frames; throws MessageError on a bad signature or layout. */
  decode(frames: readonly Buffer[]): JupyterMessage {
    const at = frames.findIndex((f) => f.length === DELIMITER.length && f.toString('latin1') === DELIMITER);
    if (at < 0) throw new MessageError('message has no <IDS|MSG> delimiter');
    if (frames.length < at + 6) throw new MessageError(`message has ${frames.length - at - 1} frames after the delimiter, expected at least 5`);
    const signature = frames[at + 1]!;
    const parts = frames.slice(at + 2, at + 6);
    if (this.key !== '') {
      const expected = Buffer.from(this.sign(parts));
      if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) {
        throw new MessageError('message signature does not match the connection key');
      }
    }
    const json = (b: Buffer, name: string): any => {
      try {
        return JSON.parse(b.toString('utf8'));
      } catch (err) {
        throw new MessageError(`message ${name} is not JSON: ${(err as Error).message}`);
      }
    };
    const header = json(parts[0]!, 'header') as MessageHeader;
    if (!header || typeof header.msg_type !== 'string') throw new MessageError('message header has no msg_type');
    return {
      identities: frames.slice(0, at),
      header,
      parent_header: json(parts[1]!, 'parent_header') ?? {},
      metadata: json(parts[2]!, 'metadata') ?? {},
      content: json(parts[3]!, 'content') ?? {},
      buffers: frames.slice(at + 6),
    };
  }
}
