'use strict';
/**
 * A KafkaService (settings from the environment) driven over stdin/stdout,
 * one JSON command per line, one JSON answer per line; the Python tests use it
 * to send from Node beside Python senders, workers and Kafkas they control.
 *
 *   {"op": "send", "method": "sendMatchNotification", "args": [...]}
 *      -> {"ok": true, "result": {...}, "ms": 3.1}
 *      -> {"ok": false, "error": {"name", "message", "circuitOpen", "maybeSent", "paths"}, "ms": 2001.5}
 *   {"op": "status"}      -> {"ok": true, "result": {...}}
 *   {"op": "disconnect"}  -> {"ok": true}
 */

const readline = require('node:readline');
const { createKafkaService } = require('../src');

const service = createKafkaService({ logger: { warn: (m) => console.error(m), info: (m) => console.error(m) } });
const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();

function answer(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function run(command) {
  if (command.op === 'send') {
    const started = process.hrtime.bigint();
    const elapsed = () => Number(process.hrtime.bigint() - started) / 1e6;
    try {
      const result = await service[command.method](...command.args);
      answer({ ok: true, result, ms: elapsed() });
    } catch (error) {
      const ms = elapsed();
      answer({
        ok: false,
        ms,
        error: {
          name: error.name,
          message: error.message,
          circuitOpen: error.circuitOpen,
          maybeSent: error.maybeSent,
          messageId: error.messageId,
          paths: error.issues ? error.issues.map((issue) => issue.path) : undefined,
        },
      });
    }
  } else if (command.op === 'status') {
    answer({ ok: true, result: service.status() });
  } else if (command.op === 'disconnect') {
    await service.disconnect();
    answer({ ok: true });
  } else {
    answer({ ok: false, error: { name: 'UnknownOp', message: String(command.op) } });
  }
}

// One command at a time, in order: answers come back in the order asked.
lines.on('line', (line) => {
  queue = queue.then(() => run(JSON.parse(line)));
});
lines.on('close', () => {
  queue.then(() => service.disconnect());
});
