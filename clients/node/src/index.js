'use strict';
/**
 * Send Willowe notifications from Node.js to the Python workers, through Kafka.
 *
 *     const { kafkaService } = require('@willowe/tasks-producer');   // settings from the environment
 *     await kafkaService.sendMatchNotification('user123', { name: 'Анна', age: 25 });
 *
 *     await kafkaService.registerDevice('user123', 'ios', apnsToken, 'com.willowe.app');
 *
 *     const { createKafkaService } = require('@willowe/tasks-producer');
 *     const service = createKafkaService({ brokers: ['kafka:9092'], sendTimeoutMs: 1000 });
 *
 * A phone is registered the way a notification is sent: a record on Kafka,
 * which a worker applies to the device registry with the registry's rules.
 */

const { KafkaService } = require('./service');
const { buildRecord } = require('./record');
const { ConfigError, KafkaUnavailableError, PayloadError, WilloweError } = require('./errors');
const { PRIORITY_WORDS, WIRE_FORMAT_VERSION } = require('./schema');

/** A service with these options (they win over the environment). */
function createKafkaService(options = {}, env = process.env) {
  return new KafkaService(options, env);
}

let defaultService = null;

function defaultKafkaService() {
  if (defaultService === null) defaultService = new KafkaService();
  return defaultService;
}

/**
 * The guide's `kafkaService`: one service for the process, configured from
 * the environment when first used (a bad variable rejects that first call).
 */
const kafkaService = Object.freeze({
  sendMatchNotification: async (userId, data) => defaultKafkaService().sendMatchNotification(userId, data),
  sendFastMatchNotification: async (userId, data) => defaultKafkaService().sendFastMatchNotification(userId, data),
  sendLikeNotification: async (userId, data) => defaultKafkaService().sendLikeNotification(userId, data),
  sendOneNightNotification: async (userId, data) => defaultKafkaService().sendOneNightNotification(userId, data),
  sendAnalyticsEvent: async (event, data) => defaultKafkaService().sendAnalyticsEvent(event, data),
  sendMessage: async (topic, message, priority) => defaultKafkaService().sendMessage(topic, message, priority),
  registerDevice: async (userId, platform, token, appId) => defaultKafkaService().registerDevice(userId, platform, token, appId),
  unregisterDevice: async (token) => defaultKafkaService().unregisterDevice(token),
  status: () => (defaultService === null ? { circuit: 'closed', openSince: null, lastError: null } : defaultService.status()),
  disconnect: async () => {
    const service = defaultService;
    defaultService = null;
    if (service !== null) await service.disconnect();
  },
});

module.exports = {
  ConfigError,
  KafkaService,
  KafkaUnavailableError,
  PRIORITY_WORDS,
  PayloadError,
  WIRE_FORMAT_VERSION,
  WilloweError,
  buildRecord,
  createKafkaService,
  kafkaService,
};
