'use strict';
// registerDevice / unregisterDevice: checked before anything is sent, errors that
// never quote a token, and the key that keeps one token's changes in order.
// (The shared vectors pin each rule; tests/test_node_registration.py compares with Python.)

const test = require('node:test');
const assert = require('node:assert/strict');
const { kafkaService, PayloadError } = require('../src');
const { buildRecord } = require('../src/record');
const { loadVectors } = require('../testing/vectors');
const { offlineService, refusal } = require('../testing/offline');

const IOS_TOKEN = 'A1B2C3D4'.repeat(8);

test('a bad registration is refused by name before Kafka is tried; a good one reaches the send', async () => {
  const service = offlineService();
  try {
    const bad = await refusal(service.registerDevice('user123', 'ios', `${IOS_TOKEN}a`, 'com.willowe.app'));
    assert.ok(bad instanceof PayloadError, bad.message);
    assert.equal(bad.path, 'token');
    assert.match(bad.message, /^invalid arguments for register_device: token: iOS token must have an even number of hex digits, got 65$/);
    // The circuit is still closed: nothing was attempted.
    assert.equal(service.status().circuit, 'closed');

    const good = await refusal(service.registerDevice('user123', 'ios', IOS_TOKEN, 'com.willowe.app'));
    assert.equal(good.name, 'KafkaUnavailableError');
    assert.match(good.message, /the register_device record/);
    assert.doesNotMatch(good.message, new RegExp(IOS_TOKEN, 'i'));
  } finally {
    await service.disconnect();
  }
});

test('unregisterDevice is checked too, and reaches the send', async () => {
  const service = offlineService();
  try {
    assert.equal((await refusal(service.unregisterDevice('   '))).path, 'token');
    const good = await refusal(service.unregisterDevice(IOS_TOKEN));
    assert.equal(good.name, 'KafkaUnavailableError');
    assert.match(good.message, /the unregister_device record/);
  } finally {
    await service.disconnect();
  }
});

test('no error quotes a token: not the refused one, nor one passed where the platform goes', () => {
  const tokenVectors = loadVectors().filter((vector) => vector.errors.length > 0
    && ['register_device', 'unregister_device'].includes(vector.actor));
  let checked = 0;
  for (const vector of tokenVectors) {
    const token = vector.actor === 'register_device' ? vector.args[2] : vector.args[0];
    if (typeof token !== 'string' || token.trim().length < 8) continue;
    assert.throws(() => buildRecord(vector.actor, vector.args), (error) => {
      assert.ok(!error.message.includes(token.trim()), vector.name);
      return true;
    });
    checked += 1;
  }
  assert.ok(checked >= 8, `only ${checked} vectors with a token to look for`);
  // Arguments swapped: the token lands in platform, and is not quoted back.
  assert.throws(() => buildRecord('register_device', ['user123', IOS_TOKEN, 'ios', 'com.willowe.app']), (error) => {
    assert.equal(error.path, 'platform');
    assert.ok(!error.message.includes(IOS_TOKEN), error.message);
    return true;
  });
});

test('a call with arguments missing or too many is a TypeError, as in Python', () => {
  assert.throws(() => buildRecord('register_device', ['user123', 'ios', IOS_TOKEN]), {
    name: 'TypeError', message: 'missing argument(s): app_id' });
  assert.throws(() => buildRecord('unregister_device', [IOS_TOKEN, 'extra']), {
    name: 'TypeError', message: 'expected at most 1 arguments (token), got 2' });
});

test('a token with a lone surrogate can\'t be unregistered (it has no UTF-8 bytes to hash)', () => {
  assert.throws(() => buildRecord('unregister_device', ['abc\ud800def']), (error) => {
    assert.ok(error instanceof PayloadError);
    assert.equal(error.path, 'token');
    return true;
  });
});

test('a registration and its unregistration, in any spelling, share the key; notifications have none', () => {
  const register = buildRecord('register_device', ['user123', 'ios', IOS_TOKEN, 'com.willowe.app']);
  const unregister = buildRecord('unregister_device', [IOS_TOKEN.toLowerCase()]);
  assert.match(register.key.toString(), /^sha256:[0-9a-f]{64}$/);
  assert.deepEqual(register.key, unregister.key);
  assert.equal(register.message.args[2], IOS_TOKEN.toLowerCase());
  const other = buildRecord('register_device', ['user123', 'ios', 'ff'.repeat(32), 'com.willowe.app']);
  assert.notDeepEqual(other.key, register.key);
  assert.equal(buildRecord('send_like', ['user456', { name: 'Мария', age: 28 }]).key, null);
});

test('the guide-style kafkaService registers and unregisters too (checked before it connects)', async () => {
  try {
    assert.equal((await refusal(kafkaService.registerDevice('user123', 'windows', IOS_TOKEN, 'com.willowe.app'))).path, 'platform');
    assert.equal((await refusal(kafkaService.unregisterDevice(''))).path, 'token');
  } finally {
    await kafkaService.disconnect();
  }
});
