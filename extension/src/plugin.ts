/**
 * vqalab's JupyterLab 4 application plugin (beside the MIME renderers of index.ts, in the same
 * prebuilt extension):
 *   - a **Runs** side panel: the training runs under the active notebook's folder (folders holding
 *     a metrics.jsonl, with their checkpoints/), read through the Jupyter server's contents API
 *     and /files/;
 *     the checked runs overlaid in one metrics widget, refreshed while a run writes; a run's
 *     config and facts (its latest checkpoint's trainer.json) on click;
 *   - **Export as reproducible report** (palette, File menu, notebook toolbar): saves the notebook,
 *     runs `vqalab report run` on it in a short-lived vqalab kernel started beside it (no server
 *     extension), and opens the report in a new browser tab; progress and errors are notifications;
 *   - a **status bar item** for the active notebook's training run (step N/M, ETA, last reward,
 *     from its live dashboard output) with a "stop at step boundary" button: a kernel interrupt,
 *     which is what Ctrl-C does (the trainer stops at its next step boundary, the kernel lives).
 */
import type { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification, ToolbarButton } from '@jupyterlab/apputils';
import { PageConfig, PathExt, URLExt } from '@jupyterlab/coreutils';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker, type NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection, type Contents } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { listIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import type { MetricsPayload, MetricsPoint, MetricsProgress } from '../../src/display/types.js';
import { Mounted } from './hydrate.js';
import { setPlotlyLoader, type PlotlyLike } from './plotly.js';

// This bundle has its own copy of the plotly loader (index.ts sets the renderers'); webpack fetches
// the one shared chunk.
setPlotlyLoader(() =>
  import(/* webpackChunkName: "plotly" */ 'plotly.js-basic-dist-min').then(
    (m: { default?: unknown }) => (m.default ?? m) as PlotlyLike,
  ),
);

const STYLE = `
.vqa-runs-panel{display:flex;flex-direction:column;gap:8px;padding:8px;overflow:auto;background:var(--jp-layout-color1);color:var(--jp-ui-font-color1);font-size:var(--jp-ui-font-size1)}
.vqa-runs-head{display:flex;justify-content:space-between;align-items:center;gap:8px;font-weight:600}
.vqa-runs-list{list-style:none;margin:0;padding:0}
.vqa-runs-item{display:flex;flex-wrap:wrap;align-items:center;gap:6px;padding:3px 0;border-bottom:1px solid var(--jp-border-color2)}
.vqa-runs-item.vqa-selected{background:var(--jp-layout-color2)}
.vqa-runs-facts{color:var(--jp-ui-font-color2);flex:1}
.vqa-runs-config{max-height:320px;overflow:auto;font-size:var(--jp-code-font-size);background:var(--jp-layout-color2);padding:6px}
.vqa-runs-error{color:var(--jp-error-color1)}
.vqa-run-status{display:flex;align-items:center;gap:6px}
.vqa-run-status[hidden],.vqa-run-stop[hidden]{display:none}
.vqa-run-stop{font-size:var(--jp-ui-font-size0);padding:0 6px}
`;

const METRICS_MIME = 'application/vnd.vqalab.metrics.v1+json';
const KERNEL_NAME = 'vqalab';
export const EXPORT_COMMAND = 'vqalab:export-report';
const REFRESH_MS = 1500;

/** The trainer's metrics.jsonl names → the dashboard's (src/display/training.ts METRIC_NAMES). */
const METRIC_NAMES: [string, string][] = [
  ['rewardMean', 'reward'],
  ['rewardStd', 'reward_std'],
  ['accuracy', 'accuracy'],
  ['kl', 'kl'],
  ['entropy', 'entropy'],
  ['completionLength', 'completion_length'],
  ['loss', 'loss'],
  ['gradNorm', 'grad_norm'],
  ['learningRate', 'lr'],
];

/** One line of metrics.jsonl → a plot point; null for a line that is not (yet) a whole JSON object. */
export function pointOf(line: string): MetricsPoint | null {
  let row: Record<string, unknown>;
  try {
    row = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null; // the line a run is writing right now
  }
  if (!row || typeof row !== 'object' || typeof row.step !== 'number') return null;
  const p: MetricsPoint = { step: row.step };
  for (const [from, to] of METRIC_NAMES) {
    const v = row[from];
    if (typeof v === 'number' && Number.isFinite(v)) p[to] = v;
  }
  return p;
}

interface Run {
  /** Server path of the run's folder. */
  path: string;
  name: string;
  metricsModified: string;
  points: MetricsPoint[];
  /** The latest checkpoint's folder name (checkpoints/latest), if any. */
  latest: string | null;
}

namespace Private {
  export function el<K extends keyof HTMLElementTagNameMap>(
    tag: K,
    cls?: string,
    text?: string,
  ): HTMLElementTagNameMap[K] {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  export function duration(s: number): string {
    if (!Number.isFinite(s)) return '?';
    const m = Math.floor(s / 60),
      sec = Math.round(s % 60);
    return m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
  }

  /**
   * A file's text through the server's /files/ handler. Used for paths the contents API cannot
   * serve: it reserves ".../checkpoints" and ".../checkpoints/<id>" (a file's checkpoint list), so
   * a run's checkpoints/ folder and checkpoints/latest are read here.
   */
  export async function fileText(settings: ServerConnection.ISettings, path: string): Promise<string | null> {
    const r = await ServerConnection.makeRequest(
      URLExt.join(settings.baseUrl, 'files', URLExt.encodeParts(path)),
      { cache: 'no-store' },
      settings,
    );
    return r.ok ? r.text() : null;
  }

  export async function list(contents: Contents.IManager, path: string): Promise<Contents.IModel[]> {
    try {
      const m = await contents.get(path, { content: true });
      return m.type === 'directory' ? (m.content as Contents.IModel[]) : [];
    } catch {
      return [];
    }
  }
}

/** The Runs side panel. */
export class RunsPanel extends Widget {
  private readonly runs = new Map<string, Run>();
  private readonly hidden = new Set<string>();
  private folder: string | null = null;
  private timer: number | undefined;
  private refreshing: Promise<void> | null = null;
  private readonly listNode: HTMLUListElement;
  private readonly headNode: HTMLElement;
  private readonly plotHost: HTMLElement;
  private readonly detailsNode: HTMLElement;
  private mounted: Mounted | null = null;
  private selected: string | null = null;

  constructor(
    private readonly contents: Contents.IManager,
    private readonly settings: ServerConnection.ISettings,
    private readonly tracker: INotebookTracker,
  ) {
    super();
    this.id = 'vqalab-runs';
    this.addClass('vqa-runs-panel');
    this.title.caption = 'vqalab training runs';
    this.title.icon = listIcon;
    this.node.dataset.lmSuppressShortcuts = 'true';
    this.headNode = Private.el('div', 'vqa-runs-head');
    this.listNode = Private.el('ul', 'vqa-runs-list');
    this.plotHost = Private.el('div', 'vqa-runs-plot');
    this.detailsNode = Private.el('div', 'vqa-runs-details');
    this.node.append(this.headNode, this.listNode, this.plotHost, this.detailsNode);
    this.tracker.currentChanged.connect(() => void this.refresh());
    this.renderHead();
  }

  /** The folder whose runs are shown: the active notebook's, else the server root. */
  private currentFolder(): string {
    const p = this.tracker.currentWidget?.context.path;
    return p ? PathExt.dirname(p) : '';
  }

  protected override onAfterShow(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), REFRESH_MS);
  }

  protected override onBeforeHide(): void {
    window.clearInterval(this.timer);
    this.timer = undefined;
  }

  override dispose(): void {
    window.clearInterval(this.timer);
    this.mounted?.dispose();
    super.dispose();
  }

  /** Look for runs again and re-read the metrics files that changed (one refresh at a time). */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    const folder = this.currentFolder();
    if (folder !== this.folder) {
      this.folder = folder;
      this.runs.clear();
      this.selected = null;
    }
    // Run folders: the folder itself and its sub-folders two levels down that hold metrics.jsonl.
    const found = new Map<string, { metrics: Contents.IModel; checkpoints: boolean }>();
    const visit = async (dir: string, depth: number): Promise<void> => {
      const items = await Private.list(this.contents, dir);
      const metrics = items.find((i) => i.type === 'file' && i.name === 'metrics.jsonl');
      if (metrics)
        found.set(dir, { metrics, checkpoints: items.some((i) => i.type === 'directory' && i.name === 'checkpoints') });
      if (depth === 0) return;
      const dirs = items.filter(
        (i) =>
          i.type === 'directory' &&
          !i.name.startsWith('.') &&
          !['checkpoints', 'reference', 'node_modules', 'model'].includes(i.name),
      );
      await Promise.all(dirs.slice(0, 64).map((d) => visit(d.path, depth - 1)));
    };
    await visit(folder, 2);
    for (const key of [...this.runs.keys()]) if (!found.has(key)) this.runs.delete(key);
    await Promise.all(
      [...found].map(async ([dir, { metrics, checkpoints }]) => {
        const old = this.runs.get(dir);
        if (old && old.metricsModified === metrics.last_modified) return;
        let text = '';
        try {
          text = String(
            (await this.contents.get(metrics.path, { content: true, format: 'text', type: 'file' })).content ?? '',
          );
        } catch {
          return;
        }
        const points = text
          .split('\n')
          .map(pointOf)
          .filter((p): p is MetricsPoint => p !== null);
        const latest = !checkpoints
          ? null
          : (await Private.fileText(this.settings, PathExt.join(dir, 'checkpoints', 'latest')))?.trim() || null;
        const name = dir === folder ? PathExt.basename(dir) || 'run' : PathExt.relative(folder, dir) || dir;
        this.runs.set(dir, { path: dir, name, metricsModified: metrics.last_modified, points, latest });
      }),
    );
    this.render();
  }

  private renderHead(): void {
    this.headNode.replaceChildren();
    const title = Private.el('span', 'vqa-runs-title', `Runs in ${this.folder ? this.folder : 'the root folder'}`);
    const refresh = Private.el('button', 'vqa-runs-refresh', 'Refresh');
    refresh.type = 'button';
    refresh.addEventListener('click', () => void this.refresh());
    this.headNode.append(title, refresh);
  }

  private render(): void {
    this.renderHead();
    const runs = [...this.runs.values()].sort((a, b) => a.name.localeCompare(b.name));
    this.listNode.replaceChildren();
    if (runs.length === 0) {
      this.listNode.append(
        Private.el('li', 'vqa-runs-empty', 'No runs here yet: a Trainer with an outputDir writes metrics.jsonl there.'),
      );
    }
    for (const run of runs) {
      const li = Private.el('li', 'vqa-runs-item');
      li.dataset.run = run.path;
      const label = Private.el('label');
      const box = Private.el('input');
      box.type = 'checkbox';
      box.checked = !this.hidden.has(run.path);
      box.addEventListener('change', () => {
        if (box.checked) this.hidden.delete(run.path);
        else this.hidden.add(run.path);
        this.render();
      });
      label.append(box, Private.el('span', 'vqa-runs-name', run.name));
      const last = run.points[run.points.length - 1];
      const facts =
        `${run.points.length} step${run.points.length === 1 ? '' : 's'}` +
        `${run.latest ? ` · ${run.latest}` : ''}` +
        `${last && typeof last.reward === 'number' ? ` · reward ${last.reward.toFixed(3)}` : ''}`;
      const info = Private.el('button', 'vqa-runs-info', 'Details');
      info.type = 'button';
      info.addEventListener('click', () => void this.showDetails(run.path));
      li.append(label, Private.el('span', 'vqa-runs-facts', facts), info);
      if (run.path === this.selected) li.classList.add('vqa-selected');
      this.listNode.append(li);
    }
    const shown = runs.filter((r) => !this.hidden.has(r.path) && r.points.length > 0);
    if (shown.length === 0) {
      this.mounted?.dispose();
      this.mounted = null;
      this.plotHost.replaceChildren();
      return;
    }
    const payload: MetricsPayload = {
      title: 'Runs',
      runs: shown.map((r) => ({ name: r.name, points: r.points })),
      keys: ['reward', 'loss', 'kl'].filter((k) => shown.some((r) => r.points.some((p) => typeof p[k] === 'number'))),
    };
    if (!this.mounted) this.mounted = new Mounted(this.plotHost, METRICS_MIME);
    this.mounted.render(payload);
    this.plotHost.dataset.runs = String(shown.length);
    this.plotHost.dataset.points = String(shown.reduce((n, r) => n + r.points.length, 0));
  }

  /** A run's config and facts: its latest checkpoint's trainer.json (without the metrics history). */
  private async showDetails(dir: string): Promise<void> {
    this.selected = dir;
    const run = this.runs.get(dir);
    this.detailsNode.replaceChildren(Private.el('h3', undefined, run?.name ?? dir));
    const latest = run?.latest;
    if (!latest) {
      this.detailsNode.append(
        Private.el(
          'p',
          'vqa-runs-note',
          'No checkpoint yet: the config and facts are saved with each checkpoint (trainer.json).',
        ),
      );
    } else {
      try {
        const text = await Private.fileText(this.settings, PathExt.join(dir, 'checkpoints', latest, 'trainer.json'));
        if (text === null) throw new Error('not found');
        const data = JSON.parse(text) as Record<string, unknown>;
        delete data.metrics;
        this.detailsNode.append(
          Private.el('p', 'vqa-runs-note', `${latest}/trainer.json`),
          Private.el('pre', 'vqa-runs-config', JSON.stringify(data, null, 1)),
        );
      } catch (err) {
        this.detailsNode.append(
          Private.el('p', 'vqa-runs-error', `Could not read ${latest}/trainer.json: ${(err as Error).message}`),
        );
      }
    }
    this.render();
  }
}

/** The newest live-dashboard payload among a notebook's outputs (null when none). */
function latestDashboard(panel: NotebookPanel): MetricsPayload | null {
  const cells = panel.content.model?.cells;
  if (!cells) return null;
  let found: MetricsPayload | null = null;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    const outputs = (
      cell as unknown as { outputs: { length: number; get(j: number): { data: Record<string, unknown> } } }
    ).outputs;
    for (let j = 0; j < outputs.length; j++) {
      const d = outputs.get(j).data[METRICS_MIME] as MetricsPayload | undefined;
      if (d && d.progress) found = d;
    }
  }
  return found;
}

/** Status bar: the active notebook's run, and the stop button. */
export class RunStatus extends Widget {
  private readonly text: HTMLElement;
  private readonly stop: HTMLButtonElement;
  private stopping = false;
  private lastStep = -1;

  constructor(private readonly tracker: INotebookTracker) {
    super();
    this.addClass('vqa-run-status');
    this.text = Private.el('span', 'vqa-run-status-text');
    this.stop = Private.el('button', 'vqa-run-stop', 'Stop at step boundary');
    this.stop.type = 'button';
    this.stop.title =
      'Interrupt the kernel (as Ctrl-C): the trainer finishes its current step and stops; the kernel stays alive';
    this.stop.addEventListener('click', () => void this.interrupt());
    this.node.append(this.text, this.stop);
    window.setInterval(() => this.refreshStatus(), 500);
    this.refreshStatus();
  }

  private async interrupt(): Promise<void> {
    const kernel = this.tracker.currentWidget?.sessionContext.session?.kernel;
    if (!kernel) return;
    this.stopping = true;
    this.refreshStatus();
    await kernel.interrupt();
  }

  refreshStatus(): void {
    const panel = this.tracker.currentWidget;
    const dash = panel ? latestDashboard(panel) : null;
    const pr: MetricsProgress | undefined = dash?.progress;
    if (!panel || !pr) {
      this.node.hidden = true;
      return;
    }
    this.node.hidden = false;
    const points = dash!.runs[0]?.points ?? [];
    const reward = [...points].reverse().find((p) => typeof p.reward === 'number')?.reward;
    const running = pr.status === 'running';
    if (pr.step !== this.lastStep || !running) this.lastStep = pr.step;
    if (!running) this.stopping = false;
    this.text.textContent =
      `step ${pr.step}/${pr.total}` +
      (running && pr.etaSeconds !== null ? ` · ETA ${Private.duration(pr.etaSeconds)}` : '') +
      (reward !== undefined ? ` · reward ${reward.toFixed(3)}` : '') +
      (running ? (this.stopping ? ' · stopping…' : '') : ` · ${pr.status}`);
    this.node.dataset.status = pr.status;
    this.stop.hidden = !running;
    this.stop.disabled = this.stopping;
  }
}

/** The TypeScript cell the export kernel runs: `vqalab report run` on the notebook, its output streamed. */
export function exportCode(notebook: string, outDir: string): string {
  return `import { spawn } from "child_process";
import { existsSync } from "fs";
import * as path from "path";
const cli = path.resolve(path.dirname(process.argv[1] ?? ""), "../../bin/vqalab.js");
const argv = existsSync(cli) ? [process.execPath, cli] : ["vqalab"];
const exitCode: number = await new Promise((resolve, reject) => {
  const child = spawn(argv[0]!, [...argv.slice(1), "report", "run", ${JSON.stringify(notebook)}, "--out", ${JSON.stringify(outDir)}], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.on("data", (d: Buffer) => process.stdout.write(d));
  child.stderr!.on("data", (d: Buffer) => process.stderr.write(d));
  child.on("error", reject);
  child.on("close", (code: number | null) => resolve(code ?? 1));
});
if (exitCode !== 0) throw new Error("vqalab report run exited with " + exitCode);
`;
}

async function exportReport(app: JupyterFrontEnd, panel: NotebookPanel): Promise<string | undefined> {
  const nbPath = panel.context.path;
  const dir = PathExt.dirname(nbPath);
  const base = PathExt.basename(nbPath, '.ipynb');
  const outDir = PathExt.join('reports', base);
  const reportPath = PathExt.join(dir, outDir, 'report.html');
  const id = Notification.emit(`Exporting ${PathExt.basename(nbPath)}: saving…`, 'in-progress', { autoClose: false });
  const sessions = app.serviceManager.sessions;
  let session: Awaited<ReturnType<typeof sessions.startNew>> | undefined;
  try {
    await panel.context.save();
    Notification.update({
      id,
      message: `Exporting ${PathExt.basename(nbPath)}: running it with vqalab report run…`,
      type: 'in-progress',
    });
    session = await sessions.startNew({
      path: PathExt.join(dir, `.${base}.vqalab-export`),
      type: 'vqalab-export',
      name: `export ${base}`,
      kernel: { name: KERNEL_NAME },
    });
    const kernel = session.kernel;
    if (!kernel) throw new Error('the export kernel did not start');
    let lastLine = '';
    let errorText = '';
    const future = kernel.requestExecute({ code: exportCode(PathExt.basename(nbPath), outDir), stop_on_error: true });
    future.onIOPub = (msg) => {
      const t = msg.header.msg_type;
      if (t === 'stream') {
        const text = String((msg.content as { text?: string }).text ?? '');
        const lines = text
          .split(/[\r\n]+/)
          .map((l) => l.trim())
          .filter(Boolean);
        if (lines.length) {
          lastLine = lines[lines.length - 1]!;
          Notification.update({
            id,
            message: `Exporting ${PathExt.basename(nbPath)}: ${lastLine.slice(0, 160)}`,
            type: 'in-progress',
          });
        }
      } else if (t === 'error') {
        errorText = String((msg.content as { evalue?: string }).evalue ?? 'failed');
      }
    };
    const reply = await future.done;
    if ((reply.content as { status?: string }).status !== 'ok')
      throw new Error(`${errorText || 'the report run failed'}${lastLine ? ` (last output: ${lastLine})` : ''}`);
    const url = URLExt.join(PageConfig.getBaseUrl(), 'files', URLExt.encodeParts(reportPath));
    Notification.update({
      id,
      type: 'success',
      autoClose: 8000,
      message: `Report written: ${reportPath}`,
      actions: [
        {
          label: 'Open report',
          callback: () => {
            window.open(url, '_blank');
          },
        },
      ],
    });
    window.open(url, '_blank');
    return reportPath;
  } catch (err) {
    Notification.update({
      id,
      type: 'error',
      autoClose: false,
      message: `Export of ${PathExt.basename(nbPath)} failed: ${(err as Error).message}`,
    });
    return undefined;
  } finally {
    if (session) await session.shutdown().catch(() => undefined);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'vqalab-jupyterlab:plugin',
  description:
    'vqalab in JupyterLab: the Runs panel, Export as reproducible report, the training status and stop button.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IMainMenu, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    menu: IMainMenu | null,
    statusBar: IStatusBar | null,
  ) => {
    const style = document.createElement('style');
    style.textContent = STYLE;
    document.head.append(style);
    const panel = new RunsPanel(app.serviceManager.contents, app.serviceManager.serverSettings, tracker);
    app.shell.add(panel, 'left', { rank: 850 });

    app.commands.addCommand(EXPORT_COMMAND, {
      label: 'Export as Reproducible Report',
      caption: 'Save the notebook, run it with vqalab report run, and open the report',
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => (tracker.currentWidget ? exportReport(app, tracker.currentWidget) : undefined),
    });
    palette?.addItem({ command: EXPORT_COMMAND, category: 'vqalab' });
    menu?.fileMenu.addGroup([{ command: EXPORT_COMMAND }], 60);
    tracker.widgetAdded.connect((_t, nb) => {
      const button = new ToolbarButton({
        className: 'vqa-export-button',
        label: 'Report',
        tooltip: 'Export as reproducible report (vqalab report run)',
        onClick: () => void app.commands.execute(EXPORT_COMMAND),
      });
      nb.toolbar.insertAfter('cellType', 'vqalab-export', button);
    });

    if (statusBar) {
      const status = new RunStatus(tracker);
      statusBar.registerStatusItem('vqalab-jupyterlab:run-status', {
        item: status,
        align: 'left',
        rank: 10,
        isActive: () => true, // the item hides itself when the active notebook shows no training run
      });
    }
  },
};

export default plugin;
