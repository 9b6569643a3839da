'use strict';
/**
 * Which code points the registration checks call printable and whitespace
 * (Python's `str.isprintable()` and `str.isspace()`, as ported), as JSON on
 * stdout: `{"unicode": version, "printable": [[first, last], ...], "space": [...]}`.
 * tests/test_node_registration.py compares them with Python's own answers.
 *
 *     node testing/report-unicode.js
 */

const { isPrintable, isPythonSpace } = require('../src/registration');

const MAX_CODE_POINT = 0x10ffff;

function ranges(predicate) {
  const found = [];
  for (let code = 0; code <= MAX_CODE_POINT; code += 1) {
    if (!predicate(String.fromCodePoint(code))) continue;
    const last = found[found.length - 1];
    if (last && last[1] === code - 1) last[1] = code;
    else found.push([code, code]);
  }
  return found;
}

process.stdout.write(JSON.stringify({
  unicode: process.versions.unicode,
  printable: ranges(isPrintable),
  space: ranges(isPythonSpace),
}));
