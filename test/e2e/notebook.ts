/**
 * The end-to-end notebook: every widget's bundle, made by our Node builders and emitted by the
 * kernel as raw display_data; a live dashboard whose frames come from the real Dashboard (recorded
 * through a sink) and are replayed by the kernel as update_display_data while a loop runs.
 *
 * Until the vqalab kernel is on main the notebook runs on python3-ipykernel (IPython.display with
 * raw bundles): what is under test here is the front end, not the kernel.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { bundleFor, sampleBundle } from '../../src/display/bundle.js';
import { Dashboard } from '../../src/display/dashboard.js';
import type { DisplayOptions } from '../../src/display/output.js';
import { MIME, type MimeBundle } from '../../src/display/types.js';
import * as fx from '../display/fixtures.js';

export const DASHBOARD_STEPS = 20;
/** Seconds the kernel waits between two dashboard frames. */
export const FRAME_SECONDS = 0.4;

/** Frames of a live dashboard: what a training loop of DASHBOARD_STEPS steps sends through its sink. */
export async function dashboardFrames(): Promise<{ bundle: MimeBundle; options?: DisplayOptions }[]> {
  const image = await fx.sceneImage();
  const frames: { bundle: MimeBundle; options?: DisplayOptions }[] = [];
  let clock = 0;
  const dash = new Dashboard({
    title: 'Live training', total: DASHBOARD_STEPS, run: 'live', intervalMs: 0, now: () => clock,
    compare: [{ name: 'previous run', points: fx.points(DASHBOARD_STEPS, 2) }],
    sink: { display: (bundle, options) => frames.push({ bundle: JSON.parse(JSON.stringify(bundle)), options }) },
  });
  const pts = fx.points(DASHBOARD_STEPS, 0);
  for (const pt of pts) {
    clock += 1500;
    dash.log(pt);
    if (pt.step % 5 === 4) dash.setGroup(fx.group(image, pt.step));
  }
  dash.finish('done');
  return frames;
}

function code(source: string): object {
  return { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source };
}

/** Writes bundles/*.json and widgets.ipynb into `dir`; returns the notebook's file name. */
export async function writeNotebook(dir: string): Promise<string> {
  const image = await fx.sceneImage();
  const bundles: Record<string, unknown> = {
    sample: await sampleBundle(fx.sample(image)),
    group: bundleFor(MIME.group, fx.group(image)),
    rewards: bundleFor(MIME.rewards, fx.rewardTable()),
    dataset: bundleFor(MIME.dataset, fx.dataset(image)),
    metrics: bundleFor(MIME.metrics, { ...fx.metrics(image), latestGroup: undefined, progress: undefined }),
  };
  // A producer bug: the vendor payload lacks a field. The front end must say which, in the cell.
  const bad = bundleFor(MIME.group, fx.group(image));
  delete (bad[MIME.group] as { completions: Record<string, unknown>[] }).completions[1]!.advantage;
  bundles.bad = bad;
  bundles.dashboard = (await dashboardFrames()).map((f) => f.bundle);
  mkdirSync(path.join(dir, 'bundles'), { recursive: true });
  for (const [name, b] of Object.entries(bundles)) writeFileSync(path.join(dir, 'bundles', `${name}.json`), JSON.stringify(b));
  const nb = {
    nbformat: 4, nbformat_minor: 5,
    metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
    cells: [
      { cell_type: 'markdown', metadata: {}, source: '# vqalab widgets\nEvery widget of the display contract, as the kernel sends it.' },
      code('import json, time\nfrom IPython.display import display\n\ndef bundle(name):\n    with open(f"bundles/{name}.json") as f:\n        return json.load(f)\n\ndisplay(bundle("sample"), raw=True)'),
      code('display(bundle("group"), raw=True)'),
      code('display(bundle("rewards"), raw=True)'),
      code('display(bundle("dataset"), raw=True)'),
      code('display(bundle("bad"), raw=True)'),
      code(`frames = bundle("dashboard")\nhandle = display(frames[0], raw=True, display_id=True)\nfor frame in frames[1:]:\n    time.sleep(${FRAME_SECONDS})\n    handle.update(frame, raw=True)`),
      code('display(bundle("metrics"), raw=True)'),
    ],
  };
  writeFileSync(path.join(dir, 'widgets.ipynb'), JSON.stringify(nb, null, 1));
  return 'widgets.ipynb';
}
