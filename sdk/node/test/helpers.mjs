// Test support: free ports and a real `zeroboot serve` started once per test file.
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, openSync, closeSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_ROOT = resolve(SDK_DIR, "..", "..");
export const TEST_KEY = "test-key-1";
export const OTHER_KEY = "test-key-2";
const STARTUP_TIMEOUT_MS = Number(process.env.ZEROBOOT_TEST_STARTUP_TIMEOUT ?? "180") * 1000;

/** A TCP port that nothing listens on (just now). */
export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tail(path, n = 60) {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-n).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Starts `zeroboot serve` (ZEROBOOT_BIN, default <repo>/target/release/zeroboot)
 * with auth on (and `extra` flags) and waits until the python template is
 * ready. Returns { url, key, otherKey, stop() }.
 */
export async function startServer({ languages, extra = [] } = {}) {
  const bin = process.env.ZEROBOOT_BIN || join(REPO_ROOT, "target", "release", "zeroboot");
  const dir = mkdtempSync(join(tmpdir(), "zeroboot-sdk-node-"));
  const keysFile = join(dir, "keys.json");
  writeFileSync(keysFile, JSON.stringify([TEST_KEY, OTHER_KEY]));
  const logPath = join(dir, "server.log");
  const logFd = openSync(logPath, "w");
  const port = await freePort();
  // Its own state directory (snapshots, paused sandboxes), reachable by
  // the user a server started as root serves as.
  chmodSync(dir, 0o755);
  const args = ["serve", "--port", String(port), "--bind", "127.0.0.1", "--state-dir", join(dir, "state")];
  // A template not built yet is built on the first start (the code
  // interpreter's image: minutes).
  const startupMs = languages?.includes("code-interpreter") ? Math.max(STARTUP_TIMEOUT_MS, 900_000) : STARTUP_TIMEOUT_MS;
  if (languages) args.push("--languages", languages);
  args.push(...extra);
  const child = spawn(bin, args, {
    cwd: dir,
    env: { ...process.env, ZEROBOOT_API_KEYS_FILE: keysFile },
    stdio: ["ignore", logFd, logFd],
  });
  closeSync(logFd);
  let exited = null;
  const exitPromise = new Promise((r) =>
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      r();
    }),
  );
  // If this test process exits without `after` (crash, timeout), take the server along.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  let spawnError = null;
  child.once("error", (e) => {
    spawnError = e;
  });

  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (exited === null && spawnError === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exitPromise;
      clearTimeout(t);
    }
    process.removeListener("exit", killOnExit);
  };

  const deadline = Date.now() + startupMs;
  let last = null;
  for (;;) {
    if (spawnError) throw new Error(`cannot start ${bin}: ${spawnError.message} (build it or set ZEROBOOT_BIN)`);
    if (exited) {
      throw new Error(`zeroboot serve exited (${JSON.stringify(exited)}) before becoming ready:\n${tail(logPath)}`);
    }
    try {
      const res = await fetch(`${url}/v1/health`, {
        headers: { authorization: `Bearer ${TEST_KEY}` },
        signal: AbortSignal.timeout(5000),
      });
      const body = await res.json().catch(() => null);
      last = { status: res.status, body };
      if (res.status === 200 && body?.templates?.python?.ready === true) break;
    } catch (e) {
      last = String(e?.cause?.message ?? e);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `zeroboot serve not ready after ${startupMs} ms (last health: ${JSON.stringify(last)}):\n${tail(logPath)}`,
      );
    }
    await sleep(250);
  }
  return { url, key: TEST_KEY, otherKey: OTHER_KEY, logPath, stop };
}

/** Runs `fn` with the given environment variables set (undefined: unset), then restores them. */
export async function withEnv(vars, fn) {
  const saved = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
