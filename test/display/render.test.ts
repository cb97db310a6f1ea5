import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkGroup, checkSample, PayloadError } from '../../src/display/render/check.js';
import { filterSamples, renderDataset } from '../../src/display/render/dataset.js';
import { renderGroup, sortCompletions } from '../../src/display/render/group.js';
import { countAnswers, esc, fmt } from '../../src/display/render/html.js';
import { renderError, renderHtml, staticHtml, WIDGETS } from '../../src/display/render/index.js';
import { metricKeys, plotlyFigure, renderMetrics, smooth } from '../../src/display/render/metrics.js';
import { renderRewardTable } from '../../src/display/render/rewards.js';
import { renderSample } from '../../src/display/render/sample.js';
import { MIME, type VendorMime } from '../../src/display/types.js';
import * as fx from './fixtures.js';

const image = await fx.sceneImage();

/** Tags open and close in order (void and self-closed elements aside); <style>/<script> bodies skipped. */
function assertBalanced(html: string): void {
  const body = html.replace(/<(style|script)\b[^>]*>[\s\S]*?<\/\1>/g, '');
  const voids = new Set(['img', 'input', 'br', 'hr', 'meta', 'link', 'source', 'wbr']);
  const stack: string[] = [];
  for (const m of body.matchAll(/<(\/?)([a-zA-Z][a-zA-Z0-9]*)([^>]*)>/g)) {
    const [, close, name, rest] = m;
    const tag = name!.toLowerCase();
    if (voids.has(tag) || rest!.endsWith('/')) continue;
    if (close)
      assert.equal(
        stack.pop(),
        tag,
        `unbalanced </${tag}> near ${body.slice(Math.max(0, m.index! - 80), m.index! + 20)}`,
      );
    else stack.push(tag);
  }
  assert.deepEqual(stack, [], 'every element is closed');
}

/** The number of matches of a regular expression. */
const count = (s: string, re: RegExp) => [...s.matchAll(re)].length;

const payloads: Record<VendorMime, unknown> = {
  [MIME.sample]: fx.sample(image),
  [MIME.group]: fx.group(image),
  [MIME.rewards]: fx.rewardTable(),
  [MIME.metrics]: fx.metrics(image),
  [MIME.dataset]: fx.dataset(image),
};

test('esc escapes the five HTML metacharacters and fmt prints numbers for people', () => {
  assert.equal(esc(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  assert.equal(esc(null), '');
  assert.equal(fmt(null), '—');
  assert.equal(fmt(NaN), '—');
  assert.equal(fmt(-0.5), '−0.500');
  assert.equal(fmt(3), '3');
  assert.equal(fmt(1.23456e-7), '1.23e-7');
});

test('countAnswers merges case and punctuation variants, most frequent first', () => {
  assert.deepEqual(
    countAnswers(['Red', 'red.', 'blue', 'red', 'blue', 'green']).map((a) => [a.answer, a.count]),
    [
      ['Red', 3],
      ['blue', 2],
      ['green', 1],
    ],
  );
});

for (const [mime, payload] of Object.entries(payloads) as [VendorMime, unknown][]) {
  test(`${WIDGETS[mime].name}: static and interactive HTML are well formed, rooted and script-free`, () => {
    for (const interactive of [false, true]) {
      const html = renderHtml(mime, payload, { interactive });
      assertBalanced(html);
      assert.match(html, new RegExp(`^<div class="vqa vqa-${WIDGETS[mime].name}" data-vqa="${WIDGETS[mime].name}">`));
      assert.doesNotMatch(html, /<script/i);
      assert.doesNotMatch(html, /data-vqa="error"/);
    }
    const text = WIDGETS[mime].text(WIDGETS[mime].check(payload) as never);
    assert.ok(text.length > 20 && !text.includes('undefined') && !text.includes('NaN'), text);
  });
}

test('hostile text is escaped everywhere: question, answers, alt text, completions, titles, reward names', () => {
  const evilImage = { ...image, alt: fx.EVIL };
  const p = fx.sample(evilImage, {
    question: fx.EVIL,
    answers: [fx.EVIL, 'red'],
    prediction: fx.EVIL,
    id: fx.EVIL,
    rewards: [
      { name: fx.EVIL, score: 1, parts: { [fx.EVIL]: 1 } },
      { name: 'x', score: null, error: fx.EVIL },
    ],
  });
  const g = fx.group(evilImage);
  g.title = fx.EVIL;
  g.completions[0]!.text = fx.EVIL;
  g.completions[1]!.tokens = [fx.EVIL];
  g.completions[1]!.tokenLogprobs = [-1];
  const m = fx.metrics(evilImage);
  m.title = fx.EVIL;
  m.runs[0]!.name = fx.EVIL;
  m.progress!.message = fx.EVIL;
  const d = fx.dataset(evilImage, 3);
  d.name = fx.EVIL;
  d.answerTypes = { [fx.EVIL]: 1 };
  const r = fx.rewardTable();
  r.rewards[0] = fx.EVIL;
  r.rows.forEach((row) => {
    row.scores[fx.EVIL] = 1;
  });
  r.stats.mean[fx.EVIL] = 1;
  for (const [mime, payload] of [
    [MIME.sample, p],
    [MIME.group, g],
    [MIME.metrics, m],
    [MIME.dataset, d],
    [MIME.rewards, r],
  ] as const) {
    for (const interactive of [false, true]) {
      const html = renderHtml(mime, payload, { interactive });
      assert.doesNotMatch(html, /<script|<img src=x/i, `${mime} leaks markup`);
      assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'), `${mime} shows the text escaped`);
      assertBalanced(html);
    }
  }
});

test('sample card: image with alt and size, answers counted, prediction matched, rewards with parts and errors', () => {
  const html = renderSample(fx.sample(image));
  assert.match(
    html,
    /<img src="data:image\/png;base64,[^"]+" alt="a red square left of a blue circle" width="288" height="192" class="vqa-px" data-scale="6"/,
  );
  assert.match(html, /<figcaption>48×32 · shown 6×<\/figcaption>/);
  assert.match(
    html,
    /<tr class="vqa-match"><td>red <span class="vqa-badge vqa-good">= prediction<\/span><\/td><td class="vqa-num">7<\/td>/,
  );
  assert.match(html, /10 reference answers/);
  assert.match(html, /Prediction: <q>red<\/q> <span class="vqa-badge vqa-good">7\/10 annotators<\/span>/);
  assert.match(
    html,
    /format <span class="vqa-muted">×0.200<\/span><\/td><td class="vqa-num">0.500<\/td><td class="vqa-parts">tagged=1, brevity=−0.500<\/td>/,
  );
  assert.match(html, /<span class="vqa-badge vqa-bad">error<\/span> timeout after 30 s/);
  assert.doesNotMatch(html, /vqa-zoom/, 'static card has no dead buttons');
  assert.match(
    renderSample(fx.sample(image), { interactive: true }),
    /<button type="button" class="vqa-zoom" data-vqa-zoom="0" aria-label="Zoom image 1: a red square/,
  );
});

test('group view: completions sorted by reward (failures last), sign-coloured advantage bars, clipped and truncated marked, token log-probs', () => {
  const g = fx.group(image);
  assert.deepEqual(
    sortCompletions(g.completions).map((s) => s.index),
    [0, 1, 3, 2, 5, 4],
  );
  const html = renderGroup(g);
  assert.deepEqual(
    [...html.matchAll(/data-index="(\d+)"/g)].map((m) => Number(m[1])),
    [0, 1, 3, 2, 5, 4],
  );
  assert.equal(count(html, /<span class="vqa-pos" style="width:50\.0%">/g), 1, 'largest advantage fills half the bar');
  assert.ok(count(html, /class="vqa-neg"/g) >= 2);
  assert.match(html, /clipped 25%/);
  assert.match(html, /<span class="vqa-badge" title="finish reason">length<\/span>/);
  assert.match(html, /1 reward failure/);
  assert.match(
    html,
    /<span class="vqa-tok" data-i="0" data-lp="-0.1" style="background:rgba\(var\(--vqa-accent-rgb\),0\.048\)" title="&quot;red&quot; logp -0\.100 p 0\.905">red<\/span>/,
  );
  assert.doesNotMatch(
    renderGroup(g, { interactive: true }),
    /class="vqa-tok"[^>]*title=/,
    'interactive view draws its own tooltip',
  );
  const flat = fx.group(image);
  flat.completions.forEach((c) => {
    c.reward = 1;
    c.advantage = 0;
  });
  assert.match(renderGroup(flat), /zero variance: no learning signal/);
});

test('reward table: disagreements highlighted, stats and correlation shown, sort controls only when interactive', () => {
  const p = fx.rewardTable();
  const html = renderRewardTable(p);
  assert.equal(count(html, /<tr class="vqa-disagree"/g), 2);
  assert.match(html, /2 disagreements \(spread ≥ 0.5\)/);
  assert.match(html, /<td class="vqa-num" style="background: rgba\(var\(--vqa-pos-rgb\), 0\.378\)">0\.84<\/td>/);
  assert.match(html, /<td class="vqa-num" style="">—<\/td>/, 'undefined correlation shows a dash');
  assert.match(html, /<td class="vqa-num">33\.3%<\/td>/, 'zero-variance fraction');
  assert.match(html, /<span class="vqa-badge vqa-bad">failed<\/span>/);
  assert.match(html, /3 groups/);
  assert.doesNotMatch(html, /vqa-sort/);
  const inter = renderRewardTable(p, { interactive: true });
  assert.equal(count(inter, /<button type="button" class="vqa-sort"/g), 7);
  assert.match(inter, /class="vqa-only-dis"/);
});

test('metrics: keys in a fixed order, one SVG panel per key with both runs, progress with ETA, latest group', () => {
  const p = fx.metrics(image);
  assert.deepEqual(metricKeys(p), [
    'reward',
    'kl',
    'entropy',
    'clip_ratio/high_mean',
    'completion_length',
    'grad_norm',
  ]);
  const html = renderMetrics(p);
  assert.equal(count(html, /<svg class="vqa-chart"/g), 6);
  assert.equal(count(html, /<polyline /g), 12);
  assert.match(html, /role="progressbar" aria-valuemin="0" aria-valuemax="50" aria-valuenow="30"/);
  assert.match(html, /step 30\/50 · 1m35s elapsed · ETA 1m03s · running/);
  assert.match(html, /<div class="vqa-latest"><div class="vqa vqa-group"/);
  assert.match(
    renderMetrics(p, { interactive: true }),
    /<input type="range" class="vqa-smoothing" min="0" max="0.99" step="0.01" value="0.3"/,
  );
  assert.match(renderMetrics({ runs: [] }), /no metrics yet/);
});

test('smooth is a debiased EMA and plotlyFigure lays out one subplot per metric, one trace per run', () => {
  assert.deepEqual(smooth([1, 2, 3], 0), [1, 2, 3]);
  assert.deepEqual(smooth([1, 1, 1], 0.5), [1, 1, 1], 'no start-up bias towards 0');
  assert.ok(Math.abs(smooth([2, 4], 0.5)[1]! - (0.5 * 0.5 * 2 + 0.5 * 4) / 0.75) < 1e-12);
  const p = fx.metrics(image);
  const raw = plotlyFigure(p, 0);
  assert.equal(raw.data.length, 6 * 2);
  const smoothed = plotlyFigure(p, 0.6);
  assert.equal(smoothed.data.length, 6 * 2 * 2, 'raw traces behind the smoothed ones');
  assert.equal(raw.layout.uirevision, 'vqalab');
  assert.ok(raw.layout.xaxis6 && raw.layout.yaxis6 && !raw.layout.xaxis7);
  assert.equal((raw.layout.annotations as unknown[]).length, 6);
  assert.equal(raw.data.filter((t) => t.showlegend).length, 2, 'each run once in the legend');
});

test('dataset browser: first page only in static HTML, filters by type and text', () => {
  const p = fx.dataset(image);
  const html = renderDataset(p);
  assert.equal(count(html, /<div class="vqa-card">/g), 8);
  assert.match(html, /samples 1–30 of 1000 embedded/);
  assert.match(html, /first 8 of 30 embedded samples/);
  const inter = renderDataset(p, { interactive: true });
  assert.equal(count(inter, /<button type="button" class="vqa-card" data-sample="\d+"/g), 8);
  assert.match(inter, /<option value="yes\/no">yes\/no \(340\)<\/option>/);
  assert.deepEqual(filterSamples(p, { answerType: 'number' }).slice(0, 3), [1, 4, 7]);
  assert.deepEqual(filterSamples(p, { text: 'QUESTION 2' }), [2, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]);
  assert.deepEqual(filterSamples(p, { answerType: 'number', questionType: 'is the' }), []);
});

test('a missing or malformed field renders a readable error naming the field, never an empty string', () => {
  const g = fx.group(image) as unknown as { completions: Record<string, unknown>[] };
  g.completions[2]!.advantage = 'x';
  const html = renderHtml(MIME.group, g);
  assert.match(
    html,
    /^<div class="vqa vqa-error-box" role="alert" data-vqa="error"><strong>vqalab could not render application\/vnd\.vqalab\.group\.v1\+json<\/strong>/,
  );
  assert.match(
    html,
    /Expected finite number for group\.completions\[2\]\.advantage but received &quot;x&quot; of type string/,
  );
  assert.match(renderHtml(MIME.sample, undefined), /Expected object for sample but received undefined/);
  assert.match(
    renderHtml(MIME.metrics, { runs: [{ name: 'a', points: [{ loss: 1 }] }] }),
    /Expected finite number for metrics\.runs\[0\]\.points\[0\]\.step but received undefined/,
  );
  assert.match(
    renderHtml(MIME.rewards, { ...fx.rewardTable(), rows: [{ ...fx.rewardTable().rows[0], scores: { accuracy: 1 } }] }),
    /Expected finite number or null \(every reward needs a score\) for rewards\.rows\[0\]\.scores\.format but received undefined/,
  );
  assert.match(renderHtml('application/vnd.vqalab.nope.v9+json', {}), /unknown MIME type/);
  assert.match(renderError('x', new Error('boom')), /This is a bug in the vqalab renderer/);
});

test('images must be inline raster data URLs: no payload points the page elsewhere', () => {
  for (const src of [
    'javascript:alert(1)',
    'https://example.invalid/a.png',
    'data:image/svg+xml;base64,PHN2Zz4=',
    'data:image/png;base64,AAA"onload="x',
  ]) {
    assert.throws(() => checkSample(fx.sample({ ...image, src })), PayloadError);
  }
  assert.throws(
    () =>
      checkGroup({
        ...fx.group(image),
        completions: [{ ...fx.group(image).completions[0], tokenLogprobs: [-1, -2, -3] }],
      }),
    {
      message:
        /Expected an array of length 1 \(one per token\) for group\.completions\[0\]\.tokenLogprobs but received an array of length 3/,
    },
  );
});

test('text/html fallback inlines the CSS before the static widget', () => {
  const html = staticHtml(MIME.sample, fx.sample(image));
  assert.match(html, /^<style>[\s\S]*\.vqa\{[\s\S]*<\/style><div class="vqa vqa-sample"/);
  assert.match(staticHtml(MIME.sample, { id: 1 }), /<\/style><div class="vqa vqa-error-box" role="alert"/);
});

test('fitImage enlarges small images by whole factors (pixelated) and shrinks large ones smoothly', async () => {
  const { fitImage } = await import('../../src/display/render/html.js');
  assert.deepEqual(fitImage(48, 32, 320, 320), { width: 288, height: 192, scale: 6, pixelated: true });
  assert.deepEqual(fitImage(200, 100, 320, 320), { width: 200, height: 100, scale: 1, pixelated: false });
  assert.deepEqual(fitImage(640, 480, 320, 320), { width: 320, height: 240, scale: 0.5, pixelated: false });
});

test('axis labels stay short and exact', async () => {
  const { tickLabel } = await import('../../src/display/render/metrics.js');
  assert.deepEqual([0, 0.005, 0.015, 1.2, 350, 1.5e-4, -0.25, 2e5].map(tickLabel), [
    '0',
    '0.005',
    '0.015',
    '1.2',
    '350',
    '1.5e-4',
    '−0.25',
    '2.0e+5',
  ]);
});
