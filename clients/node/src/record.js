'use strict';
/**
 * A record the Python workers process: the value is a Dramatiq message
 * (`Message.encode()`), the headers name its id and actor. Notifications have
 * no key; a registration is keyed by its token's hash, in its options too, as
 * Python writes it. See docs/wire-format.md.
 */

const { randomUUID } = require('node:crypto');
const { HEADERS, actor: describeActor } = require('./schema');
const { checkArguments } = require('./validate');
const { checkRegistration } = require('./registration');
const { COMPACT_SEPARATORS, dumps } = require('./pyjson');

/**
 * @param {string} actorName
 * @param {unknown[]} args the actor's arguments in order
 * @param {{messageId?: string, timestampMs?: number}} [fixed] for tests: an id and time to use
 * @returns {{topic: string, messageId: string, message: object, value: Buffer,
 *   headers: Record<string, Buffer>, key: Buffer|null}}
 * @throws {import('./errors').PayloadError}
 */
function buildRecord(actorName, args, { messageId = randomUUID(), timestampMs = Date.now() } = {}) {
  const actor = describeActor(actorName);
  let checked;
  const options = {};
  let key = null;
  if (actor.partition_key) {
    // A registration: the changes of one token go to one partition, in order.
    const registration = checkRegistration(actorName, args);
    checked = registration.args;
    options[actor.partition_key.option] = registration.key;
    key = Buffer.from(registration.key, 'utf8');
  } else {
    checked = checkArguments(actorName, args, { notificationId: messageId, sentAtS: timestampMs / 1000 });
  }
  // The fields in Dramatiq's order, so the bytes equal a Python send()'s.
  const message = {
    queue_name: actor.topic,
    actor_name: actorName,
    args: checked,
    kwargs: {},
    options,
    message_id: messageId,
    message_timestamp: timestampMs,
  };
  const fields = { message_id: messageId, actor_name: actorName };
  const headers = Object.fromEntries(Object.entries(HEADERS)
    .map(([header, field]) => [header, Buffer.from(fields[field], 'utf8')]));
  // Dramatiq's JSON encoder: compact, ASCII only.
  const value = Buffer.from(dumps(message, { separators: COMPACT_SEPARATORS, ensureAscii: true }), 'utf8');
  return { topic: actor.topic, messageId, message, value, headers, key };
}

module.exports = { buildRecord };
