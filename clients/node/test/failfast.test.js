'use strict';
// Failing fast with Kafka gone: a closed port, and a port that accepts but never answers.
// (Recovery, against a Kafka that stops and starts, is tests/test_node_client.py's.)

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { createKafkaService, KafkaUnavailableError, PayloadError } = require('../src');

/** Generous: the point is 2 s rather than kafkajs's 25, on a slow, shared machine. */
const SLACK_MS = 1500;
/** What a send with the circuit open may take: the median (a shared machine may
 * keep a process off a core that long now and then), and any one of them (far
 * below a connection attempt's retries, about 1 s). */
const CIRCUIT_OPEN_MS = 50;
const CIRCUIT_OPEN_MAX_MS = 500;
const MATCH = ['user123', { name: 'Анна', age: 25 }];

const quiet = { warn: () => {}, info: () => {} };

async function timed(promise) {
  const started = performance.now();
  try {
    await promise;
    return { ms: performance.now() - started, error: null };
  } catch (error) {
    return { ms: performance.now() - started, error };
  }
}

async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function assertFailsFastThenShortCircuits(service, sendTimeoutMs) {
  const first = await timed(service.sendMatchNotification(...MATCH));
  assert.ok(first.error instanceof KafkaUnavailableError, String(first.error));
  assert.equal(first.error.circuitOpen, false);
  assert.equal(first.error.maybeSent, false, 'no connection was made, so nothing can arrive later');
  assert.ok(first.ms < sendTimeoutMs + SLACK_MS, `the first send took ${first.ms} ms`);
  assert.equal(service.status().circuit, 'open');

  const times = [];
  for (let i = 0; i < 21; i += 1) {
    const later = await timed(service.sendLikeNotification('user456', { name: 'Мария', age: 28 }));
    assert.ok(later.error instanceof KafkaUnavailableError && later.error.circuitOpen, String(later.error));
    assert.ok(later.ms < CIRCUIT_OPEN_MAX_MS, `a send with the circuit open took ${later.ms} ms`);
    times.push(later.ms);
  }
  const median = times.sort((a, b) => a - b)[10];
  assert.ok(median < CIRCUIT_OPEN_MS, `sends with the circuit open took ${median} ms (median)`);
}

test('with nothing listening, the first send rejects within the send timeout, later ones at once', async () => {
  const service = createKafkaService({ brokers: `127.0.0.1:${await closedPort()}`, logLevel: 'NOTHING', logger: quiet }, {});
  try {
    await assertFailsFastThenShortCircuits(service, service.config.sendTimeoutMs);
    assert.equal(service.config.sendTimeoutMs, 2000, 'the default');
  } finally {
    await service.disconnect();
  }
});

test('a Kafka that accepts connections but never answers is cut off at the send timeout', async () => {
  const sockets = new Set();
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const sendTimeoutMs = 800;
  const service = createKafkaService({
    brokers: `127.0.0.1:${silent.address().port}`, sendTimeoutMs, logLevel: 'NOTHING', logger: quiet,
  }, {});
  try {
    await assertFailsFastThenShortCircuits(service, sendTimeoutMs);
  } finally {
    await service.disconnect();
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});

test('bad arguments are refused as such even while the circuit is open', async () => {
  const service = createKafkaService({ brokers: `127.0.0.1:${await closedPort()}`, logLevel: 'NOTHING', logger: quiet }, {});
  try {
    await assert.rejects(service.sendMatchNotification(...MATCH), KafkaUnavailableError);
    await assert.rejects(service.sendMatchNotification('user123', { name: 'Анна', age: 12 }),
      (error) => error instanceof PayloadError && error.path === 'payload.age' && !/12/.test(error.message));
  } finally {
    await service.disconnect();
  }
});

test('the circuit reports its cause, and a disconnected service refuses to send', async () => {
  const opened = [];
  const service = createKafkaService({
    brokers: `127.0.0.1:${await closedPort()}`, logLevel: 'NOTHING', logger: { warn: (m) => opened.push(m), info: () => {} },
  }, {});
  await assert.rejects(service.sendAnalyticsEvent('user_login', { userId: 'user123' }), KafkaUnavailableError);
  assert.equal(opened.length, 1);
  assert.match(opened[0], /ECONNREFUSED/);
  assert.match(service.status().lastError, /ECONNREFUSED/);
  await service.disconnect();
  await assert.rejects(service.sendAnalyticsEvent('user_login', {}), /disconnected/);
});
