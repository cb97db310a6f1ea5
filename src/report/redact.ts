/**
 * Secrets never reach a report. A Redactor knows secret values (environment variables named like
 * *_API_KEY, *_TOKEN, *SECRET*, *PASSWORD*; string values under such keys in parameters, configs
 * and payloads) and secret shapes (sk-… keys, Hugging Face / GitHub / Slack / AWS tokens,
 * Authorization headers, passwords in URLs), and scrubs them from text and JSON.
 */
import type { Notebook, Output } from './nbformat.js';
import { joinText } from './nbformat.js';

export const REDACTED = '[REDACTED]';

/** Environment variable names that hold secrets. */
const SECRET_ENV = /(^|_)(API_?KEY|TOKEN|ACCESS_?KEY|AUTH_?KEY|PRIVATE_?KEY|PASSWORD|PASSWD|PASS)$|SECRET|CREDENTIAL|^(TOKEN|API_?KEY)$/i;
/** JSON/config keys that hold secrets (camelCase or snake_case). */
const SECRET_KEY = /(api[_-]?key|apikey|access[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token|bearer|^token$|[_-]token$|[a-z]Token$|secret|passw(or)?d|authorization|credentials?|private[_-]?key)$|secret/i;
/** Keys that look secret but name vocabulary items of a tokenizer or model config. */
const NOT_SECRET_KEY = /(eos|bos|pad|unk|sep|cls|mask|image|vision|video|audio|start|end|special|max|num|n)[_-]?tokens?$|tokens$/i;

const PATTERNS: [RegExp, string][] = [
  [/\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}/g, REDACTED],
  [/\bhf_[A-Za-z0-9]{30,}\b/g, REDACTED],
  [/\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{40,}/g, REDACTED],
  [/\bxox[abprs]-[A-Za-z0-9-]{10,}/g, REDACTED],
  [/\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g, REDACTED],
  // Authorization: Bearer …, "authorization": "…", authorization=…
  [/(\bauthorization\b["']?\s*[:=]\s*["']?)((?:bearer|basic|token)\s+)?[^\s"',;}]+/gi, `$1$2${REDACTED}`],
  [/(\bx-api-key\b["']?\s*[:=]\s*["']?)[^\s"',;}]+/gi, `$1${REDACTED}`],
  [/\b(bearer)\s+[A-Za-z0-9._~+/=-]{16,}/gi, `$1 ${REDACTED}`],
  // scheme://user:password@host
  [/\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]+:)[^\s@/]+@/gi, `$1${REDACTED}@`],
];

export function isSecretEnvName(name: string): boolean {
  return SECRET_ENV.test(name);
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
      this.valueRe ??= new RegExp([...this.secrets.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp).join('|'), 'g');
      out = out.replace(this.valueRe, (m) => {
        this.count++;
        return this.secrets.get(m) ?? REDACTED;
      });
    }
    for (const [re, replacement] of PATTERNS) {
      out = out.replace(re, (...args) => {
        this.count++;
        const groups = args.slice(1, -2) as (string | undefined)[];
        return replacement.replace(/\$(\d)/g, (_, i: string) => groups[Number(i) - 1] ?? '');
      });
    }
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
      out[mime] = /^image\/(png|jpeg|gif|webp|bmp)$/.test(mime) ? v
        : typeof v === 'string' || Array.isArray(v) && v.every((x) => typeof x === 'string') ? this.text(joinText(v as string | string[]))
        : this.json(v);
    }
    return out;
  }

  output(o: Output): Output {
    switch (o.output_type) {
      case 'stream': return { ...o, text: this.text(joinText(o.text)) };
      case 'error': return { ...o, evalue: this.text(o.evalue), traceback: o.traceback.map((t) => this.text(t)) };
      default: return { ...o, data: this.bundle(o.data), metadata: this.json(o.metadata) };
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
