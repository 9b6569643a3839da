'use strict';
// sendMessage(topic, message, priority): the priority picks the topic; the topic may be left out.

const test = require('node:test');
const assert = require('node:assert/strict');
const { PayloadError } = require('../src');
const { offlineService, refusal } = require('../testing/offline');

const NOTE = { type: 'custom-notification', targetUserId: 'user123', title: 'Новое сообщение', body: 'Текст' };

test('a topic that disagrees with the priority is named in the error', async () => {
  const service = offlineService();
  const error = await refusal(service.sendMessage('high-priority-notifications', NOTE, 'low'));
  assert.ok(error instanceof PayloadError);
  assert.equal(error.path, 'topic');
  assert.match(error.message, /pass low-priority-notifications, or null/);
  await service.disconnect();
});

test('an unknown priority or topic is named', async () => {
  const service = offlineService();
  assert.equal((await refusal(service.sendMessage(null, NOTE, 'urgent'))).path, 'priority');
  assert.equal((await refusal(service.sendMessage('notifications', NOTE, 'high'))).path, 'topic');
  await service.disconnect();
});

test('topic and priority that agree, either alone, or neither (high), pick the actor of that band', async () => {
  for (const [topic, priority, word] of [
    ['medium-priority-notifications', 'medium', 'medium'], [null, 'low', 'low'],
    ['low-priority-notifications', undefined, 'low'], [undefined, undefined, 'high'],
  ]) {
    const service = offlineService();
    // The checks pass; the send then fails on the closed port, naming the record's actor.
    const error = await refusal(service.sendMessage(topic, NOTE, priority));
    assert.equal(error.name, 'KafkaUnavailableError', `${topic}/${priority}: ${error.message}`);
    assert.match(error.message, new RegExp(`the send_notification_${word} record`));
    await service.disconnect();
  }
});
