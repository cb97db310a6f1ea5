import { test } from 'node:test';
import assert from 'node:assert/strict';
import { synthTokens, synthVocabulary } from '../../src/data/synth-vocab.js';

test('synthVocabulary is sorted, unique, and holds the template words, numbers and answers', () => {
  const v = synthVocabulary();
  assert.deepEqual(v, [...new Set(v)].sort());
  for (const w of [
    'What',
    'How',
    'Is',
    'Are',
    'Which',
    '?',
    'circle',
    'circles',
    'red',
    'yes',
    'no',
    '2',
    'two',
    '10',
    'ten',
    'left',
    'right',
  ]) {
    assert.ok(v.includes(w), `missing ${w}`);
  }
  assert.ok(!v.some((w) => /\s/.test(w) || w === ''), 'no empty or spaced tokens');
  v.push('mutated');
  assert.ok(!synthVocabulary().includes('mutated'), 'callers get a copy');
});

test('synthTokens splits on whitespace and a trailing question mark', () => {
  assert.deepEqual(synthTokens('What color is the  circle?'), ['What', 'color', 'is', 'the', 'circle', '?']);
  assert.deepEqual(synthTokens('dark red'), ['dark', 'red']);
});
