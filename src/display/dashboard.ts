/**
 * The live training dashboard: one output (metrics plot + progress bar with ETA + latest group)
 * updated in place through a display id. Updates are throttled: a loop may call `log` thousands of
 * times a second, the front end gets at most one bundle per `intervalMs` (the newest state, sent
 * on the leading edge and again on the trailing edge), so nothing floods the notebook or the
 * kernel's socket. Without a sink (a script) it only keeps the state: `bundle()` returns it.
 */
import { expectInteger, expectNumber, invalidParameterError } from '../util/validate.js';
import { bundleFor } from './bundle.js';
import { emit, getDisplaySink, newDisplayId, type DisplaySink } from './output.js';
import {
  MIME,
  type GroupPayload,
  type MetricsPayload,
  type MetricsPoint,
  type MetricsProgress,
  type MetricsRun,
  type MimeBundle,
} from './types.js';

export interface DashboardOptions {
  title?: string;
  /** Steps planned; drives the progress bar and the ETA. */
  total?: number;
  /**
   * The `step` value of the first training step: 0 (default, steps are 0-based indices) or 1.
   * After logging step s, `s - firstStep + 1` of `total` steps are done.
   */
  firstStep?: number;
  /** This run's name in the legend (default "run"). */
  run?: string;
  /** Earlier runs to overlay (drawn first, in their colours). */
  compare?: MetricsRun[];
  keys?: string[];
  smoothing?: number;
  /** Least time between two bundles sent, in ms (default 500). */
  intervalMs?: number;
  /** Most points per run in a bundle; longer runs are thinned evenly, the newest point always kept (default 2000). */
  maxPoints?: number;
  sink?: DisplaySink;
  /** Clock in ms (tests). */
  now?: () => number;
}

/** Every n-th point so that at most `max` remain, keeping the last. */
export function thin(points: readonly MetricsPoint[], max: number): MetricsPoint[] {
  if (points.length <= max) return points.slice();
  const stride = Math.ceil(points.length / (max - 1));
  const out = points.filter((_, i) => i % stride === 0);
  if (out.at(-1) !== points.at(-1)) out.push(points.at(-1)!);
  return out;
}

export class Dashboard {
  readonly displayId: string;
  /** Bundles sent so far (the first is a display, the rest updates). */
  sent = 0;
  private readonly points: MetricsPoint[] = [];
  private group: GroupPayload | undefined;
  private status: MetricsProgress['status'] = 'running';
  private message: string | undefined;
  private readonly start: number;
  private firstStep: number | undefined;
  private firstStepAt = 0;
  private lastSent = -Infinity;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private dirty = false;
  private readonly now: () => number;
  private readonly interval: number;
  private readonly sink: DisplaySink | undefined;

  constructor(private readonly opts: DashboardOptions = {}) {
    if (opts.total !== undefined) expectInteger('total', opts.total, 0);
    if (opts.firstStep !== undefined) expectInteger('firstStep', opts.firstStep, 0, 1);
    this.interval = opts.intervalMs === undefined ? 500 : expectNumber('intervalMs', opts.intervalMs, 0);
    if (opts.maxPoints !== undefined) expectInteger('maxPoints', opts.maxPoints, 2);
    if (opts.smoothing !== undefined) expectNumber('smoothing', opts.smoothing, 0, 0.999);
    this.now = opts.now ?? (() => performance.now());
    this.start = this.now();
    this.sink = opts.sink ?? getDisplaySink();
    this.displayId = newDisplayId('vqalab-dashboard');
    if (this.sink) this.flush();
  }

  /** Record one step's metrics (`step` required); the display follows within `intervalMs`. */
  log(point: MetricsPoint): void {
    if (typeof point !== 'object' || point === null)
      throw invalidParameterError('point', 'metrics point with a numeric step', point);
    expectNumber('point.step', point.step);
    for (const [k, v] of Object.entries(point)) expectNumber(`point.${k}`, v);
    if (this.firstStep === undefined) {
      this.firstStep = point.step;
      this.firstStepAt = this.now();
    }
    this.points.push({ ...point });
    this.changed();
  }

  /** Show this group under the plot (the newest one wins). */
  setGroup(group: GroupPayload): void {
    this.group = group;
    this.changed();
  }

  /** Mark the run finished (or stopped/failed) and send the final state at once. */
  finish(status: 'done' | 'stopped' | 'error' = 'done', message?: string): MimeBundle {
    this.status = status;
    this.message = message;
    return this.flush();
  }

  /** The payload as it would be sent now. */
  payload(): MetricsPayload {
    const max = this.opts.maxPoints ?? 2000;
    const run: MetricsRun = { name: this.opts.run ?? 'run', points: thin(this.points, max) };
    const p: MetricsPayload = {
      runs: [...(this.opts.compare ?? []).map((r) => ({ name: r.name, points: thin(r.points, max) })), run],
    };
    if (this.opts.title !== undefined) p.title = this.opts.title;
    if (this.opts.keys !== undefined) p.keys = this.opts.keys;
    if (this.opts.smoothing !== undefined) p.smoothing = this.opts.smoothing;
    if (this.opts.total !== undefined) p.progress = this.progress(this.opts.total);
    if (this.group) p.latestGroup = this.group;
    return p;
  }

  bundle(): MimeBundle {
    return bundleFor(MIME.metrics, this.payload());
  }

  /** Send the current state now (cancels a pending trailing update). */
  flush(): MimeBundle {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const b = this.bundle();
    this.dirty = false;
    this.lastSent = this.now();
    if (this.sink) {
      emit(b, { displayId: this.displayId, update: this.sent > 0 }, this.sink);
      this.sent += 1;
    }
    return b;
  }

  /** What a notebook prints for the object (its output is the live widget, not this). */
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    const total = this.opts.total !== undefined ? ` of ${this.opts.total}` : '';
    return `Dashboard(${this.opts.run ?? 'run'}: ${this.points.length} points${total}, ${this.sent} sent, ${this.status}, display id ${this.displayId})`;
  }

  private progress(total: number): MetricsProgress {
    const nowMs = this.now();
    const elapsed = (nowMs - this.start) / 1000;
    const last = this.points.at(-1)?.step;
    const done = last === undefined ? 0 : last - (this.opts.firstStep ?? 0) + 1;
    const step = Math.max(0, Math.min(total, Math.round(done)));
    let eta: number | null = null;
    // Rate from the first logged step on, so start-up time (model load) does not skew the ETA.
    if (last !== undefined && this.firstStep !== undefined && last > this.firstStep) {
      const rate = (last - this.firstStep) / ((nowMs - this.firstStepAt) / 1000);
      if (rate > 0) eta = Math.max(0, (total - step) / rate);
    }
    const pr: MetricsProgress = { step, total, elapsedSeconds: elapsed, etaSeconds: eta, status: this.status };
    if (this.message !== undefined) pr.message = this.message;
    return pr;
  }

  private changed(): void {
    this.dirty = true;
    if (!this.sink) return;
    const wait = this.lastSent + this.interval - this.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (this.dirty) this.flush();
      }, wait);
      // A pending refresh must not keep a script alive.
      (this.timer as { unref?: () => void }).unref?.();
    }
  }
}

/** A live dashboard shown now (when a sink is installed) and updated in place. */
export function dashboard(options: DashboardOptions = {}): Dashboard {
  return new Dashboard(options);
}
