// LiveSandbox.runCode (the code interpreter) through the SDK, against a
// real `zeroboot serve --languages python,code-interpreter`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Sandbox, ZerobootError } from "@zeroboot/sdk";
import { startServer } from "./helpers.mjs";

delete process.env.ZEROBOOT_API_KEY;
delete process.env.ZEROBOOT_API_URL;

describe("code interpreter", () => {
  let server;
  let h;
  before(async () => {
    server = await startServer({ languages: "python,code-interpreter" });
    h = await new Sandbox(server.key, { baseUrl: server.url }).create({ template: "code-interpreter", timeout: 120 });
  });
  after(async () => {
    await h?.kill().catch(() => {});
    await server?.stop();
  });

  test("state, results, streamed stdout, errors", async () => {
    await h.runCode("x = 20");
    const out = [];
    const ex = await h.runCode("print('hi')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()\nx * 2 + 2", {
      onStdout: (t) => out.push(t),
    });
    assert.equal(ex.text, "42");
    assert.deepEqual(out, ["hi\n"]);
    assert.deepEqual([...Buffer.from(ex.results[0].png, "base64").subarray(1, 4)], [0x50, 0x4e, 0x47]);
    assert.equal(ex.results[0].isMainResult, false);
    assert.equal((await h.runCode("1 / 0")).error.name, "ZeroDivisionError");
  });

  test("timeout interrupts, contexts, bash and javascript", async () => {
    await h.runCode("kept = 1");
    assert.equal((await h.runCode("while True: pass", { timeout: 1 })).error.name, "KeyboardInterrupt");
    assert.equal((await h.runCode("kept + 1")).text, "2");
    const ctx = await h.createCodeContext();
    assert.equal((await h.runCode("kept", { context: ctx })).error.name, "NameError");
    assert.ok((await h.listCodeContexts()).some((c) => c.id === ctx.id));
    await h.removeCodeContext(ctx);
    await assert.rejects(h.runCode("1", { context: ctx }), (e) => e instanceof ZerobootError && e.status === 404);
    assert.deepEqual((await h.runCode("echo $((6 * 7))", { language: "bash" })).logs.stdout, ["42\n"]);
    assert.equal((await h.runCode("[1, 2].map((v) => v * 3)", { language: "js" })).text, "[ 3, 6 ]");
  });

  test("one-shot runCode: results of a stateless cell (/v1/exec results: true)", async () => {
    const sb = new Sandbox(server.key, { baseUrl: server.url });
    const ex = await sb.runCode("print('hi')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()\n6 * 7");
    assert.equal(ex.text, "42");
    assert.deepEqual(ex.logs.stdout, ["hi\n"]);
    assert.deepEqual([...Buffer.from(ex.results[0].png, "base64").subarray(1, 4)], [0x50, 0x4e, 0x47]);
    assert.equal((await sb.runCode("1 / 0")).error.name, "ZeroDivisionError");
    await sb.runCode("y = 5");
    assert.equal((await sb.runCode("y")).error.name, "NameError");
    assert.equal((await sb.runCode("[1, 2].map((v) => v * 3)", { language: "javascript" })).text, "[ 3, 6 ]");
    await assert.rejects(sb.runCode("1", { language: "cobol" }), (e) => e instanceof ZerobootError && e.status === 400);
  });
});
