'use strict';
/**
 * An actor's arguments checked as Python's `send()` checks them: prepared
 * (prepare.js), validated against the wire schema, then measured against the
 * push providers' limits (push.js). Errors name fields as pydantic does: the
 * argument, then the keys the caller wrote (`payload.photoUrl`), so one vector
 * expects the same path in both languages.
 */

const { actor: describeActor, argumentsValidator } = require('./schema');
const { prepare } = require('./prepare');
const { tooLarge } = require('./push');
const { PayloadError } = require('./errors');

/**
 * @param {string} actorName
 * @param {unknown[]} args the actor's arguments in order (undefined: left out)
 * @param {{notificationId: string, sentAtS: number}} message the record's id and send time
 * @returns {unknown[]} the arguments as the record carries them
 * @throws {PayloadError}
 */
function checkArguments(actorName, args, message) {
  const actor = describeActor(actorName);
  const names = actor.arguments;
  if (args.length > names.length) {
    throw new TypeError(`${actorName} takes at most ${names.length} arguments (${names.join(', ')}), got ${args.length}`);
  }
  const context = { issues: [], keys: new WeakMap() };
  const items = actor.argumentsSchema.prefixItems;
  const prepared = [];
  for (const [index, name] of names.entries()) {
    let value = args[index];
    if (value === undefined && index >= actor.argumentsSchema.minItems) {
      if (items[index].default === undefined) break;
      value = structuredClone(items[index].default);
    }
    prepared.push(prepare(value, items[index], [name], context));
  }
  const issues = context.issues.map(({ path, message: text }) => ({ path: path.join('.'), message: text }));
  const validate = argumentsValidator(actorName);
  if (!validate(prepared)) {
    // A value preparation refused (a URL it couldn't parse) is reported once.
    const refused = (path) => issues.some((issue) => path === issue.path || path.startsWith(`${issue.path}.`));
    issues.push(...schemaIssues(validate.errors, prepared, actor, context)
      .filter((issue) => !refused(issue.path)));
  }
  if (issues.length === 0 && actor.push) {
    const found = tooLarge(actor, prepared, message.notificationId, message.sentAtS);
    if (found) issues.push({ path: found.path.join('.'), message: found.message });
  }
  if (issues.length > 0) throw new PayloadError(actorName, dedupe(issues));
  return prepared;
}

/** ajv's errors as pydantic-style issues. */
function schemaIssues(errors, prepared, actor, context) {
  return errors
    // A failed optional field also fails its null branch and the anyOf around
    // it; the branch that says what is wrong is enough.
    .filter((error) => error.keyword !== 'anyOf' && !(error.keyword === 'type' && error.params.type === 'null'))
    // A bad key fails the rules inside propertyNames and propertyNames itself.
    .filter((error) => !error.schemaPath.includes('/propertyNames/'))
    .map((error) => ({
      path: callerPath(error, prepared, actor, context),
      message: describe(error),
    }));
}

/** The path of an error in the caller's words (argument names, keys as written). */
function callerPath(error, prepared, actor, context) {
  const segments = error.instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const path = [actor.arguments[Number(segments[0])]];
  let value = prepared[Number(segments[0])];
  for (const segment of segments.slice(1)) {
    path.push(keyWritten(value, segment, context));
    value = value === null || value === undefined ? undefined : value[segment];
  }
  if (error.keyword === 'required') {
    const field = error.params.missingProperty;
    // pydantic names a missing field by its alias when it has one.
    const aliases = schemaAliasesAt(error.parentSchema);
    path.push(Object.keys(aliases).find((alias) => aliases[alias] === field) ?? field);
  } else if (error.keyword === 'additionalProperties') {
    path.push(error.params.additionalProperty);
  }
  return path.join('.');
}

function keyWritten(value, field, context) {
  const keys = value && typeof value === 'object' ? context.keys.get(value) : undefined;
  return keys?.get(field) ?? field;
}

function schemaAliasesAt(schema) {
  return (schema && schema['x-aliases']) || {};
}

function describe(error) {
  if (error.keyword === 'propertyNames') {
    const rule = error.schema.pattern ? ` (keys must match ${error.schema.pattern}, and not be reserved)` : '';
    return `key ${JSON.stringify(error.params.propertyName)} is not allowed${rule}`;
  }
  return error.message;
}

function dedupe(issues) {
  const seen = new Set();
  return issues.filter((issue) => {
    const key = `${issue.path}\0${issue.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

module.exports = { checkArguments };
