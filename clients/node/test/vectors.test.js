'use strict';
// The shared vectors, through the same checks a send makes (nothing reaches Kafka).

const test = require('node:test');
const assert = require('node:assert/strict');
const { buildRecord } = require('../src/record');
const { PayloadError } = require('../src/errors');
const { validateRecord } = require('../src/schema');
const { loadVectors } = require('../testing/vectors');

for (const vector of loadVectors()) {
  test(`vector: ${vector.name}`, () => {
    if (vector.errors.length > 0) {
      assert.throws(() => buildRecord(vector.actor, vector.args), (error) => {
        assert.ok(error instanceof PayloadError, `${error.name}: ${error.message}`);
        assert.deepEqual(error.issues.map((issue) => issue.path).sort(), [...vector.errors].sort(), error.message);
        return true;
      });
      return;
    }
    const record = buildRecord(vector.actor, vector.args);
    if (vector.recordArgs !== undefined) assert.deepEqual(record.message.args, vector.recordArgs);
    // A registration is keyed by its token, in its options and as the Kafka key; nothing else is.
    assert.equal(record.key?.toString('utf8'), vector.recordKey);
    assert.equal(record.message.options.partition_key, vector.recordKey);
    // What is written is what the schema describes, and reads back as built.
    const written = JSON.parse(record.value.toString('utf8'));
    assert.ok(validateRecord(written), JSON.stringify(validateRecord.errors));
    assert.deepEqual(written, record.message);
  });
}
