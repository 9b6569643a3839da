'use strict';
/**
 * The shared test vectors (tests/vectors/payloads.json) as the Node tests and
 * tools read them; tests/payload_vectors.py reads them the same way for Python.
 */

const fs = require('node:fs');
const path = require('node:path');

const VECTORS_PATH = path.resolve(__dirname, '../../../tests/vectors/payloads.json');

/** `{"$repeat": text, "times": n}` and `{"$concat": [...]}` stand for long strings. */
function expand(value) {
  if (Array.isArray(value)) return value.map(expand);
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort().join(',');
    if (keys === '$repeat,times') return value.$repeat.repeat(value.times);
    if (keys === '$concat') return value.$concat.map(expand).join('');
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, expand(item)]));
  }
  return value;
}

function loadVectors(file = VECTORS_PATH) {
  const { vectors } = JSON.parse(fs.readFileSync(file, 'utf8'));
  return vectors.map((vector) => ({
    name: vector.name,
    actor: vector.actor,
    args: expand(vector.args),
    errors: vector.errors || [],
    recordArgs: vector.record_args === undefined ? undefined : expand(vector.record_args),
    recordKey: vector.record_key,
  }));
}

module.exports = { VECTORS_PATH, expand, loadVectors };
