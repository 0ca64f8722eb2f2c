// Sandboxes you hold, through the SDK, against a real `zeroboot serve`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { LiveSandbox, Sandbox, ZerobootError } from "@zeroboot/sdk";
import { startServer, withEnv } from "./helpers.mjs";

delete process.env.ZEROBOOT_API_KEY;
delete process.env.ZEROBOOT_API_URL;

describe("live sandboxes", () => {
  let server;
  let sb;
  before(async () => {
    server = await startServer();
    sb = new Sandbox(server.key, { baseUrl: server.url });
  });
  after(async () => {
    await server?.stop();
  });

  test("fork copies the state; each copy diverges alone", async () => {
    const h = await sb.create({ template: "python", timeout: 120 });
    const copies = [];
    try {
      await h.run("x = 41");
      copies.push(...(await h.fork({ count: 2, timeout: 60 })));
      assert.equal(copies.length, 2);
      for (const c of copies) assert.ok(c instanceof LiveSandbox, String(c));
      await copies[0].run("x = 0");
      assert.equal(await copies[1].run("print(x + 1)"), "42\n");
      assert.equal(await copies[0].run("print(x + 1)"), "1\n");
      assert.equal(await h.run("print(x + 1)"), "42\n");
      await assert.rejects(h.fork({ count: 0 }), (e) => e instanceof ZerobootError && e.status === 400);
    } finally {
      for (const c of copies) if (c instanceof LiveSandbox) await c.kill();
      await h.kill();
    }
  });

  test("snapshot, create from it, pause and resume", async () => {
    const h = await sb.create({ template: "python", timeout: 120 });
    const made = [];
    try {
      await h.run("x = 41");
      const sid = await h.snapshot();
      await h.run("x = 0");
      assert.ok((await sb.snapshots()).some((s) => s.snapshotID === sid));
      made.push(await sb.create({ snapshot: sid, timeout: 60 }));
      assert.equal(await made[0].run("print(x + 1)"), "42\n");
      assert.equal(await h.pause(), true);
      assert.equal(await h.pause(), false);
      await assert.rejects(h.run("print(x)"), (e) => e instanceof ZerobootError && e.status === 409);
      const back = await sb.connect(h.id, { timeout: 60 });
      assert.equal(await back.run("print(x + 1)"), "1\n");
      // Paused with its files only: the resume is a cold boot.
      await back.run("open('/tmp/kept', 'w').write('k')");
      assert.equal(await back.pause({ memory: false }), true);
      const cold = await sb.connect(h.id, { timeout: 60 });
      assert.equal(await cold.run("print(open('/tmp/kept').read(), 'x' in globals())"), "k False\n");
      assert.equal(await sb.deleteSnapshot(sid), true);
      assert.equal(await sb.deleteSnapshot(sid), false);
      await assert.rejects(sb.create({ snapshot: sid }), (e) => e instanceof ZerobootError && e.status === 404);
    } finally {
      for (const c of made) await c.kill();
      await h.kill();
    }
  });

  test("state persists in one sandbox and nowhere else", async () => {
    const h = await sb.create({ template: "python", timeout: 300 });
    const other = await sb.create();
    try {
      assert.ok(h instanceof LiveSandbox);
      assert.equal(await h.run("x = 41"), "");
      assert.equal(await h.run("print(x + 1)"), "42\n");
      const r = await other.exec("print(x)");
      assert.equal(r.exit_code, 1);
      assert.match(r.stderr, /NameError/);
      assert.equal(await sb.run("print('x' in globals())"), "False\n");
    } finally {
      assert.equal(await h.kill(), true);
      assert.equal(await other.kill(), true);
    }
    assert.equal(await h.kill(), false);
    await assert.rejects(h.run("print(1)"), (e) => e instanceof ZerobootError && e.status === 410);
  });

  test("connect, list, setTimeout", async () => {
    const tag = `t${Date.now()}`;
    const h = await sb.create({ template: "node", metadata: { tag }, envs: { GREETING: "hi" } });
    try {
      await h.run("var n = 1");
      const again = await withEnv({ ZEROBOOT_API_KEY: server.key, ZEROBOOT_API_URL: server.url }, () =>
        Sandbox.connect(h.id, { timeout: 60 }),
      );
      assert.equal(await again.run("console.log(n + 1, process.env.GREETING)"), "2 hi\n");
      const listed = await sb.list({ metadata: { tag } });
      assert.deepEqual(
        listed.map((s) => s.sandboxID),
        [h.id],
      );
      assert.equal((await h.info()).templateID, "node");
      await h.setTimeout(1);
      const deadline = Date.now() + 5000;
      while ((await h.isRunning()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(await h.isRunning(), false);
    } finally {
      await h.kill();
    }
  });
});
