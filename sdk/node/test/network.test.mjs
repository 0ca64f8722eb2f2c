// The network options: allowInternetAccess and network (E2B's shape) on
// one-shot runs and sandbox creation, and LiveSandbox.updateNetwork
// (PUT /sandboxes/{id}/network). The request shapes against a stub server;
// the behaviour against a real server run with `--network policy` that
// allows exactly one loopback port, where this test's own HTTP server
// listens (no traffic leaves the loopback).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { Sandbox } from "@zeroboot/sdk";
import { startServer } from "./helpers.mjs";

/** An HTTP server on 127.0.0.1; `handler(req, body)` answers {status, body}. */
async function listen(handler) {
  const requests = [];
  const srv = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const rec = { method: req.method, url: req.url, body: text ? JSON.parse(text) : undefined };
      requests.push(rec);
      const { status, body } = handler(rec);
      res.writeHead(status, { "content-type": "application/json" });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    });
  });
  await new Promise((ok) => srv.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${srv.address().port}`, port: srv.address().port, requests, close: () => srv.close() };
}

describe("request shapes (stub)", () => {
  let stub;
  let answer = { status: 200, body: {} };
  before(async () => {
    stub = await listen(() => answer);
  });
  after(() => stub.close());

  test("exec sends the network fields and nothing when they are left out", async () => {
    answer = { status: 200, body: { id: "a", output: "", stdout: "", network: { enabled: true, connections: 1 } } };
    const sb = new Sandbox("k", { baseUrl: stub.url });
    const r = await sb.exec("x", { allowInternetAccess: false, network: { allowOut: ["pypi.org"], denyOut: ["0.0.0.0/0"] } });
    assert.deepEqual(stub.requests.at(-1).body, {
      code: "x",
      language: "python",
      allow_internet_access: false,
      network: { allowOut: ["pypi.org"], denyOut: ["0.0.0.0/0"] },
    });
    assert.equal(r.network.connections, 1);
    await sb.run("y");
    assert.deepEqual(stub.requests.at(-1).body, { code: "y", language: "python" });
  });

  test("create sends them and updateNetwork PUTs the rules", async () => {
    answer = { status: 201, body: { sandboxID: "sb1", templateID: "python" } };
    const sb = new Sandbox("k", { baseUrl: stub.url });
    const h = await sb.create({ allowInternetAccess: false, network: { allowOut: ["10.0.0.0/8"] } });
    const c = stub.requests.at(-1).body;
    assert.equal(c.allow_internet_access, false);
    assert.deepEqual(c.network, { allowOut: ["10.0.0.0/8"] });
    const detail = { sandboxID: "sb1", allowInternetAccess: false, network: { enabled: true, allowOut: ["pypi.org"], denyOut: [] } };
    answer = { status: 200, body: detail };
    assert.deepEqual(await h.updateNetwork({ allowOut: ["pypi.org"], allowInternetAccess: false }), detail);
    const put = stub.requests.at(-1);
    assert.equal(put.method, "PUT");
    assert.equal(put.url, "/sandboxes/sb1/network");
    assert.deepEqual(put.body, { allow_internet_access: false, network: { allowOut: ["pypi.org"], denyOut: [] } });
  });

  test("bad network options are refused before a request", async () => {
    const n = stub.requests.length;
    const sb = new Sandbox("k", { baseUrl: stub.url });
    await assert.rejects(sb.exec("x", { network: { allowOut: "pypi.org" } }), TypeError);
    await assert.rejects(sb.exec("x", { network: ["pypi.org"] }), TypeError);
    await assert.rejects(sb.create({ allowInternetAccess: "yes" }), TypeError);
    assert.equal(stub.requests.length, n);
  });
});

describe("on a server with network", () => {
  let data;
  let server;
  before(async () => {
    data = await listen(() => ({ status: 200, body: "hello" }));
    server = await startServer({
      languages: "python",
      extra: ["--network", "policy", "--net-allow-host", `127.0.0.1:${data.port}`, "--net-resolver", "static"],
    });
  });
  after(async () => {
    await server?.stop();
    data?.close();
  });

  const fetchCode = () => `
import urllib.request
try:
    print(urllib.request.urlopen("http://127.0.0.1:${data.port}/", timeout=10).read().decode())
except OSError as e:
    print("refused", getattr(e, "reason", e))
`;

  test("one-shot runs follow their rules", async () => {
    const sb = new Sandbox(server.key, { baseUrl: server.url });
    let r = await sb.exec(fetchCode());
    assert.equal(r.stdout, "hello\n");
    assert.equal(r.network.enabled, true);
    assert.equal(r.network.connections, 1);
    r = await sb.exec(fetchCode(), { allowInternetAccess: false });
    assert.match(r.stdout, /^refused/);
    assert.equal(r.network.denied, 1);
    const out = await sb.run(fetchCode(), { allowInternetAccess: false, network: { allowOut: ["127.0.0.1/32"] } });
    assert.equal(out, "hello\n");
  });

  test("a live sandbox's rules change with updateNetwork", async () => {
    const sb = new Sandbox(server.key, { baseUrl: server.url });
    const h = await sb.create({ allowInternetAccess: false });
    try {
      assert.equal((await h.info()).allowInternetAccess, false);
      assert.match(await h.run(fetchCode()), /^refused/);
      const d = await h.updateNetwork({ allowOut: ["127.0.0.1"], allowInternetAccess: false });
      assert.deepEqual(d.network.allowOut, ["127.0.0.1/32"]);
      assert.equal(await h.run(fetchCode()), "hello\n");
      await assert.rejects(h.updateNetwork({ allowOut: ["not a rule"] }), (e) => e.status === 400 && /not a rule/.test(e.message));
      assert.deepEqual((await h.info()).network.allowOut, ["127.0.0.1/32"]);
    } finally {
      await h.kill();
    }
  });
});
