import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectInteger, expectOneOf, invalidParameterError } from '../../src/util/validate.js';

test('invalidParameterError names the parameter, what was expected and what came', () => {
  assert.equal(
    invalidParameterError('width', 'positive integer', 1.5).message,
    'Expected positive integer for width but received 1.5 of type number',
  );
  assert.equal(invalidParameterError('mode', 'string', null).message, 'Expected string for mode but received null');
});

test('expectInteger and expectOneOf reject with exact messages', () => {
  assert.equal(expectInteger('n', 3, 1), 3);
  assert.throws(() => expectInteger('n', 0, 1), {
    message: 'Expected positive integer for n but received 0 of type number',
  });
  assert.throws(() => expectInteger('n', 9, 0, 8), {
    message: 'Expected integer between 0 and 8 for n but received 9 of type number',
  });
  assert.throws(() => expectOneOf('loss', 'foo', ['grpo', 'dapo'] as const), {
    message: 'Expected one of "grpo", "dapo" for loss but received "foo" of type string',
  });
});
