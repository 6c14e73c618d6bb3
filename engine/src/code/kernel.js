'use strict';
// Platinum code-interpreter kernel for JavaScript (Node.js).
//
// The engine uploads this file into a sandbox and runs one copy per code context as
// `node kernel.js 3>&1 1>&2` (stdin kept open): the protocol goes out on fd 3, and anything
// written to the raw fds 1 and 2 (child processes with inherited stdio) reaches the engine as the
// kernel's stderr. It runs the cells the engine sends, one at a time, in this process's global
// scope, so `var`, `let`, `const`, functions and classes persist between cells.
//
// Protocol, one JSON object per line (the same as the Python kernel's):
//   engine -> kernel on stdin: {"id", "code", "env"}
//   kernel -> engine on fd 3: {"type": "ready", "language": "javascript", "pid"} once, then per
//   cell count{id, n}, stdout/stderr{id, text}, result{id, data, main}, error{id, name, value,
//   traceback} and always done{id} last.
//
// `console.*` and `process.stdout/stderr.write` are reported as stdout/stderr. The value of the
// cell (the completion value of its last statement) is the main result, `util.inspect`ed as
// text/plain; a promise is awaited first. A cell using top-level `await` runs inside an async
// function (its declarations then stay local to the cell). SIGINT interrupts synchronous code
// of the running cell and is ignored otherwise. `display(value)` reports extra results.

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const util = require('util');
const vm = require('vm');
const { createRequire } = require('module');

const PROTOCOL_FD = 3;

let current = null;
let count = 0;

function send(msg) {
  const data = Buffer.from(JSON.stringify(msg) + '\n', 'utf8');
  let offset = 0;
  while (offset < data.length) {
    offset += fs.writeSync(PROTOCOL_FD, data, offset);
  }
}

function report(type, fields) {
  send(Object.assign({ id: current, type }, fields));
}

function capture(kind) {
  return function write(chunk, encoding, callback) {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (current !== null && text.length > 0) {
      report(kind, { text });
    }
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') {
      done();
    }
    return true;
  };
}

function bundle(value) {
  const data = { 'text/plain': util.inspect(value) };
  if (value !== null && typeof value === 'object') {
    for (const [method, mime] of [
      ['_repr_html_', 'text/html'],
      ['_repr_markdown_', 'text/markdown'],
      ['_repr_svg_', 'image/svg+xml'],
      ['_repr_png_', 'image/png'],
      ['_repr_json_', 'application/json'],
    ]) {
      if (typeof value[method] === 'function') {
        try {
          const rendered = value[method]();
          if (rendered !== undefined && rendered !== null) {
            data[mime] = Buffer.isBuffer(rendered) ? rendered.toString('base64') : rendered;
          }
        } catch (_) {
          // A broken representation is skipped; text/plain is always there.
        }
      }
    }
  }
  return data;
}

// Stack lines that belong to the kernel or to Node's internals, not to the cell.
const KERNEL_FRAME = new RegExp(`node:|sigintHandlersWrap|${path.basename(__filename).replace('.', '\\.')}`);

function describe(error) {
  if (error instanceof Error) {
    const stack = String(error.stack || error)
      .split('\n')
      .filter((line) => !(line.trimStart().startsWith('at ') && KERNEL_FRAME.test(line)))
      .join('\n');
    return { name: error.name || 'Error', value: error.message || '', traceback: stack };
  }
  return { name: 'Error', value: util.inspect(error), traceback: util.inspect(error) };
}

function applyEnv(env) {
  const saved = {};
  for (const [key, value] of Object.entries(env || {})) {
    saved[key] = Object.prototype.hasOwnProperty.call(process.env, key) ? process.env[key] : null;
    process.env[key] = String(value);
  }
  return saved;
}

function restoreEnv(saved) {
  for (const [key, value] of Object.entries(saved)) {
    if (value === null) {
      delete process.env[key];
    } else {
      process.env[key] = value;
    }
  }
}

// The body of an async function that runs `code` and returns its last statement's value when
// that statement is an expression: the text after the last newline (or semicolon) becomes
// `return (...)` if the result still compiles.
function asyncBody(code) {
  const trimmed = code.replace(/[\s;]+$/, '');
  for (const separator of ['\n', ';']) {
    const at = trimmed.lastIndexOf(separator);
    const head = at < 0 ? '' : trimmed.slice(0, at + 1);
    const tail = (at < 0 ? trimmed : trimmed.slice(at + 1)).trim();
    if (tail === '' || /^(return|const|let|var|function|class|if|for|while|do|try|switch|throw|import|export)\b/.test(tail)) {
      continue;
    }
    const body = `${head}\nreturn (${tail}\n);`;
    try {
      new vm.Script(`(async () => {\n${body}\n})`);
      return body;
    } catch (_) {
      // Not an expression after all; try the next split.
    }
  }
  return code;
}

function run(code, filename) {
  try {
    return vm.runInThisContext(code, { filename, breakOnSigint: true });
  } catch (error) {
    if (error instanceof SyntaxError && /await/.test(error.message)) {
      const wrapped = `(async () => {\n${asyncBody(code)}\n})()`;
      return vm.runInThisContext(wrapped, { filename, breakOnSigint: true });
    }
    throw error;
  }
}

async function execute(request) {
  current = request.id;
  count += 1;
  report('count', { n: count });
  const saved = applyEnv(request.env);
  try {
    let value = run(request.code || '', `<cell-${count}>`);
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
      value = await value;
    }
    if (value !== undefined) {
      globalThis._ = value;
      report('result', { data: bundle(value), main: true });
    }
  } catch (error) {
    report('error', describe(error));
  } finally {
    restoreEnv(saved);
    report('done', {});
    current = null;
  }
}

function main() {
  process.stdout.write = capture('stdout');
  process.stderr.write = capture('stderr');
  globalThis.require = createRequire(path.join(process.cwd(), '[kernel]'));
  globalThis.display = (...values) => {
    for (const value of values) {
      report('result', { data: bundle(value), main: false });
    }
  };
  process.on('SIGINT', () => {});
  process.on('uncaughtException', (error) => {
    if (current !== null) {
      report('stderr', { text: `Uncaught ${describe(error).traceback}\n` });
    }
  });
  process.on('unhandledRejection', (reason) => {
    if (current !== null) {
      report('stderr', { text: `Unhandled rejection: ${describe(reason).traceback}\n` });
    }
  });

  let queue = Promise.resolve();
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on('line', (line) => {
    let request;
    try {
      request = JSON.parse(line);
    } catch (error) {
      return;
    }
    queue = queue.then(() => execute(request));
  });
  lines.on('close', () => {
    queue.then(() => process.exit(0));
  });
  send({ type: 'ready', language: 'javascript', pid: process.pid });
}

main();
