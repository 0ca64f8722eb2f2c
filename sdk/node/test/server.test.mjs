// The SDK against a real `zeroboot serve`, started once for this file.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Sandbox, ZerobootError } from "@zeroboot/sdk";
import { freePort, startServer, withEnv } from "./helpers.mjs";

// Tests start without the SDK's environment variables.
delete process.env.ZEROBOOT_API_KEY;
delete process.env.ZEROBOOT_API_URL;

describe("zeroboot serve", () => {
  let server;
  let sb;
  before(async () => {
    server = await startServer();
    sb = new Sandbox(server.key, { baseUrl: server.url });
  });
  after(async () => {
    await server?.stop();
  });

  test("seed style: new Sandbox(key).run", async () => {
    await withEnv({ ZEROBOOT_API_URL: server.url }, async () => {
      assert.equal(await new Sandbox(server.key).run("print(1 + 1)"), "2\n");
    });
  });

  test("exec fields", async () => {
    const r = await sb.exec("import sys\nprint('out')\nprint('err', file=sys.stderr)", { language: "python" });
    assert.equal(typeof r.id, "string");
    assert.ok(r.id.length > 0);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.output, r.stdout);
    assert.equal(r.stderr, "err\n");
    assert.equal(r.exit_code, 0);
    assert.equal(r.timed_out, false);
    assert.equal(r.truncated, false);
    assert.equal(r.out_of_memory, false);
    assert.equal(r.error, undefined);
    for (const k of ["duration_ms", "fork_time_ms", "exec_time_ms", "total_time_ms"]) {
      assert.equal(typeof r[k], "number", k);
      assert.ok(r[k] >= 0, k);
    }
    assert.ok(r.total_time_ms >= r.exec_time_ms);
  });

  test("exit codes; run still returns the output", async () => {
    const r = await sb.exec("print('bye')\nraise SystemExit(3)");
    assert.equal(r.exit_code, 3);
    assert.equal(r.stdout, "bye\n");
    assert.equal(await sb.run("print('bye')\nraise SystemExit(3)"), "bye\n");
  });

  test("uncaught exception", async () => {
    const r = await sb.exec("1 / 0");
    assert.equal(r.exit_code, 1);
    assert.match(r.stderr, /ZeroDivisionError/);
  });

  test("code timeout", async () => {
    const r = await sb.exec("while True:\n    pass", { timeout: 1 });
    assert.equal(r.timed_out, true);
    assert.notEqual(r.exit_code, 0);
  });

  test("truncated output", async () => {
    const r = await sb.exec("import sys\nsys.stdout.write('y' * (8 * 1024 * 1024))");
    assert.equal(r.truncated, true);
    assert.equal(r.exit_code, 0);
    assert.ok(r.stdout.length > 0 && r.stdout.length < 8 * 1024 * 1024);
  });

  test("unicode", async () => {
    assert.equal(await sb.run("print('héllo ✓ 你好')"), "héllo ✓ 你好\n");
  });

  test("batch keeps the order", async () => {
    const codes = Array.from({ length: 8 }, (_, i) => `print(${i} * ${i})`);
    const results = await sb.execBatch(codes);
    assert.deepEqual(
      results.map((r) => r.output),
      codes.map((_, i) => `${i * i}\n`),
    );
    assert.equal(new Set(results.map((r) => r.id)).size, 8);
  });

  test("batch with requests and exit codes", async () => {
    const results = await sb.execBatch([
      { code: "print('a')" },
      { code: "raise SystemExit(5)", language: "python" },
      "print('c')",
      { code: "while True: pass", timeout_seconds: 1 },
    ]);
    assert.deepEqual(
      results.slice(0, 3).map((r) => r.exit_code),
      [0, 5, 0],
    );
    assert.equal(results[0].output, "a\n");
    assert.equal(results[2].output, "c\n");
    assert.equal(results[3].timed_out, true);
  });

  test("10 concurrent runs with Promise.all", async () => {
    const codes = Array.from({ length: 10 }, (_, i) => `print(${i} + 1)`);
    const outputs = await Promise.all(codes.map((code) => sb.run(code)));
    assert.deepEqual(
      outputs,
      codes.map((_, i) => `${i + 1}\n`),
    );
  });

  test("the second key works", async () => {
    assert.equal(await new Sandbox(server.otherKey, { baseUrl: server.url }).run("print(7)"), "7\n");
  });

  test("wrong key: ZerobootError 401", async () => {
    const err = await new Sandbox("wrong-key", { baseUrl: server.url }).run("print(1)").catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 401);
    assert.ok(err.message);
    assert.match(String(err), /401/);
  });

  test("missing key: 401", async () => {
    const anon = new Sandbox(undefined, { baseUrl: server.url });
    assert.equal(anon.apiKey, undefined);
    const err = await anon.exec("print(1)").catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 401);
  });

  test("health", async () => {
    const h = await sb.health();
    assert.equal(h.status, "ok");
    assert.equal(h.templates.python.ready, true);
    assert.equal(typeof h.templates.python.memory_mb, "number");
    assert.ok(h.templates.python.memory_mb > 0);
  });

  test("unknown language: 400", async () => {
    const err = await sb.run("print(1)", { language: "cobol" }).catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 400);
    assert.ok(err.message);
  });

  for (const timeout of [0, -1, 301]) {
    test(`timeout ${timeout}: 400`, async () => {
      const err = await sb.exec("print(1)", { timeout }).catch((e) => e);
      assert.ok(err instanceof ZerobootError);
      assert.equal(err.status, 400);
    });
  }

  test("connection refused: status 0", async () => {
    const port = await freePort();
    const err = await new Sandbox(server.key, { baseUrl: `http://127.0.0.1:${port}` }).run("print(1)").catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 0);
  });

  test("ZEROBOOT_API_URL and ZEROBOOT_API_KEY", async () => {
    await withEnv({ ZEROBOOT_API_URL: server.url, ZEROBOOT_API_KEY: server.key }, async () => {
      const envSb = new Sandbox();
      assert.equal(envSb.baseUrl, server.url);
      assert.equal(await envSb.run("print(1 + 1)"), "2\n");
    });
    await withEnv({ ZEROBOOT_API_URL: server.url, ZEROBOOT_API_KEY: "wrong-key" }, async () => {
      const err = await new Sandbox().run("print(1)").catch((e) => e);
      assert.equal(err.status, 401);
    });
  });

  test("the execute_code tool (examples/tool.ts)", async () => {
    // The example builds its Sandbox at import time from the environment.
    const ok = await withEnv({ ZEROBOOT_API_URL: server.url, ZEROBOOT_API_KEY: server.key }, async () => {
      const { execute_code } = await import("../dist/examples/tool.js?good");
      return execute_code({ code: "print(1 + 1)" });
    });
    assert.deepEqual(ok, { success: true, output: "2\n" });

    const bad = await withEnv({ ZEROBOOT_API_URL: server.url, ZEROBOOT_API_KEY: "wrong-key" }, async () => {
      const { execute_code } = await import("../dist/examples/tool.js?bad");
      return execute_code({ code: "print(1 + 1)" });
    });
    assert.equal(bad.success, false);
    assert.match(bad.output, /ZerobootError: HTTP 401/);
  });
});
