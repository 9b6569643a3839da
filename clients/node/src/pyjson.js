'use strict';
/**
 * JSON written the way Python's `json.dumps` writes it.
 *
 * The workers are Python: a byte limit they check (analytics properties,
 * a push's size) is counted on `json.dumps` of the values they decoded from
 * the record, and a record from Python is `json.dumps` with
 * `separators=(",", ":")` (Dramatiq's encoder, ASCII only). Writing and
 * counting the same way here keeps a limit that passes in Node from failing
 * in the worker, and makes Node's records byte-for-byte those of Python.
 *
 * Where JavaScript and Python differ:
 * - numbers: a number JSON writes with a fraction or an exponent is a float
 *   in Python, and Python prints floats as `repr()` does (`1e-05`, `1e+16`,
 *   `0.0001`), where JavaScript prints `0.00001` and `1e+21`;
 * - `ensureAscii` (Python's default): every character outside printable ASCII
 *   as `\uXXXX`, lower-case hex, characters beyond U+FFFF as surrogate pairs.
 * Strings must be well-formed (no lone surrogates): Python cannot encode those
 * to UTF-8, so callers refuse them first.
 */

/** Python's default separators, and the compact ones Dramatiq and the push builders use. */
const DEFAULT_SEPARATORS = Object.freeze([', ', ': ']);
const COMPACT_SEPARATORS = Object.freeze([',', ':']);

/**
 * @param {unknown} value a JSON value (plain objects, arrays, strings, finite numbers, booleans, null)
 * @param {{separators?: readonly string[], ensureAscii?: boolean}} [options]
 * @returns {string}
 */
function dumps(value, { separators = DEFAULT_SEPARATORS, ensureAscii = true } = {}) {
  const [itemSeparator, keySeparator] = separators;
  const write = (item) => {
    if (item === null) return 'null';
    switch (typeof item) {
      case 'boolean':
        return item ? 'true' : 'false';
      case 'number':
        return pythonNumber(item);
      case 'string':
        return pythonString(item, ensureAscii);
      case 'object':
        if (Array.isArray(item)) return `[${item.map(write).join(itemSeparator)}]`;
        return `{${Object.keys(item)
          .map((key) => `${pythonString(key, ensureAscii)}${keySeparator}${write(item[key])}`)
          .join(itemSeparator)}}`;
      default:
        throw new TypeError(`not a JSON value: ${typeof item}`);
    }
  };
  return write(value);
}

/** UTF-8 bytes of `dumps(value)` with Python's `ensure_ascii=False`, as limits count them. */
function utf8Length(value, separators) {
  return Buffer.byteLength(dumps(value, { separators, ensureAscii: false }), 'utf8');
}

function pythonString(text, ensureAscii) {
  // JSON.stringify escapes exactly what Python escapes (", \, control
  // characters, with the same short forms and lower-case hex) for well-formed text.
  const quoted = JSON.stringify(text);
  if (!ensureAscii) return quoted;
  return quoted.replace(/[\u007f-\uffff]/g,
    (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A number as Python writes the value it decodes from JavaScript's JSON for it. */
function pythonNumber(number) {
  if (!Number.isFinite(number)) throw new TypeError('not a JSON value: a non-finite number');
  const text = JSON.stringify(number);
  // No fraction or exponent: Python decodes an int and prints the same digits.
  if (/^-?\d+$/.test(text)) return text;
  return pythonFloatRepr(number);
}

/**
 * Python's `repr(float)`: the shortest digits that round-trip (as JavaScript
 * finds them too), in fixed notation for decimal exponents -4 to 15 and with
 * `.0` when whole, otherwise as `d.ddde±XX`.
 */
function pythonFloatRepr(number) {
  const [mantissa, exponentText] = number.toExponential().split('e');
  const negative = mantissa.startsWith('-');
  const digits = mantissa.replace('-', '').replace('.', '');
  const exponent = Number(exponentText);
  const sign = negative ? '-' : '';
  if (exponent < -4 || exponent >= 16) {
    const fraction = digits.length > 1 ? `.${digits.slice(1)}` : '';
    const exponentSign = exponent < 0 ? '-' : '+';
    return `${sign}${digits[0]}${fraction}e${exponentSign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, '0');
  const fraction = digits.slice(exponent + 1) || '0';
  return `${sign}${whole}.${fraction}`;
}

module.exports = { COMPACT_SEPARATORS, DEFAULT_SEPARATORS, dumps, pythonFloatRepr, utf8Length };
