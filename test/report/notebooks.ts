/**
 * Test notebooks for the report tests, written for Debian's ipykernel (a real kernel). They emit
 * our vendor MIME types by hand, with the same fallbacks the vqalab display helpers send, so the
 * report pipeline is exercised end to end before the vqalab kernel is there.
 */
import type { Notebook } from '../../src/report/nbformat.js';

const code = (source: string, tags: string[] = []) => ({
  cell_type: 'code' as const,
  execution_count: null,
  metadata: tags.length ? { tags } : {},
  outputs: [],
  source,
});
const markdown = (source: string) => ({ cell_type: 'markdown' as const, metadata: {}, source });

export function pythonNotebook(cells: Notebook['cells']): Notebook {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
      language_info: { name: 'python' },
    },
    cells: cells.map((c, i) => ({ ...c, id: `c${i}` })),
  };
}

const HELPERS = String.raw`import base64, hashlib, json, random, struct, sys, zlib
from IPython.display import display

def png(w, h, f):
    raw = b''.join(b'\x00' + bytes(v for x in range(w) for v in f(x, y)) for y in range(h))
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    data = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')
    return base64.b64encode(data).decode()

def facts(**f):
    display({'application/vnd.vqalab.stamp.v1+json': f}, raw=True)

def metrics_bundle(name, points):
    rows = ''.join('<tr><td>%d</td><td>%.6f</td><td>%.6f</td></tr>' % (p['step'], p['reward'], p['loss']) for p in points)
    return {
        'application/vnd.vqalab.metrics.v1+json': {'runs': [{'name': name, 'points': points}], 'keys': ['reward', 'loss']},
        'text/html': '<table class="vq-fallback-metrics"><tr><th>step</th><th>reward</th><th>loss</th></tr>' + rows + '</table>',
        'text/plain': 'metrics: %d steps of %s' % (len(points), name),
    }
`;

/** The demo: parameters, recorded facts, a seeded "training" with a live-updated metrics display, a plot, a sample card. */
export function demoNotebook(): Notebook {
  return pythonNotebook([
    markdown(
      '# Demo report\n\nA seeded toy run. **Rewards** go *up*:\n\n| part | weight |\n|---|---|\n| accuracy | 1.0 |\n| format | 0.2 |\n',
    ),
    code('seed = 0\nsteps = 6\nlr = 0.5\nrun_name = "toy"', ['parameters']),
    code(HELPERS),
    code(
      [
        'data = bytes(range(256)) * 64',
        "facts(configs={'grpo': {'lr': lr, 'steps': steps, 'group_size': 4, 'kl_beta': 0.0}},",
        "      seeds={'trainer': seed, 'data': seed + 1},",
        "      datasets=[{'name': 'toy-vqa', 'fingerprint': 'sha256:' + hashlib.sha256(data).hexdigest(), 'rows': 64, 'split': 'train'}],",
        "      models=[{'name': 'tiny-qwen2-vl', 'hash': 'sha256:' + hashlib.sha256(b'weights' + bytes([seed])).hexdigest(), 'role': 'base'}],",
        "      versions={'engine': 'toy-engine 0.0.1 (cpu)', 'python': sys.version.split()[0]},",
        "      devices=[{'kind': 'cpu', 'name': 'test host'}])",
        "print('recorded facts')",
      ].join('\n'),
    ),
    code(
      [
        'rng = random.Random(seed)',
        'points = []',
        'handle = display(metrics_bundle(run_name, points), raw=True, display_id=True)',
        'for step in range(steps):',
        '    reward = 0.2 + lr * 0.1 * step + rng.random() * 0.01',
        "    points.append({'step': step, 'reward': reward, 'loss': 1.0 / (1 + step) + rng.random() * 0.001})",
        '    handle.update(metrics_bundle(run_name, points), raw=True)',
        "    print('\\rstep %d/%d' % (step + 1, steps), end='')",
        'print()',
        "facts(metrics={'final_reward': points[-1]['reward']})",
      ].join('\n'),
    ),
    code(
      [
        "xs = [p['step'] for p in points]",
        "display({'application/vnd.plotly.v1+json': {'data': [{'x': xs, 'y': [p['reward'] for p in points], 'type': 'scatter', 'mode': 'lines+markers', 'name': 'reward'}],",
        "                                         'layout': {'title': {'text': 'reward vs step'}, 'height': 320}},",
        "         'text/plain': 'reward plot (plotly)'}, raw=True)",
      ].join('\n'),
    ),
    code(
      [
        'img = png(48, 32, lambda x, y: (x * 5, y * 8, 160))',
        "sample = {'id': 'q1', 'question': 'What color is the square?', 'images': [{'src': 'data:image/png;base64,' + img, 'width': 48, 'height': 32, 'alt': 'a gradient square'}],",
        "          'answers': ['blue'] * 7 + ['purple'] * 3, 'prediction': 'blue'}",
        "display({'application/vnd.vqalab.sample.v1+json': sample, 'image/png': img,",
        '         \'text/html\': \'<div class="vq-fallback-sample"><img alt="a gradient square" src="data:image/png;base64,\' + img + \'"><p>What color is the square? → blue</p></div>\',',
        "         'text/plain': 'sample q1: What color is the square?'}, raw=True)",
        "print('warning: toy data', file=sys.stderr)",
        "round(points[-1]['reward'], 4)",
      ].join('\n'),
    ),
  ]);
}

/** A notebook whose second code cell throws, followed by a cell that must not run. */
export function failingNotebook(): Notebook {
  return pythonNotebook([
    code('x = 1\nprint("before")'),
    code('def boom():\n    raise ValueError("planted failure 42")\nboom()'),
    code('print("after the failure")'),
  ]);
}

/** Secrets planted in an output, a recorded config, an Authorization header and a parameter. */
export function secretsNotebook(envName: string): Notebook {
  return pythonNotebook([
    code('api_token = "none"\nsteps = 1', ['parameters']),
    code(
      [
        'import os',
        'from IPython.display import display',
        `key = os.environ[${JSON.stringify(envName)}]`,
        "print('the key is', key)",
        "print('Authorization: Bearer ' + key[::-1])",
        "display({'application/vnd.vqalab.stamp.v1+json': {'configs': {'openai': {'apiKey': key, 'model': 'toy'}}, 'notes': {'token_used': api_token}}, 'text/plain': 'facts'}, raw=True)",
        "print('param token', api_token)",
        'key',
      ].join('\n'),
    ),
  ]);
}
