'use strict';
/**
 * One kafkajs client and producer, from connection to abandonment.
 *
 * kafkajs retries a failed send for as long as its retry settings allow (about
 * 25 s with the guide's), and reconnects by itself while it does, even after
 * `disconnect()`. A send the caller was told had failed must not reach Kafka
 * later, behind the caller's fallback. So each session opens its sockets
 * through a gate: abandoning the session closes the gate, destroys its
 * sockets, and any connection kafkajs attempts afterwards fails at once.
 * Only a request already written to a socket before that may still land
 * (the error then says `maybeSent`). And kafkajs's retries are cut to what
 * fits in the send timeout: retrying past it serves nobody, and the timers of
 * an abandoned session's retries would keep the process alive.
 */

const net = require('node:net');
const tls = require('node:tls');
const { Kafka, Partitioners } = require('kafkajs');

/** Keep-alive probes on idle connections, as kafkajs's own socket factory sets. */
const KEEP_ALIVE_DELAY_MS = 60_000;
/** kafkajs's retry timing (kafkajs/src/retry): each wait is the last one, ±20 %, doubled. */
const KAFKAJS_RETRY_FACTOR = 0.2;
const KAFKAJS_RETRY_MULTIPLIER = 2;

/**
 * The guide's retry settings, with no more retries than kafkajs can wait out
 * (at worst) within `budgetMs`.
 */
function retryWithin({ initialRetryTime, retries }, budgetMs) {
  let wait = initialRetryTime * (1 + KAFKAJS_RETRY_FACTOR);
  let total = 0;
  let fitting = 0;
  while (fitting < retries && total + wait <= budgetMs) {
    total += wait;
    fitting += 1;
    wait = Math.min(wait * (1 + KAFKAJS_RETRY_FACTOR) * KAFKAJS_RETRY_MULTIPLIER, budgetMs);
  }
  return { initialRetryTime, retries: fitting, maxRetryTime: budgetMs };
}

class SocketGate {
  constructor() {
    this._sockets = new Set();
    this._closed = false;
  }

  /** A kafkajs socketFactory that opens sockets only while the gate is open. */
  socketFactory() {
    return ({ host, port, ssl, onConnect }) => {
      if (this._closed) {
        const refused = new net.Socket();
        process.nextTick(() => refused.destroy(new Error('the producer session was abandoned')));
        return refused;
      }
      const socket = ssl
        ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...ssl }, onConnect)
        : net.connect({ host, port }, onConnect);
      socket.setKeepAlive(true, KEEP_ALIVE_DELAY_MS);
      this._sockets.add(socket);
      socket.once('close', () => this._sockets.delete(socket));
      return socket;
    };
  }

  close() {
    this._closed = true;
    for (const socket of this._sockets) socket.destroy();
    this._sockets.clear();
  }
}

class ProducerSession {
  /** @param {ReturnType<import('./config').loadConfig>} config */
  constructor(config) {
    this._gate = new SocketGate();
    const kafka = new Kafka({
      ...config.kafkajsOptions(),
      retry: retryWithin(config.retry, config.sendTimeoutMs),
      socketFactory: this._gate.socketFactory(),
      // The first connection attempt may not outlast the send it serves.
      connectionTimeout: Math.min(1000, config.sendTimeoutMs),
      requestTimeout: config.sendTimeoutMs,
    });
    this.producer = kafka.producer({
      // The partitioner of kafkajs 2: a keyed record (a registration) goes to
      // murmur2(key) modulo the partitions, as with Java's and kafka-python's
      // default partitioners, so Node and Python put one token's changes in
      // one partition; a record without a key (a notification) is spread.
      createPartitioner: Partitioners.DefaultPartitioner,
      // `make topics` owns the topics and their shape.
      allowAutoTopicCreation: false,
    });
    this._connected = null;
    this.abandoned = false;
  }

  /** Connect once; every caller waits on the same attempt. */
  connect() {
    if (this._connected === null) {
      this._connected = this.producer.connect();
      // A caller that gave up waiting must not leave an unhandled rejection behind.
      this._connected.catch(() => {});
    }
    return this._connected;
  }

  /** Stop for good, now: no socket of this session sends anything again. */
  abandon() {
    if (this.abandoned) return;
    this.abandoned = true;
    this._gate.close();
    this.producer.disconnect().catch(() => {});
  }

  /** Stop after the sends in flight, then close the gate. */
  async close() {
    if (this.abandoned) return;
    this.abandoned = true;
    try {
      await this.producer.disconnect();
    } finally {
      this._gate.close();
    }
  }
}

module.exports = { ProducerSession, retryWithin };
