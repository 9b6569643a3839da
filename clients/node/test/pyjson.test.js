'use strict';
// Python's json.dumps, as the workers count and write JSON.

const test = require('node:test');
const assert = require('node:assert/strict');
const { COMPACT_SEPARATORS, dumps, pythonFloatRepr, utf8Length } = require('../src/pyjson');

test('floats are written as Python repr() writes them', () => {
  const cases = [
    [0.1, '0.1'], [0.25, '0.25'], [1.5, '1.5'], [-2.5, '-2.5'], [0.0001, '0.0001'],
    [0.00001, '1e-05'], [1.5e-7, '1.5e-07'], [123456.789, '123456.789'],
    [1e16, '1e+16'], [1.2345e20, '1.2345e+20'], [1e21, '1e+21'], [1.5e300, '1.5e+300'],
    [5e-324, '5e-324'], [2.5e15, '2500000000000000.0'],
  ];
  for (const [number, expected] of cases) assert.equal(pythonFloatRepr(number), expected, String(number));
});

test('numbers JavaScript writes as integers stay integers; others become Python floats', () => {
  assert.equal(dumps([25, -3, 1e20, 0.5, 1e21, 0.00001]), '[25, -3, 100000000000000000000, 0.5, 1e+21, 1e-05]');
});

test('ASCII-only output escapes as Python does, astral characters as surrogate pairs', () => {
  assert.equal(dumps({ name: 'Анна💘\u007f', tab: '\t', bell: '\u0007' }, { separators: COMPACT_SEPARATORS }),
    '{"name":"\\u0410\\u043d\\u043d\\u0430\\ud83d\\udc98\\u007f","tab":"\\t","bell":"\\u0007"}');
});

test('UTF-8 length counts Python\'s default separators and raw characters', () => {
  // {"a": "яя", "b": [1, 2]}: 6 + 4 (two letters) + 16
  assert.equal(utf8Length({ a: 'яя', b: [1, 2] }), 26);
  assert.equal(utf8Length({ a: 'яя', b: [1, 2] }, COMPACT_SEPARATORS), 22);
});

test('values JSON cannot hold are refused, not dropped', () => {
  assert.throws(() => dumps({ a: Number.NaN }), /non-finite/);
  assert.throws(() => dumps({ a: undefined }), /not a JSON value/);
  assert.throws(() => dumps({ a: 1n }), /not a JSON value/);
});
