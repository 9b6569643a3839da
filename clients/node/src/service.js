'use strict';
/**
 * The guide's kafkaService: sends notifications, analytics events and device
 * registrations as records the Python workers process, and fails fast so the
 * caller's fallback runs.
 *
 *     try {
 *       await kafkaService.sendLikeNotification(userId, { name: 'Мария', age: 28 });
 *     } catch (error) {
 *       await notificationService.sendLikeNotification(userId);   // the old path
 *     }
 *
 * Every send checks its arguments first (a PayloadError names the field;
 * nothing is sent). Then it waits for Kafka's acknowledgement (acks=all) for
 * at most `sendTimeoutMs` (2 s by default), connection included. A send that
 * fails or times out opens the circuit: from then on every send rejects at
 * once with `circuitOpen`, until a background probe finds Kafka answering.
 */

const { buildRecord } = require('./record');
const { band, bandOfTopic } = require('./schema');
const { loadConfig } = require('./config');
const { Circuit } = require('./circuit');
const { ProducerSession } = require('./session');
const { KafkaUnavailableError, PayloadError } = require('./errors');

class KafkaService {
  /**
   * @param {object} [options] settings that win over the environment: brokers,
   *   clientId, retryInitialMs, retryRetries, sendTimeoutMs, probeIntervalMs,
   *   logLevel, the security settings (see config.js), and
   *   - encryptRecord: async ({topic, value, headers}) => ({value, headers}),
   *     applied to each record before it is produced (the security issue's
   *     payload encryption plugs in here; none by default);
   *   - logger: {warn, info} for the circuit's changes (default: console).
   * @param {NodeJS.ProcessEnv} [env]
   */
  constructor(options = {}, env = process.env) {
    this.config = loadConfig(options, env);
    this._logger = this.config.logger || console;
    this._session = null;
    this._closed = false;
    this._where = this.config.brokers.join(',');
    this._circuit = new Circuit({
      probeIntervalMs: this.config.probeIntervalMs,
      probe: () => this._probe(),
      onOpen: (error) => this._logger.warn(
        `Kafka at ${this._where} is unavailable (${describeCause(error)}); sends fail at once`
        + ` until it answers again (tried every ${this.config.probeIntervalMs} ms).`),
      onClose: (openMs) => this._logger.info(
        `Kafka at ${this._where} answers again; sends resume after ${openMs} ms.`),
    });
  }

  /** A match (high priority). `data`: {name, age, photoUrl?, senderId?, matchId?}. */
  sendMatchNotification(userId, data) {
    return this._send('send_match', [userId, data]);
  }

  /** A fast match (high priority, stale after 15 minutes); same data as a match. */
  sendFastMatchNotification(userId, data) {
    return this._send('send_fast_match', [userId, data]);
  }

  /** A like (medium priority). `data`: {name, age, senderId?}. */
  sendLikeNotification(userId, data) {
    return this._send('send_like', [userId, data]);
  }

  /** A one-night request (medium priority); same data as a match. */
  sendOneNightNotification(userId, data) {
    return this._send('send_one_night', [userId, data]);
  }

  /** An analytics event (low priority), such as `user_login`; `data` is free-form JSON. */
  sendAnalyticsEvent(event, data) {
    return this._send('track_event', [event, data]);
  }

  /**
   * The guide's direct send: a custom notification
   * `{type, targetUserId, title, body, ttl_s?, data?}`.
   *
   * The priority word picks the topic, as everywhere: `topic` may be left out
   * (null or undefined), or must be that priority's topic. With no priority,
   * the topic's priority is used, and with neither, high.
   */
  async sendMessage(topic, message, priority) {
    const word = priorityFor(topic, priority);
    return this._send(`send_notification_${word}`, [message]);
  }

  /**
   * Register a phone: a worker adds it to the device registry (the one the
   * workers push from), or moves the token to this user. Call it at every app
   * launch. `platform`: `ios` or `android`; `token`: the APNs device token
   * (hex, either case: stored lower-case) or the FCM registration token;
   * `appId`: the bundle id or package name. Checked by the registry's rules
   * first (a PayloadError names the field, never quoting the token).
   *
   * It resolves once Kafka has the record; the device is known once a worker
   * applied it, about as soon as a match is pushed (same topic). The record is
   * keyed by the token's hash, so the changes of one token stay in order.
   */
  registerDevice(userId, platform, token, appId) {
    return this._send('register_device', [userId, platform, token, appId]);
  }

  /** Forget a phone (the user signed out): the token as registered, in any case for iOS. */
  unregisterDevice(token) {
    return this._send('unregister_device', [token]);
  }

  /**
   * Wait for the sends in flight, then close the connection and stop probing.
   * Later sends reject.
   */
  async disconnect() {
    this._closed = true;
    this._circuit.stop();
    const session = this._session;
    this._session = null;
    if (session) await session.close();
  }

  /** {circuit: 'closed'|'open', openSince: Date|null, lastError: string|null} */
  status() {
    return {
      circuit: this._circuit.isOpen ? 'open' : 'closed',
      openSince: this._circuit.openSince,
      lastError: this._circuit.lastError ? describeCause(this._circuit.lastError) : null,
    };
  }

  async _send(actorName, args) {
    const record = buildRecord(actorName, args);
    if (this._closed) {
      throw new KafkaUnavailableError('the Kafka service was disconnected',
        { circuitOpen: false, maybeSent: false, messageId: record.messageId });
    }
    if (this._circuit.isOpen) {
      throw new KafkaUnavailableError(
        `Kafka at ${this._where} is unavailable since ${this._circuit.openSince.toISOString()}`
        + ` (${describeCause(this._circuit.lastError)}); not sent`,
        { circuitOpen: true, maybeSent: false, messageId: record.messageId });
    }
    const session = this._currentSession();
    const deadline = new Deadline(this.config.sendTimeoutMs);
    let requested = false;
    try {
      await deadline.race(session.connect());
      const { value, headers } = await deadline.race(this._encrypt(record));
      requested = true;
      const [written] = await deadline.race(session.producer.send({
        topic: record.topic,
        acks: -1,
        timeout: this.config.sendTimeoutMs,
        messages: [{ key: record.key, value, headers }],
      }));
      return { messageId: record.messageId, topic: record.topic, partition: written.partition, offset: written.baseOffset };
    } catch (error) {
      if (error instanceof PayloadError) throw error;
      this._fail(session, error);
      throw new KafkaUnavailableError(
        `Kafka at ${this._where} did not take the ${actorName} record: ${describeCause(error)}`
        + ` (a send waits at most ${this.config.sendTimeoutMs} ms)`,
        { circuitOpen: false, maybeSent: requested, messageId: record.messageId, cause: error });
    } finally {
      deadline.clear();
    }
  }

  async _encrypt(record) {
    if (!this.config.encryptRecord) return { value: record.value, headers: record.headers };
    return this.config.encryptRecord({ topic: record.topic, value: record.value, headers: { ...record.headers } });
  }

  _currentSession() {
    if (this._session === null) this._session = new ProducerSession(this.config);
    return this._session;
  }

  /** A send failed: drop its session (nothing it holds is sent later) and open the circuit. */
  _fail(session, error) {
    session.abandon();
    if (this._session === session) this._session = null;
    this._circuit.open(error);
  }

  /** Does Kafka answer? A fresh session connects; on success it serves the next sends. */
  async _probe() {
    if (this._closed) return;
    const session = new ProducerSession(this.config);
    const deadline = new Deadline(this.config.sendTimeoutMs);
    try {
      await deadline.race(session.connect());
    } catch (error) {
      session.abandon();
      throw error;
    } finally {
      deadline.clear();
    }
    if (this._closed) {
      await session.close();
      return;
    }
    this._session = session;
  }
}

/** A time limit several awaits share. */
class Deadline {
  constructor(ms) {
    this.ms = ms;
    this._timer = null;
    this._expired = new Promise((_, reject) => {
      this._timer = setTimeout(() => reject(new SendTimeout(ms)), ms);
    });
    this._expired.catch(() => {});
  }

  race(promise) {
    return Promise.race([promise, this._expired]);
  }

  clear() {
    clearTimeout(this._timer);
  }
}

class SendTimeout extends Error {
  constructor(ms) {
    super(`no answer within ${ms} ms`);
    this.name = 'SendTimeout';
  }
}

/** The topic's priority word, checking that topic and priority agree. */
function priorityFor(topic, priority) {
  const topicBand = topic === null || topic === undefined ? undefined : bandOfTopic(topic);
  if (topic !== null && topic !== undefined && topicBand === undefined) {
    throw new PayloadError('sendMessage', [{ path: 'topic', message: `${JSON.stringify(topic)} is not a notification topic` }]);
  }
  if (priority === null || priority === undefined) return topicBand ? topicBand.word : 'high';
  let chosen;
  try {
    chosen = band(priority);
  } catch (error) {
    throw new PayloadError('sendMessage', [{ path: 'priority', message: error.message }]);
  }
  if (topicBand && topicBand.word !== chosen.word) {
    throw new PayloadError('sendMessage', [{
      path: 'topic',
      message: `${topic} carries ${topicBand.word} priority, not ${chosen.word}: `
        + `pass ${chosen.topic}, or null to let the priority pick it`,
    }]);
  }
  return chosen.word;
}

/** An error's name and message, for logs and our own errors (kafkajs's name no values). */
function describeCause(error) {
  if (!error) return 'no error';
  const name = error.name || 'Error';
  return error.message ? `${name}: ${error.message}` : name;
}

module.exports = { KafkaService };
