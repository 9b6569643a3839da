'use strict';
/**
 * What a send can fail with, sorted by what the caller does about it:
 *
 *     WilloweError
 *     ├── PayloadError          the arguments are wrong: fix the call (never retried)
 *     └── KafkaUnavailableError Kafka didn't take the record in time, or the
 *                               circuit is open: use the fallback path
 *
 * Messages name fields and settings, never their values: a user's name or a
 * message body must not reach a log through an error.
 */

class WilloweError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = this.constructor.name;
  }
}

/** The arguments don't match the wire schema, or the push would be too large. */
class PayloadError extends WilloweError {
  /**
   * @param {string} actorName
   * @param {{path: string, message: string}[]} issues one per field, paths as
   *   Python's `ValidationError` locations joined with dots (`payload.age`)
   */
  constructor(actorName, issues) {
    const lines = issues.map((issue) => `${issue.path}: ${issue.message}`);
    super(`invalid arguments for ${actorName}: ${lines.join('; ')}`);
    this.actorName = actorName;
    this.issues = issues;
    /** The first field named, for a caller that shows one. */
    this.path = issues[0].path;
    this.retriable = false;
  }
}

/**
 * Kafka did not acknowledge the record within the send timeout, or failed, or
 * the circuit is open after such a failure (then nothing was attempted).
 */
class KafkaUnavailableError extends WilloweError {
  /**
   * @param {string} message
   * @param {{circuitOpen: boolean, maybeSent: boolean, messageId?: string, cause?: unknown}} details
   *   maybeSent: the record had reached a connection when the send gave up, so
   *   Kafka may still store it (a fallback could then deliver it twice);
   *   messageId: the record's id (the notification id the workers would use)
   */
  constructor(message, { circuitOpen, maybeSent, messageId, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.circuitOpen = circuitOpen;
    this.maybeSent = maybeSent;
    this.messageId = messageId;
    this.retriable = true;
  }
}

/** A setting (an environment variable or an option) has a value we can't use. */
class ConfigError extends WilloweError {}

module.exports = { ConfigError, KafkaUnavailableError, PayloadError, WilloweError };
