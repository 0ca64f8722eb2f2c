// The official @e2b/code-interpreter npm package (pinned in package.json)
// against a real `zeroboot serve --languages python,code-interpreter`:
// cells that keep state, rich results, errors, streaming, contexts, bash,
// the client's timeout interrupting a cell, bad input.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Sandbox } from "@e2b/code-interpreter";
import { NotFoundError, SandboxError } from "e2b";
import { startServer } from "../test/helpers.mjs";

describe("@e2b/code-interpreter (npm) against zeroboot", () => {
  let server;
  let sbx;
  before(async () => {
    server = await startServer({ languages: "python,code-interpreter" });
    process.env.E2B_API_URL = server.url;
    process.env.E2B_SANDBOX_URL = server.url;
    process.env.E2B_API_KEY = server.key;
    delete process.env.E2B_DEBUG;
    delete process.env.E2B_ACCESS_TOKEN;
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
  });
  after(async () => {
    await sbx?.kill().catch(() => {});
    await server?.stop();
  });

  test("state, the last expression, a PNG chart, a DataFrame", async () => {
    await sbx.runCode("x = 1");
    assert.equal((await sbx.runCode("x += 1; x")).text, "2");
    const plot = await sbx.runCode("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()");
    const png = Buffer.from(plot.results[0].png, "base64");
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const df = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2]})");
    assert.match(df.results[0].html, /<table/);
  });

  test("errors and streamed stdout", async () => {
    const ex = await sbx.runCode("1 / 0");
    assert.equal(ex.error.name, "ZeroDivisionError");
    assert.match(ex.error.traceback, /ZeroDivisionError/);
    assert.equal((await sbx.runCode("def f(:")).error.name, "SyntaxError");
    const lines = [];
    await sbx.runCode("import time\nprint('a', flush=True)\ntime.sleep(0.5)\nprint('b')", {
      onStdout: (m) => lines.push(m.line),
    });
    assert.deepEqual(lines, ["a\n", "b\n"]);
  });

  test("contexts do not share variables; bash keeps its cwd; javascript keeps its state", async () => {
    await sbx.runCode("only_default = 1");
    const ctx = await sbx.createCodeContext();
    assert.equal((await sbx.runCode("only_default", { context: ctx })).error.name, "NameError");
    assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id));
    await sbx.removeCodeContext(ctx.id);
    await assert.rejects(sbx.runCode("1", { context: ctx }), NotFoundError);
    assert.deepEqual((await sbx.runCode("echo $HOME", { language: "bash" })).logs.stdout, ["/home/user\n"]);
    await sbx.runCode("cd /tmp", { language: "bash" });
    assert.deepEqual((await sbx.runCode("pwd", { language: "bash" })).logs.stdout, ["/tmp\n"]);
    await assert.rejects(sbx.runCode("1", { language: "cobol" }), SandboxError);
    assert.deepEqual((await sbx.runCode("console.log(1)", { language: "js" })).logs.stdout, ["1\n"]);
    await sbx.runCode("let n = 20", { language: "js" });
    assert.equal((await sbx.runCode("await Promise.resolve(n + 22)", { language: "js" })).text, "42");
  });

  test("a cell past timeoutMs is interrupted and the context lives on", async () => {
    await sbx.runCode("kept = 3");
    await assert.rejects(sbx.runCode("while True:\n    pass", { timeoutMs: 2000 }));
    assert.equal((await sbx.runCode("kept * 2", { timeoutMs: 60_000 })).text, "6");
  });
});
