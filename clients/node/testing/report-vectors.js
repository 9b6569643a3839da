'use strict';
/**
 * For each shared vector, what the Node client makes of it, as JSON lines on
 * stdout: the fields its error names (and what it says of each), or the
 * record's value (with the id and time given), its key, and the push's size
 * for each provider. tests/test_node_client.py and
 * tests/test_node_registration.py compare every line with what Python makes
 * of the same vector.
 *
 *     node testing/report-vectors.js MESSAGE_ID TIMESTAMP_MS
 */

const { buildRecord } = require('../src/record');
const { actor: describeActor } = require('../src/schema');
const { pushSizes } = require('../src/push');
const { loadVectors } = require('./vectors');

const [messageId, timestampText] = process.argv.slice(2);
const timestampMs = Number(timestampText);

for (const vector of loadVectors()) {
  const line = { name: vector.name };
  try {
    const record = buildRecord(vector.actor, vector.args, { messageId, timestampMs });
    line.value = record.value.toString('utf8');
    line.headers = Object.fromEntries(Object.entries(record.headers).map(([k, v]) => [k, v.toString('utf8')]));
    line.topic = record.topic;
    line.key = record.key === null ? null : record.key.toString('utf8');
    const actor = describeActor(vector.actor);
    if (actor.push) line.sizes = pushSizes(actor, record.message.args, messageId, timestampMs / 1000);
  } catch (error) {
    line.errors = error.issues ? error.issues.map((issue) => issue.path) : [`${error.name}: ${error.message}`];
    if (error.issues) line.messages = error.issues.map((issue) => issue.message);
  }
  process.stdout.write(`${JSON.stringify(line)}\n`);
}
