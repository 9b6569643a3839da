'use strict';
/**
 * Settings: the only module that reads the environment.
 *
 * The guide's names (`KAFKA_BROKER`, `KAFKA_CLIENT_ID`, `KAFKA_RETRY_INITIAL`,
 * `KAFKA_RETRY_RETRIES`) mean what they meant for its kafkajs service; the
 * rest are this client's (fail fast) and the security issue's (TLS, SASL).
 * Options given to `createKafkaService()` win over the environment. Every bad
 * value is reported at once, naming the variable (or option), never echoing
 * a password.
 */

const fs = require('node:fs');
const { logLevel: LOG_LEVELS } = require('kafkajs');
const { ConfigError } = require('./errors');

// The variables Python's settings have too (willowe_tasks/settings.py) take
// the same defaults and ranges there, so one environment means the same to
// both; tests/test_node_client.py compares them.

/** How long the first send to a Kafka that is gone may take before it rejects, ms. */
const DEFAULT_SEND_TIMEOUT_MS = 2000;
/** How often an open circuit tries Kafka again, ms. */
const DEFAULT_PROBE_INTERVAL_MS = 3000;

const SECURITY_PROTOCOLS = ['PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'];
/** SASL mechanisms as the security settings spell them, and as kafkajs does. */
const SASL_MECHANISMS = { 'SCRAM-SHA-512': 'scram-sha-512', 'SCRAM-SHA-256': 'scram-sha-256', PLAIN: 'plain' };

/** Each setting: its variable, its option, its default and how to read it. */
const SETTINGS = [
  { option: 'brokers', env: 'KAFKA_BROKER', fallback: 'localhost:9092', read: brokerList },
  { option: 'clientId', env: 'KAFKA_CLIENT_ID', fallback: 'willowe-notifications', read: nonEmpty },
  { option: 'retryInitialMs', env: 'KAFKA_RETRY_INITIAL', fallback: 100, read: integerBetween(1, 3_600_000) },
  { option: 'retryRetries', env: 'KAFKA_RETRY_RETRIES', fallback: 8, read: integerBetween(0, 1000) },
  { option: 'sendTimeoutMs', env: 'KAFKA_SEND_TIMEOUT_MS', fallback: DEFAULT_SEND_TIMEOUT_MS, read: integerBetween(100, 120_000) },
  { option: 'probeIntervalMs', env: 'KAFKA_PROBE_INTERVAL_MS', fallback: DEFAULT_PROBE_INTERVAL_MS, read: integerBetween(100, 600_000) },
  { option: 'logLevel', env: 'KAFKA_LOG_LEVEL', fallback: 'ERROR', read: oneOf(Object.keys(LOG_LEVELS)) },
  { option: 'securityProtocol', env: 'KAFKA_SECURITY_PROTOCOL', fallback: 'PLAINTEXT', read: oneOf(SECURITY_PROTOCOLS) },
  { option: 'saslMechanism', env: 'KAFKA_SASL_MECHANISM', fallback: undefined, read: oneOf(Object.keys(SASL_MECHANISMS)) },
  { option: 'saslUsername', env: 'KAFKA_SASL_USERNAME', fallback: undefined, read: nonEmpty },
  { option: 'saslPassword', env: 'KAFKA_SASL_PASSWORD', fallback: undefined, read: verbatim },
  { option: 'saslPasswordFile', env: 'KAFKA_SASL_PASSWORD_FILE', fallback: undefined, read: nonEmpty },
  { option: 'sslCaFile', env: 'KAFKA_SSL_CA_FILE', fallback: undefined, read: nonEmpty },
];

/**
 * @param {object} [options] camelCase settings (see SETTINGS), plus `encryptRecord`
 *   and `logger`, which only options can give
 * @param {NodeJS.ProcessEnv} [env]
 * @returns {Readonly<object>} the settings; the password is reachable only
 *   through `kafkajsOptions()`, never as a property
 * @throws {ConfigError} naming every bad variable or option
 */
function loadConfig(options = {}, env = process.env) {
  const problems = [];
  const values = {};
  const known = new Set([...SETTINGS.map((s) => s.option), 'encryptRecord', 'logger']);
  for (const option of Object.keys(options)) {
    if (!known.has(option)) problems.push(`options.${option}: not a setting of this client`);
  }
  for (const setting of SETTINGS) {
    const fromOption = options[setting.option] !== undefined;
    const raw = fromOption ? options[setting.option] : env[setting.env];
    const where = fromOption ? `options.${setting.option}` : setting.env;
    if (raw === undefined || raw === '') {
      values[setting.option] = setting.fallback === undefined ? undefined : setting.read(setting.fallback);
      continue;
    }
    try {
      values[setting.option] = setting.read(raw);
    } catch (problem) {
      problems.push(`${where}: ${problem.message}`);
    }
  }
  const password = security(values, problems);
  if (options.encryptRecord !== undefined && typeof options.encryptRecord !== 'function') {
    problems.push('options.encryptRecord: must be a function');
  }
  if (problems.length > 0) throw new ConfigError(`bad Kafka client settings: ${problems.join('; ')}`);

  const config = {
    brokers: values.brokers,
    clientId: values.clientId,
    retry: { initialRetryTime: values.retryInitialMs, retries: values.retryRetries },
    sendTimeoutMs: values.sendTimeoutMs,
    probeIntervalMs: values.probeIntervalMs,
    logLevel: values.logLevel,
    securityProtocol: values.securityProtocol,
    saslMechanism: values.saslMechanism,
    saslUsername: values.saslUsername,
    sslCaFile: values.sslCaFile,
    encryptRecord: options.encryptRecord,
    logger: options.logger,
  };
  // A function, not a property: the password never shows in a log of the config.
  Object.defineProperty(config, 'kafkajsOptions', {
    value: () => kafkajsOptions(config, password),
    enumerable: false,
  });
  return Object.freeze(config);
}

/** TLS and SASL settings checked together; the password, read from wherever it is. */
function security(values, problems) {
  const protocol = values.securityProtocol;
  const sasl = protocol.startsWith('SASL_');
  const ssl = protocol === 'SSL' || protocol === 'SASL_SSL';
  let password;
  if (sasl) {
    if (!values.saslMechanism) problems.push(`KAFKA_SASL_MECHANISM: needed with ${protocol}`);
    if (!values.saslUsername) problems.push(`KAFKA_SASL_USERNAME: needed with ${protocol}`);
    if (values.saslPassword !== undefined && values.saslPasswordFile !== undefined) {
      problems.push('KAFKA_SASL_PASSWORD_FILE: give it or KAFKA_SASL_PASSWORD, not both');
    } else if (values.saslPasswordFile !== undefined) {
      try {
        password = fs.readFileSync(values.saslPasswordFile, 'utf8').replace(/\r?\n$/, '');
      } catch (error) {
        problems.push(`KAFKA_SASL_PASSWORD_FILE: can't read ${values.saslPasswordFile} (${error.code})`);
      }
    } else if (values.saslPassword !== undefined) {
      password = values.saslPassword;
    } else {
      problems.push(`KAFKA_SASL_PASSWORD: needed with ${protocol} (or KAFKA_SASL_PASSWORD_FILE)`);
    }
  } else {
    for (const [option, name] of [['saslMechanism', 'KAFKA_SASL_MECHANISM'], ['saslUsername', 'KAFKA_SASL_USERNAME'],
      ['saslPassword', 'KAFKA_SASL_PASSWORD'], ['saslPasswordFile', 'KAFKA_SASL_PASSWORD_FILE']]) {
      if (values[option] !== undefined) problems.push(`${name}: only used with SASL_SSL or SASL_PLAINTEXT, not ${protocol}`);
    }
  }
  if (values.sslCaFile !== undefined) {
    if (!ssl) problems.push(`KAFKA_SSL_CA_FILE: only used with SSL or SASL_SSL, not ${protocol}`);
    else if (!fs.existsSync(values.sslCaFile)) problems.push(`KAFKA_SSL_CA_FILE: no file ${values.sslCaFile}`);
  }
  return password;
}

/** What kafkajs's `new Kafka()` takes for these settings. */
function kafkajsOptions(config, password) {
  const options = {
    clientId: config.clientId,
    brokers: config.brokers,
    retry: config.retry,
    logLevel: LOG_LEVELS[config.logLevel],
  };
  if (config.securityProtocol === 'SSL' || config.securityProtocol === 'SASL_SSL') {
    options.ssl = config.sslCaFile ? { ca: [fs.readFileSync(config.sslCaFile, 'utf8')] } : true;
  }
  if (config.securityProtocol.startsWith('SASL_')) {
    options.sasl = { mechanism: SASL_MECHANISMS[config.saslMechanism], username: config.saslUsername, password };
  }
  return options;
}

function brokerList(raw) {
  const list = (Array.isArray(raw) ? raw : String(raw).split(',')).map((s) => String(s).trim()).filter(Boolean);
  if (list.length === 0) throw new Error('must name at least one host:port');
  for (const address of list) {
    const match = /^(.+):(\d+)$/.exec(address);
    if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
      throw new Error(`${JSON.stringify(address)} is not host:port`);
    }
  }
  return list;
}

/** A password: as given, spaces included. */
function verbatim(raw) {
  return String(raw);
}

function nonEmpty(raw) {
  const text = String(raw).trim();
  if (!text) throw new Error('must not be empty');
  return text;
}

function integerBetween(minimum, maximum) {
  const read = (raw) => {
    const number = typeof raw === 'number' ? raw : /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(number) || number < minimum || number > maximum) {
      throw new Error(`must be a whole number from ${minimum} to ${maximum}, got ${JSON.stringify(String(raw))}`);
    }
    return number;
  };
  read.range = { minimum, maximum };
  return read;
}

function oneOf(choices) {
  return (raw) => {
    const text = String(raw).trim().toUpperCase();
    if (!choices.includes(text)) throw new Error(`must be one of ${choices.join(', ')}`);
    return text;
  };
}

/** Each environment variable with its default and, for a number, its range. */
function describeSettings() {
  return SETTINGS.map(({ env, option, fallback, read }) => ({ env, option, fallback, ...read.range }));
}

module.exports = { DEFAULT_PROBE_INTERVAL_MS, DEFAULT_SEND_TIMEOUT_MS, describeSettings, loadConfig };
