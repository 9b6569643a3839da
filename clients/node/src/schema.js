'use strict';
/**
 * The wire format's JSON Schema (wire-schema.json, generated from the Python
 * payload models by `python -m willowe_tasks schema`) and what it says about
 * priorities, topics and actors. Everything in this package that knows a
 * topic, an actor or a field rule reads it from here.
 */

const Ajv2020 = require('ajv/dist/2020').default;
const SCHEMA = require('../wire-schema.json');

const WILLOWE = SCHEMA['x-willowe'];

/** The annotations the schema carries besides standard JSON Schema (see wire_schema.py). */
const ANNOTATIONS = ['x-willowe', 'x-strip-whitespace', 'x-aliases', 'x-max-json-bytes', 'x-lower-case'];

/**
 * Patterns as the workers' regex engine (Rust's `regex`, used by pydantic)
 * reads them: there `\s` is Unicode's White_Space property, which is not
 * JavaScript's set (JavaScript counts U+FEFF and not U+0085, NEL). Classes
 * this port can't give the same meaning fail loudly here rather than
 * validate differently.
 */
function workerRegExp(pattern, flags) {
  const translated = pattern.replace(/\\(.)/gu, (escape, letter) => {
    switch (letter) {
      case 's': return '\\p{White_Space}';
      case 'S': return '\\P{White_Space}';
      case 'd': return '\\p{Nd}';
      case 'D': return '\\P{Nd}';
      case 'w': case 'W': case 'b': case 'B':
        throw new Error(`pattern ${JSON.stringify(pattern)}: \\${letter} is not ported from the workers' regex engine`);
      default: return escape;
    }
  });
  return new RegExp(translated, flags.includes('u') ? flags : `${flags}u`);
}
workerRegExp.code = 'workerRegExp';

const ajv = new Ajv2020({
  allErrors: true,
  verbose: true,
  strict: true,
  // track_event's second argument may be left out (the worker reads {}).
  strictTuples: false,
  code: { regExp: workerRegExp } });
for (const keyword of ANNOTATIONS) ajv.addKeyword({ keyword });
// The values reaching validation are already normalised by new URL() (see prepare.js).
ajv.addFormat('uri', (value) => URL.canParse(value));
ajv.addSchema(SCHEMA, 'record');

/** Validates a whole record value (envelope and arguments). */
const validateRecord = ajv.getSchema('record');

const argumentValidators = new Map();

/** The validator of an actor's `args` array. */
function argumentsValidator(actorName) {
  if (!argumentValidators.has(actorName)) {
    argumentValidators.set(actorName, ajv.getSchema(`record#/$defs/${actorName}`));
  }
  return argumentValidators.get(actorName);
}

/** Follow a `$ref` within the schema. */
function resolve(schema) {
  if (schema && typeof schema.$ref === 'string') {
    const name = schema.$ref.replace(/^#\/\$defs\//, '');
    return SCHEMA.$defs[name];
  }
  return schema;
}

function actor(actorName) {
  const described = WILLOWE.actors[actorName];
  if (!described) throw new Error(`no actor ${JSON.stringify(actorName)} in the wire schema`);
  return { name: actorName, ...described, argumentsSchema: SCHEMA.$defs[actorName] };
}

const PRIORITY_WORDS = WILLOWE.priorities.map((band) => band.word);

function band(word) {
  const found = WILLOWE.priorities.find((candidate) => candidate.word === word);
  if (!found) {
    throw new RangeError(`priority must be one of ${PRIORITY_WORDS.join(', ')}, got ${JSON.stringify(word)}`);
  }
  return found;
}

function bandOfTopic(topic) {
  return WILLOWE.priorities.find((candidate) => candidate.topic === topic);
}

module.exports = {
  HEADERS: WILLOWE.headers,
  PRIORITY_WORDS,
  PUSH_LIMITS: WILLOWE.push,
  SCHEMA,
  WIRE_FORMAT_VERSION: WILLOWE.version,
  actor,
  argumentsValidator,
  band,
  bandOfTopic,
  resolve,
  validateRecord,
  workerRegExp,
};
