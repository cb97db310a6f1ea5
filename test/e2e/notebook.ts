/**
 * The end-to-end notebook, run by the "TypeScript (vqalab)" kernel: each cell calls the runtime's
 * own display helpers (show, browse, plot, dashboard, the reward lab) exactly as a user would; the
 * kernel's sink sends the bundles; the front end renders them. The test writes the data the cells
 * read (a scene image, fixture payloads, metric curves) next to the notebook.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { dataUrlBytes } from '../../src/display/image.js';
import * as fx from '../display/fixtures.js';

export const DASHBOARD_STEPS = 20;
/**
 * Steps of a watched loop that wait for the test: the n-th call of `e2eGate(name)` in the kernel
 * returns once the file `.gate-<name>-<n>` exists in the notebook's folder, and the test writes it
 * only after the page has shown the dashboard's n-th state. The loop and the page take turns, so
 * the test sees every one of those states however fast or slow the machine is; later steps run free.
 */
export const GATED_STEPS = 6;
const GATE_SOURCE = `const e2eGateCounts: Record<string, number> = {};
async function e2eGate(name: string): Promise<void> {
  const n = e2eGateCounts[name] = (e2eGateCounts[name] ?? 0) + 1;
  if (n > ${GATED_STEPS}) return;
  const fs = await import('fs');
  while (!fs.existsSync(\`.gate-\${name}-\${n}\`)) await new Promise((r) => setTimeout(r, 20));
}`;

/** Lets the n-th gated step of loop `name` go on (see GATED_STEPS). */
export function releaseGate(dir: string, name: string, n: number): void {
  writeFileSync(path.join(dir, `.gate-${name}-${n}`), '');
}

function code(source: string): object {
  return { cell_type: 'code', execution_count: null, metadata: {}, outputs: [], source };
}

/** Writes data/* and widgets.ipynb into `dir`; returns the notebook's file name. */
export async function writeNotebook(
  dir: string,
  kernel = { name: 'vqalab', display_name: 'TypeScript (vqalab)' },
): Promise<string> {
  const image = await fx.sceneImage();
  const data = path.join(dir, 'data');
  mkdirSync(data, { recursive: true });
  writeFileSync(path.join(data, 'scene.png'), dataUrlBytes(image.src));
  const sample = fx.sample(image);
  const files: Record<string, unknown> = {
    answers: sample.answers,
    'sample-rewards': sample.rewards,
    group: fx.group(image, 12),
    'late-group': fx.group(image, 19),
    'bad-group': (() => {
      const g = fx.group(image) as unknown as { completions: Record<string, unknown>[] };
      delete g.completions[1]!.advantage;
      return g;
    })(),
    'live-points': fx.points(DASHBOARD_STEPS, 0),
    'previous-points': fx.points(DASHBOARD_STEPS, 2),
    'baseline-points': fx.points(40, 1),
    'lr-points': fx.points(30, 0),
  };
  for (const [name, value] of Object.entries(files))
    writeFileSync(path.join(data, `${name}.json`), JSON.stringify(value));
  const nb = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { ...kernel, language: 'typescript' } },
    cells: [
      {
        cell_type: 'markdown',
        metadata: {},
        source: "# vqalab widgets\nEvery widget of the display contract, from the runtime's own helpers.",
      },
      code(`import { readFileSync } from 'fs';
const load = (name: string) => JSON.parse(readFileSync(\`data/\${name}.json\`, 'utf8'));
const square = { id: '42001', imagePath: 'data/scene.png', question: 'What color is the square?', answer: 'red',
  answers: load('answers'), answerType: 'other', questionType: 'what color is the' };
await show(square, { prediction: 'red', rewards: load('sample-rewards') });`),
      code(`await show(load('group'));`),
      code(`const q = (id: string, question: string, answer: string) => ({ id, imagePath: 'data/scene.png', question, answer, answers: Array(10).fill(answer) });
const table = await rewardLab([
  { sample: q('s1', 'What color is the square?', 'red'), completions: ['red', 'Red.', 'It is red, I think', 'blue'] },
  { sample: q('s2', 'How many circles?', '1'), completions: ['1', 'one', 'There is one circle in the picture.', '2'] },
], { vqa: vqaAccuracy(), exact: exactMatch(), brief: brevity({ maxWords: 2 }) });
await show(table);`),
      code(`const types = ['yes/no', 'number', 'other'], qtypes = ['is the', 'how many', 'what color is the'];
const samples = Array.from({ length: 30 }, (_, i) => ({ id: String(1000 + i), imagePath: 'data/scene.png',
  question: \`\${qtypes[i % 3]} question \${i}?\`, answer: \`answer\${i % 5}\`,
  answers: Array.from({ length: 10 }, (_, j) => (j < 7 ? \`answer\${i % 5}\` : \`other\${j}\`)), answerType: types[i % 3], questionType: qtypes[i % 3] }));
await browse(samples, { name: 'shapes-val', pageSize: 8 });`),
      code(`// A producer bug: the vendor payload lacks a field. The front end must say which, in the cell.
display({ 'application/vnd.vqalab.group.v1+json': load('bad-group'), 'text/plain': 'a group from a buggy producer' });`),
      code(`${GATE_SOURCE}
const live = load('live-points'), lateGroup = load('late-group');
const d = dashboard({ title: 'Live training', total: ${DASHBOARD_STEPS}, run: 'live', intervalMs: 250,
  compare: [{ name: 'previous run', points: load('previous-points') }] });
for (const point of live) {
  d.log(point);
  if (point.step % 5 === 4) d.setGroup({ ...lateGroup, step: point.step });
  await e2eGate('widgets');
}
d.finish();`),
      code(
        `plot([{ name: 'baseline', points: load('baseline-points') }, { name: 'lr=1e-5', points: load('lr-points') }], { title: 'GRPO on shapes', smoothing: 0.3 });`,
      ),
    ],
  };
  writeFileSync(path.join(dir, 'widgets.ipynb'), JSON.stringify(nb, null, 1));
  return 'widgets.ipynb';
}

/** GRPO steps the e2e's copy of the quickstart runs after its one `trainer.step()` (long enough to watch the dashboard update). */
export const QUICKSTART_STEPS = 50;

/**
 * Copies notebooks/quickstart.ipynb into `dir` as it is, except the parameter `steps`; returns the
 * file name and the index (among all cells) of the cell whose source contains each marker.
 */
export function writeQuickstart(
  dir: string,
  root: string,
  markers: Record<string, string>,
): { file: string; cells: Record<string, number> } {
  const nb = JSON.parse(readFileSync(path.join(root, 'notebooks', 'quickstart.ipynb'), 'utf8')) as {
    cells: { source: string | string[] }[];
  };
  const text = (c: { source: string | string[] }) => (Array.isArray(c.source) ? c.source.join('') : c.source);
  const params = nb.cells.find((c) => /^let steps = \d+;/m.test(text(c)));
  if (!params) throw new Error('notebooks/quickstart.ipynb: no parameters cell with "let steps = N;"');
  params.source = text(params).replace(/^let steps = \d+;/m, `let steps = ${QUICKSTART_STEPS};`);
  const run = nb.cells.find((c) => /await trainer\.run\(\{ steps \}\)/.test(text(c)));
  if (!run) throw new Error('notebooks/quickstart.ipynb: no cell with "await trainer.run({ steps })"');
  run.source = `${GATE_SOURCE}\n${text(run).replace(/await trainer\.run\(\{ steps \}\)/, "await trainer.run({ steps, onStep: () => e2eGate('quickstart') })")}`;
  const cells: Record<string, number> = {};
  for (const [name, marker] of Object.entries(markers)) {
    const i = nb.cells.findIndex((c) => text(c).includes(marker));
    if (i < 0) throw new Error(`notebooks/quickstart.ipynb: no cell contains ${JSON.stringify(marker)}`);
    cells[name] = i;
  }
  writeFileSync(path.join(dir, 'quickstart.ipynb'), JSON.stringify(nb, null, 1));
  return { file: 'quickstart.ipynb', cells };
}
