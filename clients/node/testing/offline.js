'use strict';
/**
 * Helpers for tests of what a send checks before it tries Kafka.
 */

const { createKafkaService } = require('../src');

/** A service whose sends stop right after the checks: nothing is listening on port 9. */
function offlineService() {
  return createKafkaService({ brokers: '127.0.0.1:9', sendTimeoutMs: 100, logLevel: 'NOTHING', logger: { warn() {}, info() {} } }, {});
}

/** The error a promise rejects with (a test failure if it resolves). */
async function refusal(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

module.exports = { offlineService, refusal };
