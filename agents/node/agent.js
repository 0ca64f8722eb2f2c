// zeroboot's Node.js agent: runs inside the sandbox, loads once, then
// serves requests from the control channel (fd ZEROBOOT_CONTROL_FD).
//
// The agent reads the channel synchronously: the whole process blocks
// there, which is what a template is. Each fork gets one request: the code
// runs as a script (or, if it uses top-level await, as the body of an async
// function), the event loop drains ('beforeExit' fires when nothing is
// left), and the agent replies and blocks again.
//
// Frames: a 4-byte little-endian length and a JSON object.
// Request {"code": str, "seed": int, "persist": bool, "env": {str: str}}
// ("seed" with a one-shot execution and a live sandbox's first request);
// reply {"exit_code": int}. Scripts share the global scope, so a live
// sandbox's requests ("persist": true) see what earlier ones defined
// (top-level var/let/const/function); "env" is added to process.env.
//
// Entropy: V8 seeds Math.random once per isolate, so every fork of the
// template would share its sequence; the agent replaces Math.random by a
// xorshift128+ seeded from the request. crypto (OpenSSL) cannot be
// reseeded from JavaScript: it notices the fork by the new pid and
// reseeds itself from getrandom. crypto.randomUUID's cache is empty in the
// template (never filled before parking).
"use strict";

const fs = require("fs");
const vm = require("vm");
// Modules users reach for, loaded once in the template.
require("crypto");
require("util");
require("path");
require("os");
require("events");
require("assert");

const CONTROL_FD = Number(process.env.ZEROBOOT_CONTROL_FD || "3");

// As `node -e` does: builtin modules as lazy globals, and require.
const Module = require("module");
globalThis.require = Module.createRequire(process.cwd() + "/[eval]");
for (const name of Module.builtinModules) {
  if (name.startsWith("_") || name.includes("/") || name in globalThis) continue;
  Object.defineProperty(globalThis, name, {
    configurable: true,
    enumerable: false,
    get() {
      const m = require(name);
      Object.defineProperty(globalThis, name, { configurable: true, writable: true, value: m });
      return m;
    },
    set(v) {
      Object.defineProperty(globalThis, name, { configurable: true, writable: true, value: v });
    },
  });
}

// A request is read with one large read (every system call is a VM exit)
// into this buffer, made once in the template; bytes not used yet wait in
// `pending`.
const readBuffer = Buffer.alloc(1 << 16);
let pending = Buffer.alloc(0);

function readExact(n) {
  while (pending.length < n) {
    const k = fs.readSync(CONTROL_FD, readBuffer, 0, readBuffer.length, null);
    if (k === 0) throw new Error("control channel closed");
    pending = Buffer.concat([pending, readBuffer.subarray(0, k)]);
  }
  const out = pending.subarray(0, n);
  pending = pending.subarray(n);
  return out;
}

function reply(obj) {
  const body = Buffer.from(JSON.stringify(obj));
  const frame = Buffer.alloc(4 + body.length);
  frame.writeUInt32LE(body.length, 0);
  body.copy(frame, 4);
  let off = 0;
  while (off < frame.length) off += fs.writeSync(CONTROL_FD, frame, off);
}

function reseed(seed) {
  // xorshift128+, as V8's own Math.random.
  let s0 = BigInt.asUintN(64, BigInt(seed) ^ 0x9e3779b97f4a7c15n) || 1n;
  let s1 = BigInt.asUintN(64, BigInt(seed) * 0xbf58476d1ce4e5b9n + 1n) || 2n;
  Math.random = function random() {
    let x = s0;
    const y = s1;
    s0 = y;
    x = BigInt.asUintN(64, x ^ (x << 23n));
    x = x ^ (x >> 17n) ^ y ^ (y >> 26n);
    s1 = x;
    return Number(BigInt.asUintN(64, s0 + s1) >> 11n) / 2 ** 53;
  };
}

let exitCode = 0;

function report(err) {
  exitCode = 1;
  let text = err && err.stack ? err.stack : String(err);
  // Drop the agent's own frames, as if the code had run by itself.
  text = text
    .split("\n")
    .filter((l) => !/^\s+at .*(agent\.js|node:vm|node:events)/.test(l))
    .join("\n");
  process.stderr.write(text.endsWith("\n") ? text : text + "\n");
}

process.on("uncaughtException", report);
process.on("unhandledRejection", report);

function run(code) {
  exitCode = 0;
  let script;
  try {
    script = new vm.Script(code, { filename: "[eval]" });
  } catch (e) {
    if (!(e instanceof SyntaxError) || !/await/.test(e.message)) {
      report(e);
      return;
    }
    // Top-level await: run the code as the body of an async function.
    try {
      script = new vm.Script(`(async () => {\n${code}\n})()`, { filename: "[eval]", lineOffset: -1 });
    } catch (e2) {
      report(e2);
      return;
    }
  }
  try {
    const r = script.runInThisContext();
    if (r && typeof r.then === "function") r.then(undefined, report);
  } catch (e) {
    report(e);
  }
}

let serving = false;

function serve() {
  serving = true;
  const n = readExact(4).readUInt32LE(0);
  const req = JSON.parse(readExact(n).toString());
  // Node read its pid once at start-up: this fork has its own.
  for (const [key, link] of [["pid", "/proc/self"]]) {
    try {
      Object.defineProperty(process, key, { configurable: true, enumerable: true, writable: true, value: Number(fs.readlinkSync(link)) });
    } catch (_) {}
  }
  process.exitCode = undefined;
  if (req.seed !== undefined) reseed(Number(req.seed));
  if (req.env && typeof req.env === "object") {
    for (const [k, v] of Object.entries(req.env)) process.env[k] = String(v);
  }
  run(String(req.code || ""));
  // Keep the loop turning once more: the reply goes out when it has
  // drained ('beforeExit').
  setImmediate(() => {});
}

process.on("beforeExit", () => {
  // The first time the loop drains, start-up is over: there is no request
  // to answer yet.
  if (serving) {
    const code = exitCode || (typeof process.exitCode === "number" ? process.exitCode : 0);
    reply({ exit_code: code & 0xff });
  }
  serve();
});

// Warm what every request uses, so that it is compiled once in the
// template rather than in each fork: the stdio streams, console's
// formatting, vm.Script, promises and timers.
function warmUp() {
  process.stdout;
  process.stderr;
  const { Writable } = require("stream");
  const devnull = new Writable({ write(_chunk, _enc, cb) { cb(); } });
  const c = new console.Console(devnull, devnull);
  c.log(1 + 1, "text", 1.5, { a: [1, 2, "x"], b: null }, [undefined, true]);
  c.error(new Error("warm-up"));
  // In a block: a top-level const here would be declared for every
  // request's code too (scripts share the global lexical scope).
  run("{ const d = [1, 2, 3].map((x) => x * 2); JSON.parse(JSON.stringify({ d })).d.reduce((a, b) => a + b, 0); }");
  run("await null;");
  setTimeout(() => {}, 0);
  exitCode = 0;
}
warmUp();

// Let start-up work settle, then park on the first read.
setImmediate(() => {});
