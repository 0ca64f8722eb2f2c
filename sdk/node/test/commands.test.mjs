// Streaming executions and a live sandbox's commands and files through the
// SDK, against a real `zeroboot serve`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { CommandHandle, Sandbox, ZerobootError } from "@zeroboot/sdk";
import { startServer } from "./helpers.mjs";

delete process.env.ZEROBOOT_API_KEY;
delete process.env.ZEROBOOT_API_URL;

describe("streaming, commands and files", () => {
  let server;
  let sb;
  before(async () => {
    server = await startServer();
    sb = new Sandbox(server.key, { baseUrl: server.url });
  });
  after(async () => {
    await server?.stop();
  });

  test("stream yields output as it is written, then the result", async () => {
    const seen = [];
    const code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)\n";
    for await (const ev of sb.stream(code)) seen.push([Date.now(), ev]);
    const last = seen.at(-1)[1];
    assert.equal(last.type, "result");
    assert.equal(last.exit_code, 0);
    const out = seen.filter(([, e]) => e.type === "stdout");
    assert.equal(out.map(([, e]) => e.data).join(""), "0\n1\n2\n");
    assert.equal(out.length, 3);
    assert.ok(out[2][0] - out[0][0] >= 400, "lines arrived together: not streamed");
    await assert.rejects(
      (async () => {
        for await (const _ of sb.stream("1", { language: "cobol" }));
      })(),
      (e) => e instanceof ZerobootError && e.status === 400,
    );
  });

  test("commands and files on a handle", async () => {
    const h = await sb.create({ template: "python", timeout: 120 });
    try {
      const r = await h.commands.run("echo hello; echo oops >&2; exit 4");
      assert.deepEqual([r.exitCode, r.stdout, r.stderr], [4, "hello\n", "oops\n"]);
      const chunks = [];
      await h.commands.run("for i in 1 2 3; do echo $i; done", { onStdout: (d) => chunks.push(d) });
      assert.equal(chunks.join(""), "1\n2\n3\n");

      const bg = await h.commands.run("cat", { background: true, stdin: true });
      assert.ok(bg instanceof CommandHandle);
      assert.deepEqual((await h.commands.list()).map((p) => p.pid), [bg.pid]);
      await bg.sendStdin("piped\n");
      await bg.closeStdin();
      assert.equal((await bg.wait()).stdout, "piped\n");

      await h.files.write("/home/user/data.csv", "a,b\n1,2\n3,4\n");
      assert.equal((await h.commands.run("wc -l < /home/user/data.csv")).stdout, "3\n");
      assert.equal(await h.files.read("/home/user/data.csv"), "a,b\n1,2\n3,4\n");
      assert.equal(await h.run("print(open('/home/user/data.csv').read().count(','))"), "3\n");
      assert.equal(await h.files.exists("/home/user/data.csv"), true);
      assert.equal(await h.files.exists("/home/user/nope"), false);
      await assert.rejects(h.files.read("/home/user/nope"), (e) => e instanceof ZerobootError && e.status === 404);
      await assert.rejects(
        h.commands.run("sleep 10", { timeout: 1 }),
        (e) => e instanceof ZerobootError && e.status === 408,
      );
    } finally {
      await h.kill();
    }
  });
});
