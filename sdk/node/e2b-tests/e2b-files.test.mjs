// The official e2b npm package's `sandbox.files` against zeroboot's envd
// (served by the VMM from the sandbox's own file system). The guest's view
// is checked through our `POST /v1/sandboxes/{id}/exec`, which runs Python
// in the same live sandbox.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { Sandbox, FileNotFoundError, InvalidArgumentError, NotEnoughSpaceError } from "e2b";
import { startServer } from "../test/helpers.mjs";

describe("e2b (npm) files against zeroboot", () => {
  let server;
  let sb;
  before(async () => {
    server = await startServer();
    process.env.E2B_API_URL = server.url;
    process.env.E2B_SANDBOX_URL = server.url;
    process.env.E2B_API_KEY = server.key;
    delete process.env.E2B_DEBUG;
    delete process.env.E2B_ACCESS_TOKEN;
    sb = await Sandbox.create("python", { timeoutMs: 120_000 });
  });
  after(async () => {
    await sb?.kill();
    await server?.stop();
  });

  async function guest(code) {
    const r = await fetch(`${server.url}/v1/sandboxes/${sb.sandboxId}/exec`, {
      method: "POST",
      headers: { Authorization: `Bearer ${server.key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
    });
    const out = await r.json();
    assert.equal(out.exit_code, 0, JSON.stringify(out));
    return out;
  }

  test("write then read text and 1 MiB of bytes; the guest sees them", async () => {
    const info = await sb.files.write("/home/user/hello.txt", "Hello, World!\n");
    assert.equal(info.path, "/home/user/hello.txt");
    assert.equal(await sb.files.read("hello.txt"), "Hello, World!\n");
    const blob = randomBytes(1 << 20);
    await sb.files.write("data/blob.bin", blob);
    const back = await sb.files.read("data/blob.bin", { format: "bytes" });
    assert.ok(Buffer.from(back).equals(blob));
    const out = await guest("print(len(open('/home/user/data/blob.bin', 'rb').read()))");
    assert.equal(out.stdout, `${1 << 20}\n`);
    const many = await sb.files.write([
      { path: "m/one.txt", data: "1" },
      { path: "/tmp/two.txt", data: "2" },
    ]);
    assert.deepEqual(
      many.map((w) => w.path),
      ["/home/user/m/one.txt", "/tmp/two.txt"],
    );
  });

  test("list, exists, makeDir, rename, remove, getInfo", async () => {
    assert.equal(await sb.files.makeDir("proj/src"), true);
    assert.equal(await sb.files.makeDir("proj/src"), false);
    await sb.files.write("proj/src/main.py", "print(1)\n");
    const list = await sb.files.list("proj", { depth: 2 });
    assert.deepEqual(
      list.map((e) => [e.path, e.type]),
      [
        ["/home/user/proj/src", "dir"],
        ["/home/user/proj/src/main.py", "file"],
      ],
    );
    const info = await sb.files.getInfo("proj/src/main.py");
    assert.equal(info.size, 9);
    assert.equal(await sb.files.exists("proj/src/main.py"), true);
    assert.equal(await sb.files.exists("proj/nope"), false);
    const moved = await sb.files.rename("proj/src/main.py", "proj/app.py");
    assert.equal(moved.path, "/home/user/proj/app.py");
    await sb.files.remove("proj");
    assert.equal(await sb.files.exists("proj"), false);
  });

  test("watchDir streams a file the guest creates", async () => {
    await sb.files.makeDir("watched");
    const events = [];
    const h = await sb.files.watchDir("/home/user/watched", (e) => events.push(e), {
      recursive: true,
    });
    try {
      await guest("open('/home/user/watched/g.txt', 'w').write('g')");
      for (let i = 0; i < 100; i++) {
        if (events.some((e) => e.name === "g.txt" && e.type === "write")) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await h.stop();
    }
    const got = events.map((e) => `${e.type} ${e.name}`);
    assert.ok(got.includes("create g.txt"), got.join(", "));
    assert.ok(got.includes("write g.txt"), got.join(", "));
  });

  test("errors: missing path, directory, disk limit, paths outside", async () => {
    await assert.rejects(sb.files.read("/home/user/missing"), FileNotFoundError);
    await assert.rejects(sb.files.read("/home/user"), InvalidArgumentError);
    const big = new Uint8Array((256 << 20) + (1 << 20));
    await assert.rejects(sb.files.write("big.bin", big, { useOctetStream: true }), NotEnoughSpaceError);
    assert.equal(await sb.files.exists("big.bin"), false);
    // As root: `/` is root's (the default user may not create there).
    const w = await sb.files.write("../../../../../../escape-node.txt", "inside", { user: "root" });
    assert.equal(w.path, "/escape-node.txt");
    const out = await guest("print(open('/escape-node.txt').read())");
    assert.equal(out.stdout, "inside\n");
  });
});
