'use strict';
// Records on a real Kafka: topic, headers, key and value as the Python workers read them.
// The broker comes from WILLOWE_TEST_KAFKA (make test's run sets it, with the topics made).

const test = require('node:test');
const assert = require('node:assert/strict');
const { createHash, randomUUID } = require('node:crypto');
const { Kafka, logLevel } = require('kafkajs');
const { createKafkaService } = require('../src');
const { validateRecord } = require('../src/schema');

const BROKER = process.env.WILLOWE_TEST_KAFKA;
const SKIP = BROKER ? false : 'needs a Kafka: WILLOWE_TEST_KAFKA=host:port (make test sets it)';
const READ_TIMEOUT_MS = 60_000;
const TOKEN = randomUUID().replaceAll('-', '').repeat(2);
const TOKEN_KEY = `sha256:${createHash('sha256').update(TOKEN).digest('hex')}`;

/**
 * Read the records of these sends back (bounded in time), from each one's
 * own partition and offset on. Not from the beginning: the Python producers
 * compress their batches with lz4 (KAFKA_COMPRESSION), which kafkajs can't
 * read without a codec plugin; from these offsets on only this test wrote.
 */
async function readBack(results) {
  const kafka = new Kafka({ clientId: 'willowe-node-tests', brokers: [BROKER], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `node-tests-${randomUUID()}` });
  const ids = results.map((r) => r.messageId);
  const firstOffsets = new Map();
  for (const r of results) {
    const where = `${r.topic}\u0000${r.partition}`;
    const offset = BigInt(r.offset);
    if (!firstOffsets.has(where) || offset < firstOffsets.get(where)) firstOffsets.set(where, offset);
  }
  const found = new Map();
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [...new Set(results.map((r) => r.topic))], fromBeginning: false });
    let done;
    const all = new Promise((resolve) => { done = resolve; });
    await consumer.run({
      eachMessage: async ({ topic, partition, message }) => {
        const id = message.headers['dramatiq-message-id']?.toString();
        if (ids.includes(id)) found.set(id, { topic, partition, message });
        if (found.size === ids.length) done();
      },
    });
    for (const [where, offset] of firstOffsets) {
      const [topic, partition] = where.split('\u0000');
      consumer.seek({ topic, partition: Number(partition), offset: offset.toString() });
    }
    let timer;
    await Promise.race([all, new Promise((resolve) => { timer = setTimeout(resolve, READ_TIMEOUT_MS); })]);
    clearTimeout(timer);
  } finally {
    await consumer.disconnect();
  }
  return found;
}

test('each send is one record on its priority\'s topic, as the workers read it (registrations keyed)', { skip: SKIP, timeout: 120_000 }, async () => {
  const service = createKafkaService({ brokers: BROKER, logLevel: 'ERROR' }, {});
  const sent = [];
  try {
    sent.push(['send_match', await service.sendMatchNotification('user123', { name: 'Анна', age: 25, photoUrl: 'https://example.com/photo.jpg' })]);
    sent.push(['send_like', await service.sendLikeNotification('user456', { name: 'Мария', age: 28 })]);
    sent.push(['track_event', await service.sendAnalyticsEvent('user_login', { userId: 'user123', timestamp: Date.now() })]);
    sent.push(['send_notification_high', await service.sendMessage('high-priority-notifications', {
      type: 'custom-notification', targetUserId: 'user123', title: 'Новое сообщение', body: 'У вас новое сообщение' }, 'high')]);
    sent.push(['register_device', await service.registerDevice('user123', 'ios', TOKEN.toUpperCase(), 'com.willowe.app')]);
    sent.push(['unregister_device', await service.unregisterDevice(TOKEN)]);
  } finally {
    await service.disconnect();
  }
  const found = await readBack(sent.map(([, result]) => result));
  for (const [actorName, result] of sent) {
    const record = found.get(result.messageId);
    assert.ok(record, `${actorName} ${result.messageId} was not found on Kafka`);
    assert.equal(record.topic, result.topic);
    assert.equal(record.partition, result.partition);
    assert.equal(record.message.offset, result.offset);
    // Registrations are keyed by the token's hash (lower-case iOS spelling), so
    // both land in one partition; notifications have no key.
    const key = actorName.endsWith('_device') ? TOKEN_KEY : null;
    assert.equal(record.message.key?.toString('utf8') ?? null, key);
    assert.equal(record.message.headers['dramatiq-actor'].toString(), actorName);
    const value = JSON.parse(record.message.value.toString('utf8'));
    assert.ok(validateRecord(value), JSON.stringify(validateRecord.errors));
    assert.equal(value.actor_name, actorName);
    assert.equal(value.queue_name, record.topic);
    assert.equal(value.message_id, result.messageId);
    assert.match(record.message.value.toString('latin1'), /^[\x20-\x7e]*$/, 'ASCII only, as Dramatiq writes');
  }
  const [registered, unregistered] = sent.slice(-2).map(([, result]) => result);
  assert.equal(registered.partition, unregistered.partition);
});
