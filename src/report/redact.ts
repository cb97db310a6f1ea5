/**
 * Secrets never leave the process. One redactor serves reports, executed notebooks, logs and the
 * CLI's own stdout/stderr ({@link installOutputRedaction}). A Redactor knows secret values (any
 * environment variable whose name contains KEY, TOKEN, SECRET, PASSWORD or AUTH; string values
 * under such keys in parameters, configs and payloads) and secret shapes (sk-… keys, Hugging Face /
 * GitHub / Slack / Stripe-style tokens, AWS access key ids and secret access keys, bare JWTs,
 * Authorization headers and Bearer tokens, passwords in URLs, `SERVICE_KEY=…`-style assignments),
 * and scrubs them from text and JSON.
 *
 * A secret printed in pieces (two halves by two console.log calls) is caught too: a secret-looking
 * value is also scrubbed wherever a run of 8 or more of its characters appears
 * ({@link PIECE}); and {@link RedactingWriter} holds back a partial line (which may be the start
 * of a secret) until the line ends or a moment passes.
 */
import type { Notebook, Output } from './nbformat.js';
import { joinText } from './nbformat.js';

export const REDACTED = '[REDACTED]';

/**
 * Environment variable names that hold secrets: any name containing KEY, TOKEN or AUTH as a word
 * of the name (SERVICE_KEY, APIKEY, DEPLOY_AUTH, HF_TOKEN; not KEYBOARD, AUTHOR, MAX_TOKENS), or
 * SECRET, PASSWORD, CREDENTIAL anywhere.
 */
const SECRET_ENV = /(^|_)(KEY|AUTH|TOKEN)(_|$)|(KEY|AUTH|TOKEN)$|SECRET|PASSWORD|PASSWD|CREDENTIAL|(^|_)PASS$/i;
/** Environment variables whose names match but hold no secret (paths, sockets, ordinary settings). */
const NOT_SECRET_ENV = /^(SSH_AUTH_SOCK|XAUTHORITY|KEYMAP|GPG_AGENT_INFO|.*_KEYRING.*)$/i;
/** Shortest run of a secret's characters that is scrubbed on its own (a secret printed in pieces). */
export const PIECE = 8;
/** JSON/config keys that hold secrets (camelCase or snake_case). */
const SECRET_KEY =
  /(api[_-]?key|apikey|access[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token|bearer|^token$|[_-]token$|[a-z]Token$|secret|passw(or)?d|authorization|credentials?|private[_-]?key|(service|deploy|signing|master|client|session|encryption|license)[_-]?key|[_-]auth|[a-z]Auth)$|secret/i;
/** Keys that look secret but name vocabulary items of a tokenizer or model config. */
const NOT_SECRET_KEY =
  /(eos|bos|pad|unk|sep|cls|mask|image|vision|video|audio|start|end|special|max|num|n)[_-]?tokens?$|tokens$/i;

const PATTERNS: [RegExp, string][] = [
  [/\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}/g, REDACTED],
  [/\bhf_[A-Za-z0-9]{30,}\b/g, REDACTED],
  [/\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}/g, REDACTED],
  [/\bxox[abprs]-[A-Za-z0-9-]{10,}/g, REDACTED],
  [/\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g, REDACTED],
  // Stripe-style live/test keys and tokens: sk_live_…, tok_live_…
  [/\b(?:sk|pk|rk|tok|whsec|acct)_(?:live|test)_[A-Za-z0-9]{8,}/g, REDACTED],
  // A bare JWT: base64url header . payload . signature (the header is JSON: "eyJ")
  [/\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g, REDACTED],
  // Assignments to secret-named variables: SERVICE_KEY=…, DEPLOY_AUTH: "…", export GH_TOKEN=…
  [
    /\b((?:[A-Z0-9]+_)*(?:[A-Z0-9]*(?:KEY|TOKEN|AUTH)|[A-Z0-9]*(?:SECRET|PASSWORD|PASSWD)[A-Z0-9]*)(?:_[A-Z0-9]+)*["']?\s*[:=]\s*["']?)([^\s"',;}]{6,})/g,
    `$1${REDACTED}`,
  ],
  // Authorization: Bearer …, "authorization": "…", authorization=…
  [/(\bauthorization\b["']?\s*[:=]\s*["']?)((?:bearer|basic|token)\s+)?[^\s"',;}]+/gi, `$1$2${REDACTED}`],
  [/(\bx-api-key\b["']?\s*[:=]\s*["']?)[^\s"',;}]+/gi, `$1${REDACTED}`],
  [/\b(bearer)\s+[A-Za-z0-9._~+/=-]{12,}/gi, `$1 ${REDACTED}`],
  // scheme://user:password@host
  [/\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]+:)[^\s@/]+@/gi, `$1${REDACTED}@`],
];

export function isSecretEnvName(name: string): boolean {
  return SECRET_ENV.test(name) && !NOT_SECRET_ENV.test(name);
}

/** An AWS secret access key: 40 characters of base64 with upper and lower case and a digit (not a hex digest). */
const AWS_SECRET = /(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])/g;
function looksLikeAwsSecret(s: string): boolean {
  return /[A-Z]/.test(s) && /[a-z]/.test(s) && /[0-9]/.test(s);
}

/** A value that looks like a credential (long, no spaces or path separators, mixed characters): its pieces are scrubbed too. */
function secretLooking(v: string): boolean {
  if (v.length < 2 * PIECE || /[\s/\\]/.test(v)) return false;
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((re) => re.test(v)).length;
  return classes >= 2;
}

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key) && !NOT_SECRET_KEY.test(key);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export class Redactor {
  private readonly secrets = new Map<string, string>();
  private valueRe: RegExp | null = null;
  /** Every PIECE-character run of each secret-looking value → its label. */
  private readonly pieces = new Map<string, string>();
  /** How many replacements were made (for the CLI's summary line). */
  count = 0;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    for (const [name, value] of Object.entries(env)) {
      if (value && isSecretEnvName(name)) this.addSecret(value, name);
    }
  }

  /** Remember a secret value; values shorter than 6 characters are too common to scrub safely. */
  addSecret(value: string, label = ''): void {
    if (value.length < 6 || this.secrets.has(value)) return;
    this.secrets.set(value, label ? `[REDACTED:${label}]` : REDACTED);
    this.valueRe = null;
    if (secretLooking(value))
      for (let i = 0; i + PIECE <= value.length; i++)
        this.pieces.set(value.slice(i, i + PIECE), label ? `[REDACTED:${label}]` : REDACTED);
  }

  /** Scrub every run of PIECE or more characters that lies inside a known secret (a secret printed in pieces). */
  private scrubPieces(s: string): string {
    if (this.pieces.size === 0 || s.length < PIECE) return s;
    const cover = new Uint8Array(s.length);
    let any = false;
    let label = REDACTED;
    for (let i = 0; i + PIECE <= s.length; i++) {
      const hit = this.pieces.get(s.slice(i, i + PIECE));
      if (hit !== undefined) {
        cover.fill(1, i, i + PIECE);
        any = true;
        label = hit;
      }
    }
    if (!any) return s;
    let out = '';
    for (let i = 0; i < s.length; ) {
      if (!cover[i]) {
        out += s[i];
        i++;
        continue;
      }
      while (i < s.length && cover[i]) i++;
      out += label;
      this.count++;
    }
    return out;
  }

  /** Learn the string values under secret-named keys anywhere in `value` (before scrubbing text). */
  collectFrom(value: unknown, key = ''): void {
    if (typeof value === 'string') {
      if (key && isSecretKey(key)) this.addSecret(value, key);
    } else if (Array.isArray(value)) {
      for (const v of value) this.collectFrom(v, key);
    } else if (value && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) this.collectFrom(v, k);
    }
  }

  text(s: string): string {
    let out = s;
    if (this.secrets.size) {
      // Longest first, so a secret containing another is replaced whole.
      this.valueRe ??= new RegExp(
        [...this.secrets.keys()]
          .sort((a, b) => b.length - a.length)
          .map(escapeRegExp)
          .join('|'),
        'g',
      );
      out = out.replace(this.valueRe, (m) => {
        this.count++;
        return this.secrets.get(m) ?? REDACTED;
      });
    }
    out = this.scrubPieces(out);
    for (const [re, replacement] of PATTERNS) {
      out = out.replace(re, (...args) => {
        const m = args[0] as string;
        if (m.includes(REDACTED)) return m; // already scrubbed
        this.count++;
        const groups = args.slice(1, -2) as (string | undefined)[];
        return replacement.replace(/\$(\d)/g, (_, i: string) => groups[Number(i) - 1] ?? '');
      });
    }
    out = out.replace(AWS_SECRET, (m) => {
      if (!looksLikeAwsSecret(m)) return m;
      this.count++;
      return REDACTED;
    });
    return out;
  }

  /** A scrubbed deep copy: string values under secret-named keys become [REDACTED], other strings are scrubbed. */
  json<T>(value: T, key = ''): T {
    if (typeof value === 'string') {
      if (key && isSecretKey(key) && value !== '') {
        this.count++;
        return REDACTED as T;
      }
      return this.text(value) as T;
    }
    if (Array.isArray(value)) return value.map((v) => this.json(v, key)) as T;
    if (value && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) out[k] = this.json(v, k);
      return out as T;
    }
    return value;
  }

  private bundle(data: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [mime, v] of Object.entries(data)) {
      // Base64 images cannot hold readable secrets; scrubbing them would only corrupt them.
      out[mime] = /^image\/(png|jpeg|gif|webp|bmp)$/.test(mime)
        ? v
        : typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string'))
          ? this.text(joinText(v as string | string[]))
          : this.json(v);
    }
    return out;
  }

  output(o: Output): Output {
    switch (o.output_type) {
      case 'stream':
        return { ...o, text: this.text(joinText(o.text)) };
      case 'error':
        return { ...o, evalue: this.text(o.evalue), traceback: o.traceback.map((t) => this.text(t)) };
      default:
        return { ...o, data: this.bundle(o.data), metadata: this.json(o.metadata) };
    }
  }

  /** Learn secrets from every JSON payload of the notebook, then scrub sources, outputs and metadata. */
  notebook(nb: Notebook): Notebook {
    for (const cell of nb.cells) {
      if (cell.cell_type === 'code') for (const o of cell.outputs) if ('data' in o) this.collectFrom(o.data);
    }
    this.collectFrom(nb.metadata);
    const copy = structuredClone(nb);
    copy.metadata = this.json(copy.metadata);
    for (const cell of copy.cells) {
      cell.source = this.text(joinText(cell.source));
      if (cell.cell_type === 'code') cell.outputs = cell.outputs.map((o) => this.output(o));
    }
    return copy;
  }
}

/**
 * A write function that redacts what passes through it. Complete lines go out at once, scrubbed;
 * a partial line (maybe the first half of a secret) is held back until its line ends, more text
 * comes, or `holdMs` passes, so a secret written in pieces is scrubbed as a whole.
 */
export class RedactingWriter {
  private held = '';
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly redactor: Redactor,
    private readonly out: (text: string) => void,
    private readonly holdMs = 50,
  ) {}

  write(text: string): void {
    this.held += text;
    const cut = Math.max(this.held.lastIndexOf('\n'), this.held.lastIndexOf('\r'));
    if (cut >= 0) {
      const complete = this.held.slice(0, cut + 1);
      this.held = this.held.slice(cut + 1);
      this.out(this.redactor.text(complete));
    }
    if (this.held && !this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, this.holdMs);
      this.timer.unref();
    }
  }

  /** Send what is held (scrubbed). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.held) return;
    const text = this.held;
    this.held = '';
    this.out(this.redactor.text(text));
  }
}

let installed: { redactor: Redactor; restore: () => void } | null = null;

/**
 * Route this process's stdout and stderr (process.stdout.write, console.*) through one Redactor
 * (the CLI calls this first). Returns the redactor; `restore()` puts the streams back.
 */
export function installOutputRedaction(env: NodeJS.ProcessEnv = process.env): {
  redactor: Redactor;
  restore: () => void;
} {
  if (installed) return installed;
  const redactor = new Redactor(env);
  const restores: (() => void)[] = [];
  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
    const writer = new RedactingWriter(redactor, (t) => {
      original(t);
    });
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const text =
        typeof chunk === 'string'
          ? chunk
          : chunk instanceof Uint8Array
            ? Buffer.from(chunk).toString('utf8')
            : String(chunk);
      writer.write(text);
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      if (cb) process.nextTick(cb);
      return true;
    }) as typeof stream.write;
    process.once('exit', () => writer.flush());
    restores.push(() => {
      writer.flush();
      stream.write = original as typeof stream.write;
    });
  }
  installed = {
    redactor,
    restore: () => {
      for (const r of restores) r();
      installed = null;
    },
  };
  return installed;
}
