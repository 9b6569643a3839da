'use strict';
/**
 * Will the push fit? The port of what Python's `send()` checks
 * (willowe_tasks/push_fit.py): the notification the worker will push is
 * built, then measured with each provider's payload builder, in UTF-8 bytes.
 * A schema can't say this, so the shared test vectors pin it.
 *
 * Ported line by line from:
 * - willowe_tasks/actors.py: `_kind_notification`, `_custom_notification`,
 *   `_https_only`, and the texts `_kind_preview`/`_custom_preview` name;
 * - willowe_tasks/dispatch.py: `push_for` (data keys, collapse id, sound);
 * - willowe_tasks/providers/apns/payload.py: `apns_payload`;
 * - willowe_tasks/providers/fcm/message.py: `fcm_message`, `fcm_payload_bytes`.
 * Their limits and wording come from the schema (`x-willowe`).
 */

const { PUSH_LIMITS, band } = require('./schema');
const { COMPACT_SEPARATORS, utf8Length } = require('./pyjson');

/** Apple: "For regular remote notifications, the maximum size is 4KB (4096 bytes)". */
const APNS_MAX_PAYLOAD_BYTES = PUSH_LIMITS.apns_max_payload_bytes;
/** Firebase: "The maximum payload for both message types is 4096 bytes". */
const FCM_MAX_MESSAGE_BYTES = PUSH_LIMITS.fcm_max_message_bytes;
/** Firebase: AndroidConfig.ttl "The maximum time to live supported is 4 weeks". */
const FCM_MAX_TTL_S = PUSH_LIMITS.fcm_max_ttl_s;

/**
 * The notification the worker will push for an actor's checked arguments,
 * and the texts a caller could shorten (by path).
 * @param {{push: object, priority: string}} actor from the schema
 * @param {unknown[]} args the prepared, valid arguments
 * @param {string} notificationId the record's message id
 * @param {number} sentAt unix seconds
 */
function preview(actor, args, notificationId, sentAt) {
  const word = actor.priority;
  if (actor.push.custom) {
    const [checked] = args;
    const texts = [[['notification', 'title'], checked.title], [['notification', 'body'], checked.body]];
    const data = checked.data || {};
    if (Object.keys(data).length > 0) {
      texts.push([['notification', 'data'], Object.entries(data).map(([k, v]) => k + v).join('')]);
    }
    const notification = {
      id: notificationId, kind: checked.type, title: checked.title, body: checked.body,
      priority: word, expiresAt: sentAt + (checked.ttl_s || actor.push.ttl_s), data: { ...data },
      imageUrl: null,
    };
    return { notification, texts };
  }
  const kind = actor.push;
  const [, payload] = args;
  const asText = (field) => String(payload[field]);
  const data = {};
  for (const field of kind.data_fields) {
    if (payload[field] !== undefined && payload[field] !== null) data[field] = asText(field);
  }
  const image = kind.image_field && payload[kind.image_field] != null ? asText(kind.image_field) : null;
  const notification = {
    id: notificationId, kind: kind.kind, title: fill(kind.title, payload), body: fill(kind.body, payload),
    priority: word, expiresAt: sentAt + kind.ttl_s, data,
    // Phones fetch pictures over HTTPS only: an http:// photo is left out of the push.
    imageUrl: image !== null && image.startsWith('https://') ? image : null,
  };
  const texts = Object.keys(payload).map((field) => [['payload', field], asText(field)]);
  return { notification, texts };
}

/** A kind's wording template with `{field}` replaced by the field's text. */
function fill(template, payload) {
  return template.replace(/\{(\w+)\}/g, (_, field) => String(payload[field]));
}

/** dispatch.push_for: what a device is sent (the token travels outside every counted payload). */
function pushFor(notification) {
  return {
    title: notification.title,
    body: notification.body,
    data: { kind: notification.kind, notification_id: notification.id, ...notification.data },
    priority: notification.priority,
    expiresAt: notification.expiresAt,
    collapseId: [...notification.id].slice(0, 64).join(''),
    imageUrl: notification.imageUrl,
    sound: PUSH_LIMITS.sound,
  };
}

/** providers/apns/payload.apns_payload, as its JSON value (alert pushes). */
function apnsPayload(push) {
  const aps = {};
  const extra = {};
  const alert = {};
  if (push.title) alert.title = push.title;
  if (push.body) alert.body = push.body;
  if (Object.keys(alert).length > 0) aps.alert = alert;
  if (push.sound) aps.sound = push.sound;
  if (push.imageUrl) {
    aps['mutable-content'] = 1;
    extra[PUSH_LIMITS.apns_image_url_key] = push.imageUrl;
  }
  return { aps, ...push.data, ...extra };
}

/** providers/fcm/message.fcm_message without its token (what fcm_payload_bytes counts). */
function fcmMessage(push, nowS) {
  const ttlS = Math.min(Math.max(0, Math.trunc(push.expiresAt - nowS)), FCM_MAX_TTL_S);
  const android = { priority: band(push.priority).fcm_priority, ttl: `${ttlS}s` };
  const message = {};
  if (Object.keys(push.data).length > 0) message.data = { ...push.data };
  const notification = {};
  if (push.title) notification.title = push.title;
  if (push.body) notification.body = push.body;
  if (push.imageUrl) notification.image = push.imageUrl;
  if (Object.keys(notification).length > 0) message.notification = notification;
  const androidNotification = { tag: push.collapseId };
  if (push.sound) androidNotification.sound = push.sound;
  android.notification = androidNotification;
  message.android = android;
  return message;
}

/** Each provider's size of `push` against its limit, in the order Python registers them. */
function measure(push, nowS) {
  return [
    { provider: 'apns', sizeBytes: utf8Length(apnsPayload(push), COMPACT_SEPARATORS), limitBytes: APNS_MAX_PAYLOAD_BYTES },
    { provider: 'fcm', sizeBytes: utf8Length(fcmMessage(push, nowS), COMPACT_SEPARATORS), limitBytes: FCM_MAX_MESSAGE_BYTES },
  ];
}

/**
 * push_fit.check_fits: null when the push fits every provider, else the issue
 * naming the longest text (the field a caller would shorten) and the limit.
 */
function tooLarge(actor, args, notificationId, sentAtS, nowS = Date.now() / 1000) {
  const { notification, texts } = preview(actor, args, notificationId, sentAtS);
  const sizes = measure(pushFor(notification), nowS);
  const over = sizes.filter((size) => size.sizeBytes > size.limitBytes);
  if (over.length === 0 || texts.length === 0) return null;
  const worst = over.reduce((a, b) => (b.sizeBytes - b.limitBytes > a.sizeBytes - a.limitBytes ? b : a));
  const byteLength = (text) => Buffer.byteLength(text, 'utf8');
  const [path, text] = texts.reduce((a, b) => (byteLength(b[1]) > byteLength(a[1]) ? b : a));
  return {
    path,
    message: `the push would be ${worst.sizeBytes} UTF-8 bytes for ${worst.provider.toUpperCase()}, `
      + `over its limit of ${worst.limitBytes} bytes; this field is ${byteLength(text)} bytes`,
  };
}

/** Sizes of the push for `args`, for comparing with Python's builders in tests. */
function pushSizes(actor, args, notificationId, sentAtS, nowS = Date.now() / 1000) {
  const { notification } = preview(actor, args, notificationId, sentAtS);
  return Object.fromEntries(measure(pushFor(notification), nowS).map((s) => [s.provider, s.sizeBytes]));
}

module.exports = { apnsPayload, fcmMessage, pushFor, pushSizes, tooLarge };
