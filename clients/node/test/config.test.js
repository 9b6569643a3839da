'use strict';
// Settings from the guide's environment names, options over them, errors naming each bad one.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');
const { loadConfig } = require('../src/config');
const { ConfigError } = require('../src/errors');
const { retryWithin } = require('../src/session');

test('the guide\'s variables and their defaults', () => {
  const defaults = loadConfig({}, {});
  assert.deepEqual(defaults.brokers, ['localhost:9092']);
  assert.equal(defaults.clientId, 'willowe-notifications');
  assert.deepEqual(defaults.retry, { initialRetryTime: 100, retries: 8 });
  assert.equal(defaults.sendTimeoutMs, 2000);
  assert.equal(defaults.probeIntervalMs, 3000);

  const config = loadConfig({}, {
    KAFKA_BROKER: 'k1:9092, k2:9093', KAFKA_CLIENT_ID: 'web', KAFKA_RETRY_INITIAL: '250', KAFKA_RETRY_RETRIES: '3',
    KAFKA_SEND_TIMEOUT_MS: '500', KAFKA_PROBE_INTERVAL_MS: '1000',
  });
  assert.deepEqual(config.brokers, ['k1:9092', 'k2:9093']);
  assert.equal(config.clientId, 'web');
  assert.deepEqual(config.retry, { initialRetryTime: 250, retries: 3 });
  assert.equal(config.sendTimeoutMs, 500);
  assert.equal(config.probeIntervalMs, 1000);
});

test('options win over the environment', () => {
  const config = loadConfig({ brokers: ['a:1'], sendTimeoutMs: 300 }, { KAFKA_BROKER: 'b:2', KAFKA_SEND_TIMEOUT_MS: '900' });
  assert.deepEqual(config.brokers, ['a:1']);
  assert.equal(config.sendTimeoutMs, 300);
});

test('every bad variable is named in one error', () => {
  assert.throws(
    () => loadConfig({}, { KAFKA_BROKER: 'no-port', KAFKA_RETRY_RETRIES: '-1', KAFKA_SEND_TIMEOUT_MS: '2s' }),
    (error) => error instanceof ConfigError
      && /KAFKA_BROKER: "no-port" is not host:port/.test(error.message)
      && /KAFKA_RETRY_RETRIES: must be a whole number from 0 to 1000/.test(error.message)
      && /KAFKA_SEND_TIMEOUT_MS: must be a whole number from 100 to 120000/.test(error.message),
  );
  // The same ranges as Python's settings of these names.
  assert.throws(() => loadConfig({}, { KAFKA_SEND_TIMEOUT_MS: '99' }), /KAFKA_SEND_TIMEOUT_MS: must be a whole number from 100/);
  assert.throws(() => loadConfig({ probeIntervalMs: 600_001 }, {}), /options.probeIntervalMs: must be a whole number from 100 to 600000/);
  assert.throws(() => loadConfig({ sendTimeoutMS: 10 }, {}), /options.sendTimeoutMS: not a setting/);
});

test('SASL_SSL with SCRAM becomes kafkajs ssl and sasl options; the password shows nowhere', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'willowe-config-'));
  const ca = path.join(dir, 'ca.pem');
  const passwordFile = path.join(dir, 'password');
  fs.writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  fs.writeFileSync(passwordFile, 's3cret-from-file\n');
  const env = {
    KAFKA_SECURITY_PROTOCOL: 'SASL_SSL', KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512', KAFKA_SASL_USERNAME: 'web',
    KAFKA_SASL_PASSWORD_FILE: passwordFile, KAFKA_SSL_CA_FILE: ca,
  };
  const config = loadConfig({}, env);
  const options = config.kafkajsOptions();
  assert.deepEqual(options.sasl, { mechanism: 'scram-sha-512', username: 'web', password: 's3cret-from-file' });
  assert.match(options.ssl.ca[0], /BEGIN CERTIFICATE/);
  assert.doesNotMatch(util.inspect(config, { depth: 5, showHidden: false }), /s3cret/);
  assert.doesNotMatch(JSON.stringify(config), /s3cret/);

  const inline = loadConfig({}, { ...env, KAFKA_SASL_PASSWORD_FILE: '', KAFKA_SASL_PASSWORD: ' spaced ' });
  assert.equal(inline.kafkajsOptions().sasl.password, ' spaced ');
});

test('security settings that don\'t go together are named', () => {
  assert.throws(() => loadConfig({}, { KAFKA_SECURITY_PROTOCOL: 'SASL_SSL' }),
    (error) => /KAFKA_SASL_MECHANISM: needed/.test(error.message) && /KAFKA_SASL_USERNAME: needed/.test(error.message)
      && /KAFKA_SASL_PASSWORD: needed/.test(error.message));
  assert.throws(() => loadConfig({}, { KAFKA_SASL_USERNAME: 'web' }), /KAFKA_SASL_USERNAME: only used with SASL/);
  assert.throws(() => loadConfig({}, { KAFKA_SECURITY_PROTOCOL: 'SSL', KAFKA_SSL_CA_FILE: '/nonexistent/ca.pem' }),
    /KAFKA_SSL_CA_FILE: no file/);
  assert.throws(
    () => loadConfig({}, { KAFKA_SECURITY_PROTOCOL: 'SASL_PLAINTEXT', KAFKA_SASL_MECHANISM: 'PLAIN', KAFKA_SASL_USERNAME: 'web',
      KAFKA_SASL_PASSWORD: 'hunter2-secret', KAFKA_SASL_PASSWORD_FILE: '/x' }),
    (error) => /not both/.test(error.message) && !/hunter2/.test(error.message));
});

test('kafkajs retries are cut to what fits in the send timeout', () => {
  // Waits of 100 ms ±20 %, doubling: 120 + 288 + 691 ms fit in 2 s at worst, a fourth does not.
  assert.deepEqual(retryWithin({ initialRetryTime: 100, retries: 8 }, 2000), { initialRetryTime: 100, retries: 3, maxRetryTime: 2000 });
  assert.equal(retryWithin({ initialRetryTime: 100, retries: 1 }, 2000).retries, 1);
  assert.equal(retryWithin({ initialRetryTime: 5000, retries: 8 }, 2000).retries, 0);
});
