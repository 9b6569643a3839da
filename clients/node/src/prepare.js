'use strict';
/**
 * What pydantic does to arguments before and besides the schema's rules, done
 * the same way, so the record holds what a Python `send()` would write:
 *
 * - the guide's camelCase spellings (`x-aliases`) become the field names;
 * - strings marked `x-strip-whitespace` lose leading and trailing Unicode
 *   whitespace (pydantic strips with Rust's `trim()`: the White_Space
 *   property, so U+0085 goes and U+FEFF stays), and so do the keys of
 *   objects so marked;
 * - a URL (`format: uri`) is parsed and written normalised, as pydantic's URL
 *   type (the WHATWG URL standard) writes it;
 * - an optional field given as null is left out (`exclude_none`);
 * - free-form JSON (`additionalProperties: true`) must be JSON Python reads
 *   back the same, and fit `x-max-json-bytes`.
 *
 * Problems found here are returned as issues (a path and a message); the
 * schema's own rules are checked afterwards on the prepared value.
 */

const { resolve } = require('./schema');
const { DEFAULT_SEPARATORS, utf8Length } = require('./pyjson');

const EDGE_WHITESPACE = /^\p{White_Space}+|\p{White_Space}+$/gu;

/**
 * @typedef {{path: (string|number)[], message: string}} Issue
 * @typedef {{issues: Issue[], keys: WeakMap<object, Map<string, string>>}} Context
 *   keys: for each prepared object, the key the caller used for each field
 *   (an alias or the name), so an error names what the caller wrote.
 */

/** @returns {unknown} the prepared value (undefined: leave the field out) */
function prepare(value, schema, path, context) {
  schema = resolve(schema);
  if (schema.anyOf) {
    if (value === null && schema.anyOf.some((branch) => branch.type === 'null')) return undefined;
    schema = resolve(schema.anyOf.find((branch) => branch.type !== 'null'));
  }
  if (typeof value === 'string') return prepareString(value, schema, path, context);
  if (!isPlainObject(value) || schema.type !== 'object') return value;
  if (schema.properties) return prepareModel(value, schema, path, context);
  return prepareDict(value, schema, path, context);
}

function prepareString(value, schema, path, context) {
  if (!value.isWellFormed()) {
    // Python can't encode a lone surrogate to UTF-8 and pydantic refuses it.
    context.issues.push({ path, message: 'must be a valid Unicode string (it has a lone surrogate)' });
    return value;
  }
  if (schema.format === 'uri') return prepareUrl(value, schema, path, context);
  return schema['x-strip-whitespace'] ? value.replace(EDGE_WHITESPACE, '') : value;
}

function prepareUrl(value, schema, path, context) {
  // pydantic counts the URL as given; the worker counts it again as written.
  if (schema.maxLength !== undefined && [...value].length > schema.maxLength) {
    context.issues.push({ path, message: `URL should have at most ${schema.maxLength} characters` });
    return value;
  }
  let url;
  try {
    url = new URL(value);
  } catch {
    context.issues.push({ path, message: 'must be a valid absolute URL' });
    return value;
  }
  if (schema.pattern && !new RegExp(schema.pattern, 'u').test(url.href)) {
    context.issues.push({ path, message: `URL scheme must match ${schema.pattern}` });
    return value;
  }
  if (!url.hostname) {
    context.issues.push({ path, message: 'URL must have a host' });
    return value;
  }
  return url.href;
}

function prepareModel(value, schema, path, context) {
  const aliases = schema['x-aliases'] || {};
  const givenByAlias = new Set(Object.keys(value).filter((key) => Object.hasOwn(aliases, key))
    .map((alias) => aliases[alias]));
  const byField = new Map();
  for (const key of Object.keys(value)) {
    const field = Object.hasOwn(aliases, key) ? aliases[key] : key;
    if (!Object.hasOwn(aliases, key) && givenByAlias.has(key)) {
      // pydantic reads a field from its alias first; its name beside it is
      // then an input it doesn't know.
      context.issues.push({ path: [...path, key], message: 'Extra inputs are not permitted' });
      continue;
    }
    if (value[key] === undefined) continue;
    const fieldSchema = schema.properties[field];
    const item = fieldSchema ? prepare(value[key], fieldSchema, [...path, key], context) : value[key];
    if (item !== undefined) byField.set(field, { key, item });
  }
  // Fields in the model's order, as pydantic writes them; unknown ones after
  // (validation refuses them).
  const order = [...Object.keys(schema.properties), ...byField.keys()];
  const prepared = {};
  const usedKeys = new Map();
  for (const field of new Set(order)) {
    if (!byField.has(field)) continue;
    prepared[field] = byField.get(field).item;
    usedKeys.set(field, byField.get(field).key);
  }
  context.keys.set(prepared, usedKeys);
  return prepared;
}

function prepareDict(value, schema, path, context) {
  const strip = schema['x-strip-whitespace'];
  const values = schema.additionalProperties;
  const prepared = {};
  for (const key of Object.keys(value)) {
    if (value[key] === undefined) continue;
    // (Two keys equal once stripped: the last value wins, in the first one's
    // place, as when Python builds the dict.)
    const preparedKey = strip ? key.replace(EDGE_WHITESPACE, '') : key;
    prepared[preparedKey] = isPlainObject(values)
      ? prepare(value[key], values, [...path, key], context)
      : value[key];
  }
  if (values === true) checkFreeJson(prepared, schema, path, context);
  return prepared;
}

/** Free-form JSON, as the analytics properties: Python must read it back as given. */
function checkFreeJson(value, schema, path, context) {
  const problem = notJson(value);
  if (problem) {
    context.issues.push({ path, message: `must be JSON-serialisable: ${problem}` });
    return;
  }
  const limit = schema['x-max-json-bytes'];
  if (limit !== undefined && utf8Length(value, DEFAULT_SEPARATORS) > limit) {
    context.issues.push({ path, message: `must be at most ${limit} bytes of JSON` });
  }
}

/** Why `value` is not plain JSON (a string), or null when it is. */
function notJson(value) {
  if (value === null || typeof value === 'boolean') return null;
  if (typeof value === 'number') return Number.isFinite(value) ? null : `${value} is not a JSON number`;
  if (typeof value === 'string') return value.isWellFormed() ? null : 'a string has a lone surrogate';
  if (Array.isArray(value)) {
    for (const item of value) {
      const problem = notJson(item);
      if (problem) return problem;
    }
    return null;
  }
  if (isPlainObject(value)) {
    for (const key of Object.keys(value)) {
      if (!key.isWellFormed()) return 'a key has a lone surrogate';
      const problem = value[key] === undefined ? 'a value is undefined' : notJson(value[key]);
      if (problem) return problem;
    }
    return null;
  }
  const what = value instanceof Date ? 'a Date (send date.getTime() or toISOString())' : `a ${typeof value}`;
  return `${what} is not JSON`;
}

function isPlainObject(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

module.exports = { isPlainObject, prepare };
