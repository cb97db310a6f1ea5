/**
 * Progress for long commands: on a terminal one line rewritten in place (count, rate, ETA);
 * elsewhere (CI logs, pipes) a plain line at most every `logEveryMs`, so logs stay short.
 */
export interface ProgressOptions {
  label: string;
  /** Total units if known; enables percent and ETA. */
  total?: number;
  unit?: string;
  stream?: NodeJS.WriteStream;
  /** Minimum time between non-TTY lines. */
  logEveryMs?: number;
  /** Silence all output (for library use). */
  quiet?: boolean;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
  const m = Math.floor(seconds / 60),
    s = Math.round(seconds % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export class Progress {
  private count = 0;
  private readonly start = performance.now();
  private lastDraw = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;

  constructor(private readonly opts: ProgressOptions) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = Boolean(this.stream.isTTY) && !process.env.CI;
  }

  tick(n = 1): void {
    this.count += n;
    const now = performance.now();
    const every = this.tty ? 100 : (this.opts.logEveryMs ?? 10_000);
    if (now - this.lastDraw >= every) {
      this.lastDraw = now;
      this.draw(false);
    }
  }

  done(): void {
    this.draw(true);
  }

  private line(): string {
    const elapsed = (performance.now() - this.start) / 1000;
    const rate = elapsed > 0 ? this.count / elapsed : 0;
    const unit = this.opts.unit ?? 'items';
    let s = `${this.opts.label}: ${this.count.toLocaleString('en-US')}`;
    if (this.opts.total !== undefined) {
      const pct = this.opts.total > 0 ? (100 * this.count) / this.opts.total : 100;
      s += `/${this.opts.total.toLocaleString('en-US')} (${pct.toFixed(1)}%)`;
    }
    s += ` ${unit}, ${rate.toFixed(rate < 10 ? 1 : 0)} ${unit}/s, ${formatDuration(elapsed)} elapsed`;
    if (this.opts.total !== undefined && rate > 0)
      s += `, ETA ${formatDuration((this.opts.total - this.count) / rate)}`;
    return s;
  }

  private draw(final: boolean): void {
    if (this.opts.quiet) return;
    if (this.tty) this.stream.write(`\r\x1b[K${this.line()}${final ? '\n' : ''}`);
    else this.stream.write(`${this.line()}\n`);
  }
}
