/** llmJudge against a real OpenAI-compatible server on loopback. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { VqaSample } from '../../src/data/types.js';
import { JudgeError, llmJudge, parseJudgeScore } from '../../src/reward/judge.js';
import { retryAfterMs } from '../../src/util/retry.js';
import { scoreGroups } from '../../src/reward/runner.js';
import { startOpenAIServer, type OpenAIServer } from '../helpers/openai-server.js';

const sample = (id = 's1', question = 'How many dogs?', answers = ['2', '2', 'two', '3']): VqaSample => ({
  id,
  imagePath: '/x.jpg',
  question,
  answer: answers[0]!,
  answers,
});

async function withServer(
  fn: (s: OpenAIServer) => Promise<void>,
  replies: Parameters<typeof startOpenAIServer>[0] = {},
) {
  const s = await startOpenAIServer(replies);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

test('parseJudgeScore understands the usual reply shapes and rejects the rest', () => {
  const ok: [string, number, number?][] = [
    ['Score: 7', 0.7],
    ['score: 10', 1],
    ['**Score:** 8', 0.8],
    ['The score is 6/10.', 0.6],
    ['Score = 3 out of 5', 0.6],
    ['Score: 90%', 0.9],
    ['7', 0.7],
    ['  8/10  ', 0.8],
    ['{"score": 9, "reason": "same"}', 0.9],
    ['```json\n{"score": 0.25}\n```', 0.25, 1],
    ['<think>maybe Score: 2</think>Score: 9', 0.9],
    ['First thought score: 3. Final score: 5', 0.5],
    ['Score: 0', 0],
    ['score:1.0', 1, 1],
  ];
  for (const [reply, expected, scale] of ok) assert.equal(parseJudgeScore(reply, scale), expected, reply);
  for (const bad of ['', 'I think it is right', 'Score: 11', 'Score: -1', '{"verdict": "yes"}', 'Score: 5/0', '150%']) {
    assert.throws(() => parseJudgeScore(bad), /no score found|outside \[0, 1\]|not positive/, bad);
  }
});

test('retryAfterMs reads retry-after-ms, seconds and HTTP dates', () => {
  assert.equal(retryAfterMs(new Headers({ 'retry-after-ms': '250' })), 250);
  assert.equal(retryAfterMs(new Headers({ 'retry-after': '2' })), 2000);
  const now = Date.parse('2026-11-27T00:00:00Z');
  assert.equal(retryAfterMs(new Headers({ 'retry-after': 'Fri, 27 Nov 2026 00:00:03 GMT' }), now), 3000);
  assert.equal(retryAfterMs(new Headers({})), undefined);
  assert.equal(retryAfterMs(new Headers({ 'retry-after': 'soon' })), undefined);
});

test('a good answer: prompt rendered from the template, score parsed, parts and note', () =>
  withServer(async (s) => {
    s.enqueue({ content: 'Score: 8' });
    const judge = llmJudge({
      baseURL: s.url,
      model: 'judge-model',
      system: 'Be strict.',
      template: 'Q={{question}} R={{references}} P={{prediction}} A={{answer}}',
    });
    const r = await judge(sample(), '<think>hmm</think><answer>two</answer>', {});
    assert.deepEqual(r, { score: 0.8, parts: { judge: 0.8, attempts: 1, cached: 0, fallback: 0 }, note: 'Score: 8' });
    const req = s.chatRequests()[0]!;
    assert.equal(req.body.model, 'judge-model');
    assert.equal(req.body.temperature, 0);
    assert.deepEqual(req.body.messages, [
      { role: 'system', content: 'Be strict.' },
      { role: 'user', content: 'Q=How many dogs? R=2; two; 3 P=two A=2' },
    ]);
  }));

test('cache by (question, references, prediction): one request per distinct key, concurrent duplicates share it', () =>
  withServer(async (s) => {
    s.setHandler(() => ({ content: 'Score: 5', delayMs: 50 }));
    const judge = llmJudge({ baseURL: s.url, model: 'm' });
    const [a, b] = await Promise.all([judge(sample(), 'two', {}), judge(sample(), 'two', {})]);
    const c = await judge(sample('s2'), 'two', {}); // same question, refs, prediction: cached though another sample id
    await judge(sample(), 'three', {});
    await judge(sample('s3', 'How many cats?'), 'two', {});
    assert.equal(s.chatRequests().length, 3);
    assert.equal(a.parts!.cached + b.parts!.cached, 1);
    assert.equal(c.parts!.cached, 1);
    assert.equal(judge.stats().cacheHits, 2);
    judge.clearCache();
    await judge(sample(), 'two', {});
    assert.equal(s.chatRequests().length, 4);
  }));

test('concurrency limit: never more requests in flight than maxConcurrency', () =>
  withServer(async (s) => {
    let inFlight = 0,
      peak = 0;
    s.setHandler(async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 40));
      inFlight--;
      return { content: 'Score: 10' };
    });
    const judge = llmJudge({ baseURL: s.url, model: 'm', maxConcurrency: 2 });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => judge(sample(), `answer ${i}`, {})));
    assert.equal(results.length, 8);
    assert.equal(s.chatRequests().length, 8);
    assert.equal(peak, 2);
  }));

test('429 with Retry-After is honoured (retry-after-ms and seconds), then the answer is used', () =>
  withServer(async (s) => {
    s.enqueue(
      { status: 429, headers: { 'retry-after-ms': '300' } },
      { status: 429, headers: { 'retry-after': '1' } },
      { content: 'Score: 9' },
    );
    const judge = llmJudge({ baseURL: s.url, model: 'm', backoffMs: 1 });
    const r = await judge(sample(), 'two', {});
    assert.equal(r.score, 0.9);
    assert.equal(r.parts!.attempts, 3);
    const [t0, t1, t2] = s.chatRequests().map((q) => q.receivedAt);
    assert.ok(t1! - t0! >= 290, `waited ${t1! - t0!} ms for retry-after-ms 300`);
    assert.ok(t2! - t1! >= 990, `waited ${t2! - t1!} ms for Retry-After 1`);
    assert.deepEqual(judge.stats().retryDelaysMs, [300, 1000]);
  }));

test('500s are retried with backoff; 400 is not retried', () =>
  withServer(async (s) => {
    s.enqueue({ status: 500 }, { status: 503 }, { content: 'Score: 4' });
    const judge = llmJudge({ baseURL: s.url, model: 'm', backoffMs: 20 });
    assert.equal((await judge(sample(), 'two', {})).score, 0.4);
    assert.equal(s.chatRequests().length, 3);
    assert.equal(judge.stats().retries, 2);
    s.enqueue({ status: 400, error: { message: 'bad model' } });
    await assert.rejects(
      judge(sample(), 'three', {}),
      (e: unknown) => e instanceof JudgeError && /HTTP 400/.test(e.message) && e.attempts === 1,
    );
    assert.equal(s.chatRequests().length, 4);
  }));

test('malformed replies are retried, then the judge fails loudly (no fallback) — never a silent 0', () =>
  withServer(async (s) => {
    s.enqueue({ content: 'It looks right to me.' }, { raw: 'not json' }, { content: null }, { raw: '{"choices": []}' });
    const judge = llmJudge({ baseURL: s.url, model: 'm', maxRetries: 3, backoffMs: 1 });
    await assert.rejects(
      judge(sample(), 'two', {}),
      (e: unknown) => e instanceof JudgeError && /gave up after 4 attempt\(s\)/.test(e.message) && e.attempts === 4,
    );
    assert.equal(judge.stats().malformed, 4);
    assert.equal(judge.stats().failures, 1);
  }));

test('timeouts: a hanging endpoint is abandoned per attempt and the configured fallback is used, with the failure recorded', () =>
  withServer(async (s) => {
    s.enqueue({ hang: true }, { content: 'Score: 9', delayMs: 400 });
    const judge = llmJudge({ baseURL: s.url, model: 'm', timeoutMs: 150, maxRetries: 1, backoffMs: 1, fallback: 0.5 });
    const r = await judge(sample(), 'two', {});
    assert.equal(r.score, 0.5);
    assert.equal(r.parts!.fallback, 1);
    assert.equal(r.parts!.attempts, 2);
    assert.match(r.error!, /llmJudge: gave up after 2 attempt\(s\): timed out; used fallback score 0\.5/);
    assert.equal(judge.stats().fallbacks, 1);
  }));

test('a fallback reward is called on failure; failures are not cached', () =>
  withServer(async (s) => {
    s.enqueue({ status: 500 }, { content: 'Score: 10' });
    const judge = llmJudge({
      baseURL: s.url,
      model: 'm',
      maxRetries: 0,
      fallback: (_s, c) => (c === 'two' ? 0.25 : 0),
    });
    const first = await judge(sample(), 'two', {});
    assert.equal(first.score, 0.25);
    assert.match(first.error!, /HTTP 500/);
    const second = await judge(sample(), 'two', {});
    assert.equal(second.score, 1);
    assert.equal(second.parts!.cached, 0);
  }));

test('in the runner: judge failures are counted and reported by sample id, with or without fallback', () =>
  withServer(async (s) => {
    s.setHandler((r) => (r.body.messages[0].content.includes('P=bad') ? { status: 500 } : { content: 'Score: 6' }));
    const strict = llmJudge({
      baseURL: s.url,
      model: 'm',
      maxRetries: 0,
      template: 'P={{prediction}}',
      name: 'strict',
    });
    const lenient = llmJudge({
      baseURL: s.url,
      model: 'm',
      maxRetries: 0,
      template: 'P={{prediction}}',
      name: 'lenient',
      fallback: 0,
      cache: false,
    });
    const batch = await scoreGroups([{ sample: sample('q7'), completions: ['good', 'bad'] }], [strict, lenient]);
    assert.deepEqual(batch.groups[0]!.totals, [1.2, null]);
    assert.deepEqual(batch.failureCounts, { strict: 1, lenient: 1 });
    assert.equal(batch.excluded, 1);
    assert.ok(
      batch.messages.some((m) =>
        /reward "strict" on sample q7 \(group 0, completion 1\): threw JudgeError: strict: gave up after 1 attempt\(s\): HTTP 500/.test(
          m,
        ),
      ),
      batch.messages.join('\n'),
    );
    assert.ok(
      batch.messages.some((m) =>
        /reward "lenient" on sample q7 \(group 0, completion 1\): lenient: gave up after 1 attempt\(s\): HTTP 500.*used fallback score 0/.test(
          m,
        ),
      ),
      batch.messages.join('\n'),
    );
    const lenientScore = batch.groups[0]!.completions[1]!.rewards[1]!;
    assert.equal(lenientScore.score, 0);
    assert.match(lenientScore.error!, /HTTP 500/);
  }));

test('options are validated with exact messages', () => {
  assert.throws(() => llmJudge({ model: '' }), {
    message: 'Expected non-empty string for model but received "" of type string',
  });
  assert.throws(() => llmJudge({ model: 'm' }), {
    message: 'Expected non-empty string for baseURL but received undefined',
  });
  assert.throws(() => llmJudge({ model: 'm', baseURL: 'http://x/v1', maxConcurrency: 0 }), {
    message: 'Expected positive integer for maxConcurrency but received 0 of type number',
  });
  assert.throws(() => llmJudge({ model: 'm', baseURL: 'http://x/v1', fallback: NaN }), {
    message: 'Expected finite number for fallback but received NaN of type number',
  });
});
