import { test } from 'node:test';
import assert from 'node:assert/strict';
import { injectParameters, parameterSource, parseParamArg, parseParamValue } from '../../src/report/params.js';
import { joinText, parseNotebook, serializeNotebook, splitLines } from '../../src/report/nbformat.js';
import { compareMetrics, formatDiffs } from '../../src/report/metrics.js';
import { factsBundle, mergeFacts, recordFacts, recordedFacts, STAMP_MIME } from '../../src/report/facts.js';
import { setDisplaySink } from '../../src/display/sink.js';
import { pythonNotebook } from './notebooks.js';

test('--param values are typed like papermill, with JSON for structures', () => {
  assert.equal(parseParamValue('3'), 3);
  assert.equal(parseParamValue('-0.5e-3'), -0.0005);
  assert.equal(parseParamValue('true'), true);
  assert.equal(parseParamValue('False'), false);
  assert.equal(parseParamValue('null'), null);
  assert.deepEqual(parseParamValue('[1, "a"]'), [1, 'a']);
  assert.deepEqual(parseParamValue('{"lr": 0.1}'), { lr: 0.1 });
  assert.equal(parseParamValue('"007"'), '007');
  assert.equal(parseParamValue('007x'), '007x');
  assert.equal(parseParamValue('[not json'), '[not json');
  assert.deepEqual(parseParamArg('url=http://a/b?c=d'), ['url', 'http://a/b?c=d']);
  assert.throws(() => parseParamArg('novalue'), { message: '--param expects key=value, got "novalue"' });
  assert.throws(() => parseParamArg('1x=2'), { message: '--param name "1x" is not a valid identifier' });
});

test('injected cell source per kernel language', () => {
  const p = { n: 3, ok: true, none: null, s: 'it\'s "q"', xs: [1, { a: false }] };
  assert.equal(
    parameterSource(p, 'python'),
    '# Parameters\nn = 3\nok = True\nnone = None\ns = "it\'s \\"q\\""\nxs = [1, {"a": False}]\n',
  );
  assert.equal(parameterSource({ n: 3, s: 'x' }, 'typescript'), '// Parameters\nlet n = 3;\nlet s = "x";\n');
  assert.throws(() => parameterSource(p, 'julia'), /cannot inject parameters for kernel language "julia"/);
});

test('the injected cell follows the parameters cell and replaces an earlier one', () => {
  const nb = pythonNotebook([
    { cell_type: 'markdown', metadata: {}, source: '# t' },
    { cell_type: 'code', metadata: { tags: ['parameters'] }, source: 'n = 1', outputs: [], execution_count: null },
    {
      cell_type: 'code',
      metadata: { tags: ['injected-parameters'] },
      source: 'n = 99',
      outputs: [],
      execution_count: null,
    },
    { cell_type: 'code', metadata: {}, source: 'print(n)', outputs: [], execution_count: null },
  ]);
  const { notebook, injectedAt } = injectParameters(nb, { n: 5 }, 'python');
  assert.equal(injectedAt, 2);
  assert.deepEqual(
    notebook.cells.map((c) => joinText(c.source)),
    ['# t', 'n = 1', '# Parameters\nn = 5\n', 'print(n)'],
  );
  assert.deepEqual(notebook.cells[2]!.metadata.tags, ['injected-parameters']);
  assert.ok(notebook.cells[2]!.id, 'nbformat 4.5 cells get an id');
  // Without a parameters cell papermill injects at the top.
  const top = injectParameters(
    pythonNotebook([{ cell_type: 'code', metadata: {}, source: 'x', outputs: [], execution_count: null }]),
    { a: 1 },
    'python',
  );
  assert.equal(top.injectedAt, 0);
  assert.equal(nb.cells.length, 4, 'the input notebook is not modified');
});

test('notebooks are written the way Jupyter writes them and read back with located errors', () => {
  assert.deepEqual(splitLines('a\nb\n'), ['a\n', 'b\n']);
  assert.deepEqual(splitLines(''), []);
  const nb = pythonNotebook([
    {
      cell_type: 'code',
      metadata: {},
      source: 'a\nb',
      execution_count: 1,
      outputs: [
        { output_type: 'stream', name: 'stdout', text: 'x\ny\n' },
        {
          output_type: 'display_data',
          data: { 'text/plain': 'p\nq', 'application/vnd.vqalab.metrics.v1+json': { runs: [] } },
          metadata: {},
        },
      ],
    },
  ]);
  const json = JSON.parse(serializeNotebook(nb));
  assert.deepEqual(json.cells[0].source, ['a\n', 'b']);
  assert.deepEqual(json.cells[0].outputs[0].text, ['x\n', 'y\n']);
  assert.deepEqual(json.cells[0].outputs[1].data['text/plain'], ['p\n', 'q']);
  assert.deepEqual(json.cells[0].outputs[1].data['application/vnd.vqalab.metrics.v1+json'], { runs: [] });
  assert.throws(() => parseNotebook({ nbformat: 3, cells: [] }, 'x.ipynb'), {
    message: 'x.ipynb: field "nbformat" must be 4, got 3',
  });
  assert.throws(() => parseNotebook({ nbformat: 4, cells: [{ cell_type: 'code', source: 1 }] }, 'x.ipynb'), {
    message: 'x.ipynb: cell 0: field "source" must be a string or an array of strings',
  });
});

test('metrics compare exactly on CPU and within tolerance on GPU, with a readable diff', () => {
  const a = { 'r/loss@0': 1, 'r/loss@1': 0.5, 'facts/acc': 0.25 };
  assert.deepEqual(compareMetrics(a, { ...a }, { gpu: false }).diffs, []);
  const cpu = compareMetrics(a, { ...a, 'r/loss@1': 0.5000001 }, { gpu: false });
  assert.equal(cpu.diffs.length, 1);
  assert.equal(cpu.diffs[0]!.reason, 'differs');
  assert.deepEqual(compareMetrics(a, { ...a, 'r/loss@1': 0.5000001 }, { gpu: true }).diffs, []);
  const gpu = compareMetrics(a, { ...a, 'r/loss@1': 0.51 }, { gpu: true, tolerances: { acc: { rtol: 0, atol: 0 } } });
  assert.equal(gpu.diffs[0]!.reason, 'outside tolerance');
  assert.equal(
    compareMetrics(a, { ...a, 'facts/acc': 0.2500001 }, { gpu: true, tolerances: { acc: { rtol: 0, atol: 0 } } }).diffs
      .length,
    1,
    'per-metric tolerance wins',
  );
  const missing = compareMetrics(a, { 'r/loss@0': 1, 'r/loss@1': 0.5, extra: 2 }, { gpu: false });
  assert.deepEqual(
    missing.diffs.map((d) => d.reason),
    ['not in the report', 'missing in re-run'],
  );
  const table = formatDiffs(cpu.diffs);
  assert.match(table, /^metric\s+report\s+re-run\s+why/);
  assert.match(table, /r\/loss@1\s+0\.5\s+0\.5000001\s+differs/);
});

test('recordFacts: validated, kept in a script, sent through the display sink as one MIME bundle of the stamp type alone', () => {
  const sent: Record<string, unknown>[] = [];
  const previous = setDisplaySink({
    display: (b) => {
      sent.push(b);
    },
  });
  try {
    recordFacts({ seeds: { trainer: 3 }, configs: { grpo: { lr: 0.1 } } });
    assert.throws(() => recordFacts({ seeds: { x: 1.5 } }), {
      message: 'Expected integer for facts.seeds.x but received 1.5',
    });
    assert.equal(sent.length, 1);
    assert.deepEqual(sent[0]![STAMP_MIME], { seeds: { trainer: 3 }, configs: { grpo: { lr: 0.1 } } });
    // The facts alone: no text/plain line for viewers without the extension to print.
    assert.deepEqual(Object.keys(sent[0]!), [STAMP_MIME]);
    assert.equal(recordedFacts().length, 1);
  } finally {
    setDisplaySink(previous);
  }
  assert.deepEqual(factsBundle({ models: [{ name: 'm', hash: 'h' }] }), {
    [STAMP_MIME]: { models: [{ name: 'm', hash: 'h' }] },
  });
  const merged = mergeFacts([
    { seeds: { a: 1 }, datasets: [{ name: 'd', fingerprint: 'f' }] },
    { seeds: { a: 2 }, datasets: [{ name: 'd', fingerprint: 'f' }] },
  ]);
  assert.deepEqual(merged.seeds, { a: 2 });
  assert.equal(merged.datasets!.length, 1);
});
