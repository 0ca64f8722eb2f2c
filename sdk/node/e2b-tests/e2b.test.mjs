// The official e2b npm package (pinned in package.json) against a real
// `zeroboot serve`, as an E2B user would point it here: E2B_API_URL =
// E2B_SANDBOX_URL = the server, E2B_API_KEY = a key of our keys file.
// These tests cover the control plane (create, list, info, timeout,
// connect, pause, kill); e2b-files.test.mjs covers envd's files.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Sandbox, SandboxNotFoundError, AuthenticationError } from "e2b";
import { startServer } from "../test/helpers.mjs";

describe("e2b (npm) against zeroboot", () => {
  let server;
  before(async () => {
    server = await startServer();
    process.env.E2B_API_URL = server.url;
    process.env.E2B_SANDBOX_URL = server.url;
    process.env.E2B_API_KEY = server.key;
    delete process.env.E2B_DEBUG;
    delete process.env.E2B_ACCESS_TOKEN;
  });
  after(async () => {
    await server?.stop();
  });

  test("create, getInfo, list with a metadata filter, connect, kill", async () => {
    const tag = `t${Date.now()}`;
    const sb = await Sandbox.create("python", { metadata: { suite: tag }, timeoutMs: 120_000 });
    const other = await Sandbox.create("python", { metadata: { suite: `not-${tag}` } });
    try {
      assert.ok(sb.sandboxId);
      const info = await sb.getInfo();
      assert.equal(info.sandboxId, sb.sandboxId);
      assert.equal(info.templateId, "python");
      assert.deepEqual(info.metadata, { suite: tag });
      assert.equal(info.state, "running");
      const life = (info.endAt.getTime() - info.startedAt.getTime()) / 1000;
      assert.ok(life > 100 && life <= 121, String(life));

      const found = await Sandbox.list({ query: { metadata: { suite: tag } } }).nextItems();
      assert.deepEqual(
        found.map((s) => s.sandboxId),
        [sb.sandboxId],
      );
      const again = await Sandbox.connect(sb.sandboxId);
      assert.equal(again.sandboxId, sb.sandboxId);

      await sb.kill();
      await assert.rejects(Sandbox.getInfo(sb.sandboxId), SandboxNotFoundError);
      assert.equal(await Sandbox.kill(sb.sandboxId), false);
    } finally {
      await Sandbox.kill(sb.sandboxId);
      await other.kill();
    }
  });

  test("setTimeout(5 s) ends the sandbox after about 5 s", async () => {
    const sb = await Sandbox.create("node", { timeoutMs: 60_000 });
    const start = Date.now();
    await sb.setTimeout(5_000);
    let gone;
    while (Date.now() - start < 10_000) {
      try {
        await Sandbox.getInfo(sb.sandboxId);
      } catch (e) {
        assert.ok(e instanceof SandboxNotFoundError, String(e));
        gone = (Date.now() - start) / 1000;
        break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(gone !== undefined, "still there 10 s after setTimeout(5 s)");
    assert.ok(gone >= 4.5 && gone <= 7, String(gone));
  });

  test("pause, then connect resumes", async () => {
    const sb = await Sandbox.create("python");
    try {
      await sb.pause();
      assert.equal((await sb.getInfo()).state, "paused");
      await Sandbox.connect(sb.sandboxId, { timeoutMs: 30_000 });
      assert.equal((await sb.getInfo()).state, "running");
    } finally {
      await sb.kill();
    }
  });

  test("errors", async () => {
    await assert.rejects(Sandbox.create("no-such-template"), /404|not found/);
    await assert.rejects(Sandbox.connect("neverexisted0000000"), SandboxNotFoundError);
    await assert.rejects(Sandbox.create("python", { apiKey: "not-a-key" }), AuthenticationError);
  });
});
