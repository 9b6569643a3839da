'use strict';
/**
 * `register_device` and `unregister_device` checked as Python's `send()`
 * checks them, and the partition key their records carry.
 *
 * Ported line by line, in the same order and words (Python raises the first
 * problem only, and so does this):
 * - willowe_tasks/registry/base.py: `validate_device`, `_check_text`,
 *   `stored_spellings`;
 * - the providers' `canonical_token`: willowe_tasks/providers/apns (hex,
 *   lower-cased) and willowe_tasks/providers/fcm (printable, as given);
 * - willowe_tasks/registration.py: `_check_unregister`, `_check_token`;
 * - willowe_tasks/tokens.py: `token_key`.
 * Limits, platforms and Python's notion of whitespace come from the schema
 * (`x-willowe.registration`); the shared vectors pin the rest, and
 * tests/test_node_registration.py compares every message with Python's.
 *
 * Errors name the field and never quote a token. Unlike Python's, they don't
 * quote a refused platform either: a call with its arguments swapped puts the
 * token there.
 */

const { createHash } = require('node:crypto');
const { SCHEMA } = require('./schema');
const { PayloadError } = require('./errors');

const RULES = SCHEMA['x-willowe'].registration;
const PLATFORMS = RULES.platforms;
/** Python's `str.isspace()`: one character of it, and a string of nothing else (`not s.strip()`). */
const SPACE = new RegExp(RULES.whitespace, 'u');
const BLANK = new RegExp(`^${RULES.whitespace}*$`, 'u');
/** A character `str.isprintable()` refuses (the ASCII space is printable). */
const NOT_PRINTABLE = new RegExp(`(?! )${RULES.not_printable}`, 'u');
/** `string.hexdigits`. */
const HEX = /^[0-9a-fA-F]*$/;

/** A problem with one field, raised as Python's `DeviceValidationError(field, problem)`. */
class Refused extends Error {
  constructor(field, problem) {
    super(problem);
    this.field = field;
  }
}

/**
 * @param {string} actorName `register_device` or `unregister_device`
 * @param {unknown[]} args its arguments in order
 * @returns {{args: unknown[], key: string}} the arguments as the record carries
 *   them (an iOS token lower-cased) and the partition key
 * @throws {PayloadError} naming the first field Python would name
 * @throws {TypeError} for a call with arguments missing or too many, as Python's
 */
function checkRegistration(actorName, args) {
  try {
    if (actorName === 'register_device') return checkRegister(bind(['user_id', 'platform', 'token', 'app_id'], args));
    if (actorName === 'unregister_device') return checkUnregister(bind(['token'], args));
  } catch (error) {
    if (error instanceof Refused) throw new PayloadError(actorName, [{ path: error.field, message: error.message }]);
    throw error;
  }
  throw new Error(`${actorName} is not a registration actor`);
}

/** registry.base.validate_device, and the key registration._check_register adds. */
function checkRegister([userId, platform, token, appId]) {
  checkText('user_id', userId, RULES.user_id_max_chars, { allowSpaces: false });
  const spec = typeof platform === 'string' ? PLATFORMS.find((p) => p.platform === platform) : undefined;
  if (spec === undefined) {
    throw new Refused('platform', `must be one of ${PLATFORMS.map((p) => p.platform).join(', ')}`);
  }
  checkText('app_id', appId, RULES.app_id_max_chars, { allowSpaces: false });
  if (typeof token !== 'string') throw new Refused('token', `must be a string, got ${pythonTypeName(token)}`);
  let canonical;
  try {
    canonical = canonicalToken(spec.token, token);
  } catch (error) {
    if (error instanceof TokenRefused) throw new Refused('token', error.message);
    throw error;
  }
  return { args: [userId, platform, canonical, appId], key: tokenKey(canonical) };
}

/** registration._check_unregister: the token as given, keyed as its registration was. */
function checkUnregister([token]) {
  if (typeof token !== 'string') throw new Refused('token', `must be a string, got ${pythonTypeName(token)}`);
  if (BLANK.test(token)) throw new Refused('token', 'must not be empty');
  if (codePoints(token) > RULES.unregister_token_max_chars) {
    throw new Refused('token', `must be at most ${RULES.unregister_token_max_chars} characters`);
  }
  if (!token.isWellFormed()) {
    // Python can't hash it (its UTF-8 encoding fails): refuse it here by name.
    throw new Refused('token', 'must be a valid Unicode string (it has a lone surrogate)');
  }
  return { args: [token], key: tokenKey(storedSpellings(token)[0] ?? token) };
}

/** registry.base._check_text */
function checkText(field, value, maxChars, { allowSpaces }) {
  if (typeof value !== 'string') throw new Refused(field, `must be a string, got ${pythonTypeName(value)}`);
  if (BLANK.test(value)) throw new Refused(field, 'must not be empty');
  if (codePoints(value) > maxChars) throw new Refused(field, `must be at most ${maxChars} characters`);
  if (!isPrintable(value)) throw new Refused(field, 'must not contain control characters');
  if (!allowSpaces && SPACE.test(value)) throw new Refused(field, 'must not contain whitespace');
}

class TokenRefused extends Error {}

/** A provider's canonical_token: the token as the registry stores it. */
function canonicalToken(rule, token) {
  if (!token) throw new TokenRefused('must not be empty');
  const length = codePoints(token);
  if (rule.rule === 'hex') {
    if (!HEX.test(token)) throw new TokenRefused(`${rule.label} token must contain only hex digits 0-9a-f`);
    if (length % 2) throw new TokenRefused(`${rule.label} token must have an even number of hex digits, got ${length}`);
    if (length < rule.min_hex_chars || length > rule.max_hex_chars) {
      throw new TokenRefused(`${rule.label} token must be ${rule.min_hex_chars}-${rule.max_hex_chars}`
        + ` hex digits, got ${length}`);
    }
    return token.toLowerCase();
  }
  if (rule.rule === 'printable') {
    if (length > rule.max_chars) throw new TokenRefused(`${rule.label} token must be at most ${rule.max_chars} characters`);
    if (!isPrintable(token) || SPACE.test(token)) {
      throw new TokenRefused(`${rule.label} token must be printable and contain no whitespace`);
    }
    return token;
  }
  throw new Error(`no port of the token rule ${JSON.stringify(rule.rule)}: update clients/node/src/registration.js`);
}

/** registry.base.stored_spellings: the token as each provider that accepts it stores it, in order. */
function storedSpellings(token) {
  const found = [];
  for (const { token: rule } of PLATFORMS) {
    try {
      found.push(canonicalToken(rule, token));
    } catch (error) {
      if (!(error instanceof TokenRefused)) throw error;
    }
  }
  return found;
}

/** tokens.token_key: `sha256:` and the hex SHA-256 of the token's UTF-8 bytes. */
function tokenKey(token) {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** The arguments in order; a TypeError, as Python's, for a call that doesn't fit. */
function bind(names, args) {
  if (args.length > names.length) {
    throw new TypeError(`expected at most ${names.length} arguments (${names.join(', ')}), got ${args.length}`);
  }
  const missing = names.filter((_, index) => args[index] === undefined);
  if (missing.length > 0) throw new TypeError(`missing argument(s): ${missing.join(', ')}`);
  return args;
}

/** Python's `str.isprintable()`, in the Unicode version this Node knows. */
function isPrintable(text) {
  return !NOT_PRINTABLE.test(text);
}

/** Python's `str.isspace()` for one character. */
function isPythonSpace(character) {
  return SPACE.test(character);
}

/** Python's `len()`: code points (a lone surrogate is one). */
function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** The name Python gives the type of the value JSON carries for `value` (in Python's messages). */
function pythonTypeName(value) {
  if (value === null) return 'NoneType';
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'number') return Number.isInteger(value) ? 'int' : 'float';
  if (Array.isArray(value)) return 'list';
  if (typeof value === 'object') return 'dict';
  return typeof value;
}

module.exports = { checkRegistration, isPrintable, isPythonSpace, tokenKey };
