// The official MCP TypeScript SDK (@modelcontextprotocol/sdk, pinned in
// package.json) against zeroboot's MCP server: streamable HTTP at /mcp of a
// real `zeroboot serve`, with an API key, as an agent framework would use it.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { startServer } from "../test/helpers.mjs";

async function connect(server, key) {
  const client = new Client({ name: "zeroboot-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  return { client, transport };
}

const text = (r) => r.content.filter((c) => c.type === "text").map((c) => c.text).join("");

describe("@modelcontextprotocol/sdk against zeroboot's /mcp", () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });

  test("list tools, run_code print(6*7), a live sandbox, then the session's end kills it", async () => {
    const { client, transport } = await connect(server, server.key);
    const { tools } = await client.listTools();
    assert.ok(tools.some((t) => t.name === "run_code" && t.inputSchema.required.includes("code")));

    let r = await client.callTool({ name: "run_code", arguments: { code: "print(6*7)" } });
    assert.equal(r.isError, false, text(r));
    assert.equal(text(r).trim(), "42");

    r = await client.callTool({ name: "create_sandbox", arguments: {} });
    const id = r.structuredContent.sandbox_id;
    await client.callTool({ name: "run_code", arguments: { code: "x = 41", sandbox_id: id } });
    r = await client.callTool({ name: "run_code", arguments: { code: "print(x + 1)", sandbox_id: id } });
    assert.equal(text(r).trim(), "42");

    r = await client.callTool({ name: "run_code", arguments: { code: "while True: pass", timeout: 1 } });
    assert.equal(r.isError, true);
    assert.match(text(r), /timed out/i);

    await transport.terminateSession();
    await client.close();
    let status;
    for (let i = 0; i < 50; i++) {
      status = (await fetch(`${server.url}/sandboxes/${id}`, { headers: { "X-API-Key": server.key } })).status;
      if (status === 404) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(status, 404);
  });

  test("a wrong key is refused", async () => {
    await assert.rejects(connect(server, "wrong-key"));
  });
});
