// Client-side behaviour against a scriptable stub HTTP server (no zeroboot needed).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, beforeEach, describe, test } from "node:test";

import { Sandbox, ZerobootError, DEFAULT_BASE_URL } from "@zeroboot/sdk";
import { freePort, withEnv } from "./helpers.mjs";

const RESULT = {
  id: "abc",
  output: "2\n",
  stdout: "2\n",
  stderr: "",
  exit_code: 0,
  duration_ms: 1.5,
  fork_time_ms: 0.3,
  exec_time_ms: 1.0,
  total_time_ms: 1.6,
  timed_out: false,
  truncated: false,
};

const stub = { url: "", requests: [], responder: null };

function reply(status, body, headers = {}) {
  const raw = typeof body === "string" ? body : JSON.stringify(body);
  stub.responder = () => ({ status, headers: { "content-type": "application/json", ...headers }, body: raw });
}

let server;
before(async () => {
  server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let body;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const rec = { method: req.method, path: req.url, headers: req.headers, body };
      stub.requests.push(rec);
      const out = stub.responder ? await stub.responder(rec) : { status: 500, headers: {}, body: "no responder" };
      res.writeHead(out.status, out.headers);
      res.end(out.body);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  stub.url = `http://127.0.0.1:${server.address().port}`;
});
after(() => new Promise((r) => server.close(r)));
beforeEach(() => {
  stub.requests = [];
  stub.responder = null;
});

describe("requests", () => {
  test("run sends the documented request", async () => {
    reply(200, RESULT);
    const sb = new Sandbox("k1", { baseUrl: stub.url });
    assert.equal(await sb.run("print(1 + 1)"), "2\n");
    assert.equal(stub.requests.length, 1);
    const [req] = stub.requests;
    assert.equal(req.method, "POST");
    assert.equal(req.path, "/v1/exec");
    assert.equal(req.headers.authorization, "Bearer k1");
    assert.match(req.headers["content-type"], /^application\/json/);
    assert.deepEqual(req.body, { code: "print(1 + 1)", language: "python" });
  });

  test("exec passes language and timeout", async () => {
    reply(200, RESULT);
    await new Sandbox("k", { baseUrl: stub.url }).exec("x", { language: "node", timeout: 2.5 });
    assert.deepEqual(stub.requests[0].body, { code: "x", language: "node", timeout_seconds: 2.5 });
  });

  test("no key: no authorization header", async () => {
    reply(200, RESULT);
    await withEnv({ ZEROBOOT_API_KEY: undefined }, () => new Sandbox(undefined, { baseUrl: stub.url }).run("x"));
    assert.equal(stub.requests[0].headers.authorization, undefined);
  });

  test("environment variables", async () => {
    reply(200, RESULT);
    await withEnv({ ZEROBOOT_API_URL: stub.url + "/", ZEROBOOT_API_KEY: "from-env" }, async () => {
      const sb = new Sandbox();
      assert.equal(sb.baseUrl, stub.url);
      await sb.run("x");
      await new Sandbox("explicit").run("x");
    });
    assert.equal(stub.requests[0].headers.authorization, "Bearer from-env");
    assert.equal(stub.requests[1].headers.authorization, "Bearer explicit");
  });

  test("default and normalised base URLs", async () => {
    await withEnv({ ZEROBOOT_API_URL: undefined }, () => {
      assert.equal(new Sandbox().baseUrl, DEFAULT_BASE_URL);
      assert.equal(DEFAULT_BASE_URL, "http://127.0.0.1:8080");
      for (const [given, want] of [
        ["http://h:1/", "http://h:1"],
        ["http://h:1/v1", "http://h:1"],
        ["h:1", "http://h:1"],
        ["https://api.example.com/zb/", "https://api.example.com/zb"],
      ]) {
        assert.equal(new Sandbox("k", { baseUrl: given }).baseUrl, want);
      }
    });
  });

  test("batch: strings and requests, defaults filled in", async () => {
    stub.responder = (req) => ({
      status: 200,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        results: req.body.executions.map((e, i) => ({ ...RESULT, id: String(i), output: e.code, stdout: e.code })),
      }),
    });
    const sb = new Sandbox(undefined, { baseUrl: stub.url });
    const results = await sb.execBatch(["a", { code: "b", language: "node" }, { code: "c", timeout_seconds: 3 }], {
      timeout: 7,
    });
    assert.deepEqual(
      results.map((r) => r.output),
      ["a", "b", "c"],
    );
    assert.equal(stub.requests[0].path, "/v1/exec/batch");
    assert.deepEqual(stub.requests[0].body, {
      executions: [
        { code: "a", language: "python", timeout_seconds: 7 },
        { code: "b", language: "node", timeout_seconds: 7 },
        { code: "c", language: "python", timeout_seconds: 3 },
      ],
    });
  });

  test("batch: empty list makes no request; bad items throw", async () => {
    const sb = new Sandbox(undefined, { baseUrl: stub.url });
    assert.deepEqual(await sb.execBatch([]), []);
    assert.equal(stub.requests.length, 0);
    await assert.rejects(sb.execBatch([42]), TypeError);
  });

  test("batch: result count mismatch", async () => {
    reply(200, { results: [RESULT] });
    await assert.rejects(new Sandbox(undefined, { baseUrl: stub.url }).execBatch(["a", "b"]), ZerobootError);
  });

  test("health", async () => {
    reply(200, { status: "ok", templates: { python: { ready: true, memory_mb: 64 } } });
    const h = await new Sandbox(undefined, { baseUrl: stub.url }).health();
    assert.equal(h.status, "ok");
    assert.equal(h.templates.python.ready, true);
    assert.equal(stub.requests[0].method, "GET");
    assert.equal(stub.requests[0].path, "/v1/health");
  });
});

describe("results", () => {
  test("all fields, unknown fields kept", async () => {
    reply(200, { ...RESULT, exit_code: 3, future_field: [1, 2] });
    const r = await new Sandbox(undefined, { baseUrl: stub.url }).exec("x");
    assert.equal(r.id, "abc");
    assert.equal(r.exit_code, 3);
    assert.equal(r.output, "2\n");
    assert.equal(r.stdout, "2\n");
    assert.equal(r.fork_time_ms, 0.3);
    assert.equal(r.timed_out, false);
    assert.equal(r.truncated, false);
    assert.deepEqual(r.future_field, [1, 2]);
  });

  test("out_of_memory and error fields", async () => {
    reply(200, { ...RESULT, out_of_memory: true, error: "fork failed" });
    const r = await new Sandbox(undefined, { baseUrl: stub.url }).exec("x");
    assert.equal(r.out_of_memory, true);
    assert.equal(r.error, "fork failed");
  });

  test("missing fields get defaults; output and stdout mirror", async () => {
    reply(200, { output: "hi" });
    const r = await new Sandbox(undefined, { baseUrl: stub.url }).exec("x");
    assert.equal(r.stdout, "hi");
    assert.equal(r.exit_code, 0);
    assert.equal(r.id, "");
    assert.equal(r.out_of_memory, false);
  });

  test("run returns the output of code that exits non-zero", async () => {
    reply(200, { ...RESULT, output: "partial\n", stdout: "partial\n", exit_code: 1 });
    assert.equal(await new Sandbox(undefined, { baseUrl: stub.url }).run("x"), "partial\n");
  });

  test("unicode round trip", async () => {
    stub.responder = (req) => ({
      status: 200,
      headers: {},
      body: JSON.stringify({ ...RESULT, output: req.body.code, stdout: req.body.code }),
    });
    assert.equal(await new Sandbox(undefined, { baseUrl: stub.url }).run("héllo ✓ 你好"), "héllo ✓ 你好");
  });
});

describe("errors", () => {
  for (const status of [400, 401, 413, 422, 503]) {
    test(`HTTP ${status} with a JSON error`, async () => {
      reply(status, { error: `message for ${status}` });
      const err = await new Sandbox(undefined, { baseUrl: stub.url }).run("x").catch((e) => e);
      assert.ok(err instanceof ZerobootError);
      assert.ok(err instanceof Error);
      assert.equal(err.name, "ZerobootError");
      assert.equal(err.status, status);
      assert.equal(err.message, `message for ${status}`);
      assert.deepEqual(err.body, { error: `message for ${status}` });
      assert.equal(String(err), `ZerobootError: HTTP ${status}: message for ${status}`);
    });
  }

  test("429 with Retry-After", async () => {
    reply(429, { error: "rate limit exceeded" }, { "retry-after": "2" });
    const err = await new Sandbox(undefined, { baseUrl: stub.url }).exec("x").catch((e) => e);
    assert.equal(err.status, 429);
    assert.equal(err.retryAfter, 2);
  });

  test("non-JSON and empty error bodies", async () => {
    reply(502, "Bad Gateway from a proxy", { "content-type": "text/plain" });
    let err = await new Sandbox(undefined, { baseUrl: stub.url }).run("x").catch((e) => e);
    assert.equal(err.status, 502);
    assert.match(err.message, /Bad Gateway/);
    reply(500, "");
    err = await new Sandbox(undefined, { baseUrl: stub.url }).run("x").catch((e) => e);
    assert.equal(err.status, 500);
    assert.ok(err.message);
  });

  test("invalid JSON on 200", async () => {
    reply(200, "<html>");
    const err = await new Sandbox(undefined, { baseUrl: stub.url }).run("x").catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 200);
  });

  test("connection refused is status 0", async () => {
    const port = await freePort();
    const err = await new Sandbox("k", { baseUrl: `http://127.0.0.1:${port}` }).run("print(1)").catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 0);
    assert.match(String(err), new RegExp(`127\\.0\\.0\\.1:${port}`));
  });

  test("HTTP timeout is status 0", async () => {
    stub.responder = () => new Promise((r) => setTimeout(() => r({ status: 200, headers: {}, body: "{}" }), 1500));
    const err = await new Sandbox(undefined, { baseUrl: stub.url, timeoutMs: 300 }).health().catch((e) => e);
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 0);
    assert.match(err.message, /timed out/);
  });

  test("abort signal", async () => {
    stub.responder = () => new Promise((r) => setTimeout(() => r({ status: 200, headers: {}, body: "{}" }), 1500));
    const ac = new AbortController();
    const p = new Sandbox(undefined, { baseUrl: stub.url }).run("x", { signal: ac.signal }).catch((e) => e);
    setTimeout(() => ac.abort(), 50);
    const err = await p;
    assert.ok(err instanceof ZerobootError);
    assert.equal(err.status, 0);
    assert.match(err.message, /aborted/);
  });
});
