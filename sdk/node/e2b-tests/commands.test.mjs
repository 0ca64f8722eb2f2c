// The official e2b npm package's commands (envd's process service, served
// by zeroboot's kernel) against a real `zeroboot serve`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Sandbox, CommandExitError, TimeoutError } from "e2b";
import { startServer } from "../test/helpers.mjs";

describe("e2b (npm) commands against zeroboot", () => {
  let server;
  let sbx;
  before(async () => {
    server = await startServer();
    process.env.E2B_API_URL = server.url;
    process.env.E2B_SANDBOX_URL = server.url;
    process.env.E2B_API_KEY = server.key;
    delete process.env.E2B_DEBUG;
    delete process.env.E2B_ACCESS_TOKEN;
    sbx = await Sandbox.create("base", { timeoutMs: 120_000 });
  });
  after(async () => {
    await sbx?.kill();
    await server?.stop();
  });

  test("run: output, exit codes, env and cwd", async () => {
    const r = await sbx.commands.run('echo "Hello, World!"');
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "Hello, World!\n");
    await assert.rejects(sbx.commands.run("echo oops >&2; exit 3"), (e) => {
      return e instanceof CommandExitError && e.exitCode === 3 && e.stderr === "oops\n";
    });
    const env = await sbx.commands.run("echo $GREETING; pwd", { envs: { GREETING: "hi" }, cwd: "/tmp" });
    assert.equal(env.stdout, "hi\n/tmp\n");
    await assert.rejects(sbx.commands.run("no-such-command-here"), (e) => e instanceof CommandExitError && e.exitCode === 127);
  });

  test("a timeout kills the command", async () => {
    const start = Date.now();
    await assert.rejects(sbx.commands.run("sleep 10", { timeoutMs: 2000 }), TimeoutError);
    assert.ok(Date.now() - start < 8000);
  });

  test("background: streamed output, list, stdin, kill", async () => {
    const seen = [];
    const h = await sbx.commands.run(
      "python3 -c 'import time\nfor i in range(5): print(i, flush=True); time.sleep(0.2)'",
      { background: true, onStdout: (d) => seen.push([Date.now(), d]) },
    );
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(seen.map(([, d]) => d).join(""), "0\n1\n2\n3\n4\n");
    assert.equal(seen.length, 5);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i][0] - seen[i - 1][0] >= 120, "not streamed");

    const cat = await sbx.commands.run("cat", { background: true, stdin: true });
    assert.deepEqual((await sbx.commands.list()).map((p) => p.pid), [cat.pid]);
    await sbx.commands.sendStdin(cat.pid, "to cat\n");
    await sbx.commands.closeStdin(cat.pid);
    assert.equal((await cat.wait()).stdout, "to cat\n");

    const sleeper = await sbx.commands.run("sleep 30", { background: true });
    assert.equal(await sbx.commands.kill(sleeper.pid), true);
    await assert.rejects(sleeper.wait(), CommandExitError);
    assert.equal(await sbx.commands.kill(sleeper.pid), false);
  });

  test("pty: an interactive shell, resized", async () => {
    let out = "";
    const dec = new TextDecoder();
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (out += dec.decode(d)) });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode("echo $((6*7))\n"));
    await sbx.pty.resize(h.pid, { cols: 100, rows: 30 });
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode("stty size; exit 3\n"));
    await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode === 3);
    assert.ok(out.includes("\r\n42\r\n"), out);
    assert.ok(out.includes("30 100"), out);
  });
});
