/**
 * @zeroboot/sdk: a client for zeroboot, self-hosted hardware-isolated code
 * sandboxes for AI agents. No runtime dependencies: it uses the global
 * `fetch` of Node >= 18.
 *
 * ```ts
 * import { Sandbox } from "@zeroboot/sdk";
 * const sb = new Sandbox(process.env.ZEROBOOT_API_KEY);
 * console.log(await sb.run("print(1 + 1)")); // "2\n"
 * ```
 */

export const VERSION = "0.1.0";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";
/** The HTTP timeout when none is given (ms). */
export const DEFAULT_TIMEOUT_MS = 60_000;
/** The server's default `timeout_seconds`. */
const SERVER_DEFAULT_CODE_TIMEOUT_S = 30;
/** Extra HTTP time on top of the code's own limit (fork, queueing, transfer). */
const HTTP_TIMEOUT_MARGIN_MS = 10_000;

type HttpMethod = "GET" | "POST" | "PUT" | "DELETE";

/**
 * The request fields of the network options, checked here (a mistake is a
 * TypeError at the call, not a 400 later).
 */
function networkFields(o: NetworkOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (o.allowInternetAccess !== undefined) {
    if (typeof o.allowInternetAccess !== "boolean") throw new TypeError("allowInternetAccess must be a boolean");
    out.allow_internet_access = o.allowInternetAccess;
  }
  if (o.network !== undefined) {
    if (!o.network || typeof o.network !== "object" || Array.isArray(o.network)) {
      throw new TypeError("network must be an object like { allowOut: [...], denyOut: [...] }");
    }
    const rules: Record<string, unknown> = { ...o.network };
    for (const k of ["allowOut", "denyOut"] as const) {
      const v = o.network[k];
      if (v !== undefined && (!Array.isArray(v) || !v.every((x) => typeof x === "string"))) {
        throw new TypeError(`network.${k} must be an array of strings`);
      }
    }
    out.network = rules;
  }
  return out;
}

/** A runtime the server may have a template for. */
export type Language = "python" | "node" | "javascript" | (string & {});

/** One execution, as sent to `POST /v1/exec` (and in a batch). */
export interface ExecRequest {
  code: string;
  /** Default "python". */
  language?: Language;
  /** The code's time limit in seconds: 0 < t <= 300, server default 30. */
  timeout_seconds?: number;
  /** Memory limit in MiB (server default 2048). */
  memory_mb?: number;
  /** Bytes the sandbox's writable file system may hold, in MiB (default 256). */
  disk_mb?: number;
  /** Most open descriptors per process (default 1024). */
  max_open_files?: number;
  /** Most bytes of stdout and of stderr kept, each (default 1 MiB). */
  max_output_bytes?: number;
  [key: string]: unknown;
}

/**
 * E2B's `network` option: egress rules. `allowOut` takes IP addresses, CIDR
 * blocks and domain names (`pypi.org`, `*.npmjs.org`), `denyOut` addresses
 * and CIDR blocks; an `allowOut` entry wins over `denyOut`.
 */
export interface NetworkRules {
  allowOut?: string[];
  denyOut?: string[];
}

/** The network options of a run or a new sandbox (docs/network.md). */
export interface NetworkOptions {
  /**
   * Egress allowed unless `network.denyOut` covers it (server default true).
   * Takes effect on a server run with `--network policy`.
   */
  allowInternetAccess?: boolean;
  network?: NetworkRules;
}

export interface RunOptions extends NetworkOptions {
  /** Default "python". */
  language?: Language;
  /** The code's time limit in seconds (`timeout_seconds`; server default 30, at most 300). */
  timeout?: number;
  /** Cancels the HTTP request. */
  signal?: AbortSignal;
}

/** A result's network use (`ExecResult.network`). */
export interface NetworkStats {
  /** The server's network is on. */
  enabled: boolean;
  connections: number;
  bytes_in: number;
  bytes_out: number;
  /** Attempts refused by the policy or a cap. */
  denied: number;
  dns_queries: number;
  /** Sends and receives slowed by the bandwidth cap. */
  throttled?: number;
  /** Datagrams dropped by the UDP cap. */
  udp_dropped?: number;
  /** Why there was none (the server's network is off). */
  note?: string;
}

/**
 * The outcome of one execution. A non-zero `exit_code` or `timed_out` is a
 * normal result (the code ran), not an error. `output` is the same text as
 * `stdout`. Field names are the wire names; unknown fields are kept.
 */
export interface ExecResult {
  id: string;
  output: string;
  stdout: string;
  stderr: string;
  exit_code: number;
  duration_ms: number;
  fork_time_ms: number;
  exec_time_ms: number;
  total_time_ms: number;
  timed_out: boolean;
  truncated: boolean;
  /** The sandbox hit its memory limit. */
  out_of_memory: boolean;
  /** A write failed for the disk limit. */
  disk_full?: boolean;
  /** A descriptor was refused for the open-files limit. */
  fds_exhausted?: boolean;
  /** Set when the server could not run this execution (e.g. one item of a batch). */
  error?: string;
  /** Network use. */
  network?: NetworkStats;
  [key: string]: unknown;
}

export interface TemplateHealth {
  ready: boolean;
  memory_mb: number;
  [key: string]: unknown;
}

/** `GET /v1/health`. */
export interface HealthResponse {
  status: string;
  templates: Record<string, TemplateHealth>;
  [key: string]: unknown;
}

export interface SandboxOptions {
  /** Default: `ZEROBOOT_API_URL`, then `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /**
   * HTTP timeout in milliseconds (default 60000). A request whose code may
   * run longer gets `timeout_seconds` + 10 s instead.
   */
  timeoutMs?: number;
  /** A `fetch` implementation to use instead of the global one. */
  fetch?: typeof fetch;
}

/**
 * A request failed. `status` is the HTTP status of the answer (400, 401,
 * 413, 422, 429, 503, ...) or 0 when no answer came (connection refused,
 * DNS failure, timeout, abort). `message` is the server's `error` text.
 */
export class ZerobootError extends Error {
  readonly status: number;
  /** The parsed error body, when there was one. */
  readonly body?: unknown;
  /** Seconds from the Retry-After header (429), when sent. */
  readonly retryAfter?: number;

  constructor(status: number, message: string, init: { body?: unknown; retryAfter?: number; cause?: unknown } = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "ZerobootError";
    this.status = status;
    if (init.body !== undefined) this.body = init.body;
    if (init.retryAfter !== undefined) this.retryAfter = init.retryAfter;
    Object.setPrototypeOf(this, new.target.prototype);
  }

  override toString(): string {
    return this.status === 0
      ? `${this.name}: ${this.message}`
      : `${this.name}: HTTP ${this.status}: ${this.message}`;
  }
}

function env(name: string): string | undefined {
  const value = typeof process !== "undefined" ? process.env?.[name] : undefined;
  return value ? value : undefined;
}

function normalizeBaseUrl(url: string): string {
  let u = url.trim().replace(/\/+$/, "");
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(u)) u = `http://${u}`;
  if (u.endsWith("/v1")) u = u.slice(0, -3);
  return u;
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

function toExecResult(data: unknown): ExecResult {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new ZerobootError(0, `unexpected execution result: ${JSON.stringify(data)}`, { body: data });
  }
  const d = data as Record<string, unknown>;
  const stdout = typeof d.stdout === "string" ? d.stdout : str(d.output);
  const output = typeof d.output === "string" ? d.output : stdout;
  return {
    ...d,
    id: str(d.id),
    output,
    stdout,
    stderr: str(d.stderr),
    exit_code: num(d.exit_code),
    duration_ms: num(d.duration_ms),
    fork_time_ms: num(d.fork_time_ms),
    exec_time_ms: num(d.exec_time_ms),
    total_time_ms: num(d.total_time_ms),
    timed_out: d.timed_out === true,
    truncated: d.truncated === true,
    out_of_memory: d.out_of_memory === true,
  };
}

function errorMessage(status: number, statusText: string, text: string): { message: string; body: unknown } {
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  if (body && typeof body === "object" && !Array.isArray(body)) {
    const b = body as Record<string, unknown>;
    for (const key of ["error", "message", "detail"]) {
      const v = b[key];
      if (typeof v === "string" && v) return { message: v, body };
      if (v && typeof v === "object" && typeof (v as Record<string, unknown>).message === "string") {
        return { message: (v as Record<string, string>).message, body };
      }
    }
  }
  if (typeof body === "string" && body.trim()) return { message: body.trim().slice(0, 500), body };
  return { message: statusText || `HTTP ${status}`, body };
}

function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const n = Number(value.trim());
  return Number.isFinite(n) ? n : undefined;
}

function describeFetchError(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string; errors?: Array<{ message?: string }> } };
  const cause = e?.cause;
  if (cause) {
    if (cause.message) return cause.message;
    if (cause.errors?.length) return cause.errors.map((x) => x.message).join("; ");
    if (cause.code) return cause.code;
  }
  return e?.message ?? String(err);
}

/** Options of {@link Sandbox.create}. */
export interface CreateOptions extends NetworkOptions {
  /** `"python"` (default), `"node"` or `"base"` (for now the Python template). */
  template?: string;
  /** Time to live in seconds (default 300): the sandbox ends then. */
  timeout?: number;
  /** Tags, for {@link Sandbox.list}. */
  metadata?: Record<string, string>;
  /** Environment variables. */
  envs?: Record<string, string>;
  /** Start from this snapshot (an id or name from {@link LiveSandbox.snapshot}) instead of a template. */
  snapshot?: string;
  /** Pause it (to disk), not kill it, when its time to live ends. */
  autoPause?: boolean;
  signal?: AbortSignal;
}

/** A live sandbox as E2B's `GET /v2/sandboxes` lists it. */
export interface ListedSandbox {
  sandboxID: string;
  templateID: string;
  startedAt: string;
  endAt: string;
  state: "running" | "paused";
  metadata?: Record<string, string>;
  [key: string]: unknown;
}

/**
 * A sandbox you hold (from {@link Sandbox.create} or {@link Sandbox.connect}):
 * each {@link run} sees what the previous ones left (variables, imports,
 * files) until {@link kill} or its time to live ends. Code that times out or
 * ends the interpreter ends the sandbox: later runs reject with
 * {@link ZerobootError} status 410.
 */
export class LiveSandbox {
  /** Shell commands in this sandbox (`await h.commands.run("ls -l")`). */
  readonly commands: Commands;
  /** This sandbox's files, read and written by the server directly. */
  readonly files: Files;

  constructor(
    readonly client: Sandbox,
    readonly id: string,
    readonly template?: string,
    readonly accessToken?: string,
  ) {
    this.commands = new Commands(this);
    this.files = new Files(this);
  }

  /** Runs `code` in this sandbox; resolves to its stdout. */
  async run(code: string, options: { timeout?: number; signal?: AbortSignal } = {}): Promise<string> {
    return (await this.exec(code, options)).output;
  }

  /** Runs `code` in this sandbox; resolves to the full {@link ExecResult}. */
  async exec(code: string, options: { timeout?: number; signal?: AbortSignal } = {}): Promise<ExecResult> {
    if (typeof code !== "string") throw new TypeError("code must be a string");
    const body: Record<string, unknown> = { code };
    if (options.timeout !== undefined) body.timeout_seconds = options.timeout;
    const data = await this.client.request(
      "POST",
      `/v1/sandboxes/${encodeURIComponent(this.id)}/exec`,
      body,
      this.client.execTimeoutMs(options.timeout),
      options.signal,
    );
    return toExecResult(data.body);
  }

  /**
   * Runs a notebook cell (sandboxes of the `code-interpreter` template):
   * state stays between cells; the last expression's value and `display()`
   * calls are {@link Result}s (`text`, `html`, `png`...); an exception is
   * `error`. `language`: `python` (default), `javascript` or `bash`;
   * `context`: one from {@link createCodeContext}. `timeout` (seconds)
   * interrupts the cell in the sandbox (a `KeyboardInterrupt` error); the
   * context lives on.
   */
  runCode(code: string, options: RunCodeOptions = {}): Promise<Execution> {
    return new CodeInterpreter(this).runCode(code, options);
  }

  /** A new context (its own namespace and working directory). */
  createCodeContext(options: { language?: string; cwd?: string } = {}): Promise<CodeContext> {
    return new CodeInterpreter(this).createContext(options);
  }

  listCodeContexts(): Promise<CodeContext[]> {
    return new CodeInterpreter(this).listContexts();
  }

  /** Empties a context's state. */
  restartCodeContext(context: CodeContext | string): Promise<void> {
    return new CodeInterpreter(this).manage("POST", context, "/restart");
  }

  removeCodeContext(context: CodeContext | string): Promise<void> {
    return new CodeInterpreter(this).manage("DELETE", context, "");
  }

  /** Ends the sandbox now; resolves to false if it had already ended. */
  async kill(): Promise<boolean> {
    try {
      await this.client.request("DELETE", `/sandboxes/${encodeURIComponent(this.id)}`);
    } catch (e) {
      if (e instanceof ZerobootError && e.status === 404) return false;
      throw e;
    }
    return true;
  }

  /**
   * `count` copies (1 to 100) of this sandbox as it is now: variables,
   * files and running commands; each then goes its own way, and this one
   * goes on. One entry per copy, in order: a handle, or the
   * {@link ZerobootError} that copy failed with (e.g. 429 over the limit of
   * live sandboxes). Each copy lives `timeout` seconds (default 300).
   */
  async fork(options: { count?: number; timeout?: number } = {}): Promise<Array<LiveSandbox | ZerobootError>> {
    const r = await this.client.request("POST", `/sandboxes/${encodeURIComponent(this.id)}/fork`, {
      count: Math.round(options.count ?? 1),
      timeout: Math.round(options.timeout ?? 300),
    });
    if (!Array.isArray(r.body)) throw new ZerobootError(0, "unexpected fork answer", { body: r.body });
    return r.body.map((item: unknown) => {
      const it = (item ?? {}) as { sandbox?: Record<string, unknown>; error?: Record<string, unknown> };
      const s = it.sandbox;
      if (s && typeof s.sandboxID === "string") {
        const token = typeof s.envdAccessToken === "string" ? s.envdAccessToken : undefined;
        return new LiveSandbox(this.client, s.sandboxID, this.template, token);
      }
      const e = it.error ?? {};
      return new ZerobootError(Number(e.code ?? 0), String(e.message ?? JSON.stringify(item)), { body: item });
    });
  }

  /**
   * Snapshots this sandbox as it is now (it goes on running); resolves to
   * the snapshot's id, from which `create({ snapshot })` starts new
   * sandboxes, also after the server restarts. A `name` already given to
   * one of your snapshots moves to this one (that one is replaced). With
   * `memory: false` only its files are kept: sandboxes from it start fresh
   * with them.
   */
  async snapshot(name?: string, options: { memory?: boolean } = {}): Promise<string> {
    const body: Record<string, unknown> = name ? { name } : {};
    if (options.memory === false) body.memory = false;
    const r = await this.client.request("POST", `/sandboxes/${encodeURIComponent(this.id)}/snapshots`, body);
    const id = (r.body as { snapshotID?: unknown } | null)?.snapshotID;
    if (typeof id !== "string") throw new ZerobootError(0, "unexpected snapshot answer", { body: r.body });
    return id;
  }

  /**
   * Pauses it (written to disk: it runs nothing and does not expire) until
   * {@link Sandbox.connect} resumes it; resolves to false if it was paused already.
   * With `memory: false` only its files are kept: the resume is a cold boot.
   * A code run in progress is paused too and goes on after the resume.
   */
  async pause(options: { memory?: boolean } = {}): Promise<boolean> {
    const body = options.memory === false ? { memory: false } : {};
    try {
      await this.client.request("POST", `/sandboxes/${encodeURIComponent(this.id)}/pause`, body);
    } catch (e) {
      if (e instanceof ZerobootError && e.status === 409 && /already paused/.test(e.message)) return false;
      throw e;
    }
    return true;
  }

  /** Ends the sandbox `seconds` from now (replaces its time to live). */
  async setTimeout(seconds: number): Promise<void> {
    await this.client.request("POST", `/sandboxes/${encodeURIComponent(this.id)}/timeout`, {
      timeout: Math.round(seconds),
    });
  }

  /** E2B's sandbox detail (`templateID`, `startedAt`, `endAt`, `metadata`, `state`, ...). */
  async info(): Promise<Record<string, unknown>> {
    const r = await this.client.request("GET", `/sandboxes/${encodeURIComponent(this.id)}`);
    return r.body as Record<string, unknown>;
  }

  /**
   * Replaces the sandbox's egress rules (`PUT /sandboxes/{id}/network`):
   * connections already open stay, new ones are decided under the new
   * rules. What is left out takes its default (no entries, internet access
   * allowed). Resolves to the sandbox's detail (its `network` and
   * `allowInternetAccess`).
   */
  async updateNetwork(options: NetworkRules & { allowInternetAccess?: boolean }): Promise<Record<string, unknown>> {
    const body = networkFields({
      allowInternetAccess: options.allowInternetAccess,
      network: { allowOut: options.allowOut ?? [], denyOut: options.denyOut ?? [] },
    });
    const r = await this.client.request("PUT", `/sandboxes/${encodeURIComponent(this.id)}/network`, body);
    return r.body as Record<string, unknown>;
  }

  /** Whether the sandbox is still there. */
  async isRunning(): Promise<boolean> {
    try {
      await this.info();
    } catch (e) {
      if (e instanceof ZerobootError && e.status === 404) return false;
      throw e;
    }
    return true;
  }
}

/**
 * A client for a zeroboot server. One instance may be used for any number
 * of concurrent calls.
 */
export class Sandbox {
  readonly apiKey: string | undefined;
  readonly baseUrl: string;
  readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  /**
   * @param apiKey Sent as `Authorization: Bearer <key>`; default `ZEROBOOT_API_KEY`
   *   (none: no header, for servers with auth off).
   */
  constructor(apiKey?: string, options: SandboxOptions = {}) {
    this.apiKey = apiKey || env("ZEROBOOT_API_KEY");
    this.baseUrl = normalizeBaseUrl(options.baseUrl ?? env("ZEROBOOT_API_URL") ?? DEFAULT_BASE_URL);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const f = options.fetch ?? (typeof fetch === "function" ? fetch : undefined);
    if (!f) throw new Error("@zeroboot/sdk needs a global fetch (Node >= 18) or options.fetch");
    this.fetchImpl = f;
  }

  /**
   * Runs `code` and returns its stdout (the `output` field). Like the
   * original SDK it returns the output even when the code exits non-zero or
   * times out; use {@link exec} for `exit_code`, `stderr` and `timed_out`.
   * Rejects with {@link ZerobootError} when the server answers with an error
   * or cannot be reached.
   */
  async run(code: string, options: RunOptions = {}): Promise<string> {
    return (await this.exec(code, options)).output;
  }

  /** Runs `code` and returns the full {@link ExecResult}. */
  async exec(code: string, options: RunOptions = {}): Promise<ExecResult> {
    const request = Sandbox.request(code, options);
    const data = await this.call("POST", "/v1/exec", request, this.httpTimeout([request]), options.signal);
    return toExecResult(data);
  }

  /**
   * Runs `code` once as a notebook cell and returns its rich
   * {@link Execution}: the last expression's value and `display()` calls as
   * {@link Result}s (`text`, `html`, `png`...), an exception as `error`.
   * Stateless like {@link exec} (`/v1/exec` with `results: true`); the
   * server must serve the `code-interpreter` template. `language`:
   * `python`, `javascript` or `bash`.
   */
  async runCode(code: string, options: RunOptions = {}): Promise<Execution> {
    const request = { ...Sandbox.request(code, options), results: true };
    const data = await this.call("POST", "/v1/exec", request, this.httpTimeout([request]), options.signal);
    return executionFromExec(data as Record<string, unknown>);
  }

  /**
   * Runs `code` and yields its events as they happen: `{type: "stdout" |
   * "stderr", data}` while it writes, then one `{type: "result", ...}` with
   * {@link exec}'s fields (or `{type: "error", error}`):
   * `for await (const ev of sb.stream(code)) ...`.
   */
  async *stream(code: string, options: RunOptions = {}): AsyncGenerator<StreamEvent> {
    const request = { ...Sandbox.request(code, options), stream: true };
    const res = await this.fetchRaw("POST", "/v1/exec", JSON.stringify(request), {
      "content-type": "application/json",
      accept: "application/x-ndjson",
    }, this.httpTimeout([request]), options.signal);
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of readBody(res)) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) yield JSON.parse(line) as StreamEvent;
      }
    }
    if (buf.trim()) yield JSON.parse(buf) as StreamEvent;
  }

  /** @internal A request whose answer the caller reads (status checked). */
  async fetchRaw(
    method: HttpMethod,
    path: string,
    body: string | Uint8Array | undefined,
    headers: Record<string, string>,
    timeoutMs: number = this.timeoutMs,
    signal?: AbortSignal,
  ): Promise<Response> {
    const url = this.baseUrl + path;
    const h: Record<string, string> = { "user-agent": `zeroboot-node/${VERSION}`, ...headers };
    if (this.apiKey) h.authorization = `Bearer ${this.apiKey}`;
    // One signal for the time limit and the caller's (AbortSignal.any is
    // newer than the Node versions supported). The limit covers the whole
    // answer, streamed ones included.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    timer.unref?.();
    if (signal) {
      if (signal.aborted) controller.abort();
      else signal.addEventListener("abort", () => controller.abort(), { once: true });
    }
    let res: Response;
    try {
      res = await this.fetchImpl(url, { method, headers: h, body, signal: controller.signal });
    } catch (err) {
      clearTimeout(timer);
      throw new ZerobootError(0, `cannot reach ${url}: ${describeFetchError(err)}`, { cause: err });
    }
    if (!res.ok) {
      const { message, body: parsed } = errorMessage(res.status, res.statusText, await res.text());
      throw new ZerobootError(res.status, message, { body: parsed });
    }
    return res;
  }

  /**
   * Runs many snippets in one request (at most 100); results keep their
   * order. Items are code strings or {@link ExecRequest}s; `options.language`
   * and `options.timeout` fill in what a request leaves out.
   */
  async execBatch(codesOrRequests: ReadonlyArray<string | ExecRequest>, options: RunOptions = {}): Promise<ExecResult[]> {
    const executions = codesOrRequests.map((item) => {
      if (typeof item === "string") return Sandbox.request(item, options);
      if (item && typeof item === "object" && typeof item.code === "string") {
        const r: ExecRequest = { ...item, language: item.language ?? options.language ?? "python" };
        if (r.timeout_seconds === undefined && options.timeout !== undefined) r.timeout_seconds = options.timeout;
        return r;
      }
      throw new TypeError("execBatch items must be code strings or { code, language?, timeout_seconds? } objects");
    });
    if (executions.length === 0) return [];
    const data = await this.call(
      "POST",
      "/v1/exec/batch",
      { executions },
      this.httpTimeout(executions),
      options.signal,
    );
    const results = (data as { results?: unknown } | null)?.results;
    if (!Array.isArray(results)) {
      throw new ZerobootError(0, "batch answer has no 'results' array", { body: data });
    }
    if (results.length !== executions.length) {
      throw new ZerobootError(0, `batch answer has ${results.length} results for ${executions.length} executions`, {
        body: data,
      });
    }
    return results.map(toExecResult);
  }

  /**
   * Creates a sandbox you hold: its state persists from one
   * {@link LiveSandbox.run} to the next (E2B's `POST /sandboxes`).
   */
  async create(options: CreateOptions = {}): Promise<LiveSandbox> {
    const template = options.snapshot ?? options.template ?? "python";
    const body: Record<string, unknown> = { templateID: template, timeout: Math.round(options.timeout ?? 300) };
    if (options.autoPause) body.autoPause = true;
    if (options.metadata) body.metadata = options.metadata;
    if (options.envs) body.envVars = options.envs;
    Object.assign(body, networkFields(options));
    const r = await this.request("POST", "/sandboxes", body, this.timeoutMs, options.signal);
    const id = (r.body as { sandboxID?: unknown } | null)?.sandboxID;
    if (typeof id !== "string") throw new ZerobootError(0, `unexpected create answer: ${JSON.stringify(r.body)}`, { body: r.body });
    const token = (r.body as { envdAccessToken?: unknown }).envdAccessToken;
    return new LiveSandbox(this, id, template, typeof token === "string" ? token : undefined);
  }

  /** `new Sandbox().create(options)`, with the key and URL from the environment (E2B's idiom). */
  static create(options: CreateOptions = {}): Promise<LiveSandbox> {
    return new Sandbox().create(options);
  }

  /**
   * A handle on live sandbox `sandboxId`. With `timeout` (seconds) its time
   * to live is extended to at least that from now, and a paused one resumed.
   */
  async connect(sandboxId: string, options: { timeout?: number } = {}): Promise<LiveSandbox> {
    const path = `/sandboxes/${encodeURIComponent(sandboxId)}`;
    const r =
      options.timeout === undefined
        ? await this.request("GET", path)
        : await this.request("POST", `${path}/connect`, { timeout: Math.round(options.timeout) });
    const template = (r.body as { templateID?: unknown } | null)?.templateID;
    return new LiveSandbox(this, sandboxId, typeof template === "string" ? template : undefined);
  }

  /** `new Sandbox().connect(...)`, with the key and URL from the environment. */
  static connect(sandboxId: string, options: { timeout?: number } = {}): Promise<LiveSandbox> {
    return new Sandbox().connect(sandboxId, options);
  }

  /** This key's snapshots: `[{ snapshotID, names }]`. */
  async snapshots(): Promise<Array<{ snapshotID: string; names: string[] }>> {
    const r = await this.request("GET", "/snapshots");
    return Array.isArray(r.body) ? (r.body as Array<{ snapshotID: string; names: string[] }>) : [];
  }

  /** Deletes a snapshot; resolves to false if there was none of that id or name. */
  async deleteSnapshot(snapshotId: string): Promise<boolean> {
    try {
      await this.request("DELETE", `/templates/${encodeURIComponent(snapshotId)}`);
    } catch (e) {
      if (e instanceof ZerobootError && e.status === 404) return false;
      throw e;
    }
    return true;
  }

  /** This key's live sandboxes (all pages), those whose metadata has every pair of `metadata`. */
  async list(options: { metadata?: Record<string, string> } = {}): Promise<ListedSandbox[]> {
    const out: ListedSandbox[] = [];
    let token: string | null = null;
    for (;;) {
      const q = new URLSearchParams({ limit: "100" });
      if (options.metadata) {
        const inner = new URLSearchParams();
        for (const [k, v] of Object.entries(options.metadata)) inner.append(encodeURIComponent(k), encodeURIComponent(v));
        q.set("metadata", inner.toString());
      }
      if (token) q.set("nextToken", token);
      const r = await this.request("GET", `/v2/sandboxes?${q}`);
      if (!Array.isArray(r.body)) throw new ZerobootError(0, `unexpected list answer: ${JSON.stringify(r.body)}`, { body: r.body });
      out.push(...(r.body as ListedSandbox[]));
      token = r.headers.get("x-next-token");
      if (!token) return out;
    }
  }

  /** `GET /v1/health`. */
  async health(options: { signal?: AbortSignal } = {}): Promise<HealthResponse> {
    const data = await this.call("GET", "/v1/health", undefined, this.timeoutMs, options.signal);
    if (!data || typeof data !== "object") {
      throw new ZerobootError(0, `unexpected health answer: ${JSON.stringify(data)}`, { body: data });
    }
    return data as HealthResponse;
  }

  private static request(code: string, options: RunOptions): ExecRequest {
    if (typeof code !== "string") throw new TypeError("code must be a string");
    const r: ExecRequest = { code, language: options.language ?? "python" };
    if (options.timeout !== undefined) r.timeout_seconds = options.timeout;
    return Object.assign(r, networkFields(options));
  }

  /** @internal The HTTP time limit for code allowed to run `timeout` seconds. */
  execTimeoutMs(timeout?: number): number {
    return this.httpTimeout([{ code: "", timeout_seconds: timeout }]);
  }

  /** @internal One request; resolves to the parsed body and the answer's headers. */
  async request(
    method: HttpMethod,
    path: string,
    body?: unknown,
    timeoutMs: number = this.timeoutMs,
    signal?: AbortSignal,
  ): Promise<{ body: unknown; headers: Headers }> {
    return this.callWithHeaders(method, path, body, timeoutMs, signal);
  }

  private httpTimeout(requests: ExecRequest[]): number {
    let longest = SERVER_DEFAULT_CODE_TIMEOUT_S;
    for (const r of requests) {
      if (typeof r.timeout_seconds === "number" && Number.isFinite(r.timeout_seconds)) {
        longest = Math.max(longest, r.timeout_seconds);
      }
    }
    return Math.max(this.timeoutMs, longest * 1000 + HTTP_TIMEOUT_MARGIN_MS);
  }

  private async call(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<unknown> {
    return (await this.callWithHeaders(method, path, body, timeoutMs, signal)).body;
  }

  private async callWithHeaders(
    method: HttpMethod,
    path: string,
    body: unknown,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ body: unknown; headers: Headers }> {
    const url = this.baseUrl + path;
    const headers: Record<string, string> = {
      accept: "application/json",
      "user-agent": `zeroboot-node/${VERSION}`,
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;

    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort();
    if (signal) {
      if (signal.aborted) controller.abort();
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      let res: Response;
      let text: string;
      try {
        res = await this.fetchImpl(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: controller.signal,
        });
        text = await res.text();
      } catch (err) {
        if (timedOut) throw new ZerobootError(0, `request to ${url} timed out after ${timeoutMs} ms`, { cause: err });
        if (controller.signal.aborted) throw new ZerobootError(0, `request to ${url} was aborted`, { cause: err });
        throw new ZerobootError(0, `cannot reach ${url}: ${describeFetchError(err)}`, { cause: err });
      }
      if (!res.ok) {
        const { message, body: parsed } = errorMessage(res.status, res.statusText, text);
        throw new ZerobootError(res.status, message, {
          body: parsed,
          retryAfter: parseRetryAfter(res.headers.get("retry-after")),
        });
      }
      try {
        return { body: text ? JSON.parse(text) : null, headers: res.headers };
      } catch (err) {
        throw new ZerobootError(res.status, `invalid JSON in the answer: ${text.slice(0, 200)}`, {
          body: text,
          cause: err,
        });
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

/** An event of a streamed execution ({@link Sandbox.stream}). */
export type StreamEvent =
  | { type: "stdout" | "stderr"; data: string }
  | ({ type: "result" } & ExecResult)
  | { type: "error"; error: string };

async function* readBody(res: Response): AsyncGenerator<Uint8Array> {
  if (!res.body) return;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value) yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

const ENVD_PORT = "49983";

/** How a command ended. */
export interface CommandResult {
  pid: number;
  exitCode: number;
  stdout: string;
  stderr: string;
  error?: string;
}

export interface CommandOptions {
  /** Return a {@link CommandHandle} at once instead of waiting. */
  background?: boolean;
  envs?: Record<string, string>;
  cwd?: string;
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** Give it a stdin to write ({@link Commands.sendStdin}). */
  stdin?: boolean;
  /** Seconds before it is killed (0: none); default 60. */
  timeout?: number;
}

type ProcessEvent = {
  start?: { pid: number };
  data?: { stdout?: string; stderr?: string };
  end?: { exitCode?: number; error?: string };
  keepalive?: Record<string, never>;
};

function envelope(message: unknown): Uint8Array {
  const payload = new TextEncoder().encode(JSON.stringify(message));
  const out = new Uint8Array(5 + payload.length);
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** Connect server-stream messages of `res` (the end-of-stream error rejects). */
async function* envelopes(res: Response): AsyncGenerator<ProcessEvent> {
  let buf = new Uint8Array(0);
  for await (const chunk of readBody(res)) {
    const joined = new Uint8Array(buf.length + chunk.length);
    joined.set(buf);
    joined.set(chunk, buf.length);
    buf = joined;
    while (buf.length >= 5) {
      const n = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
      if (buf.length < 5 + n) break;
      const flags = buf[0];
      const msg = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + n)) || "{}");
      buf = buf.slice(5 + n);
      if (flags & 0x02) {
        if (msg.error) {
          const code = String(msg.error.code ?? "unknown");
          const status = code === "deadline_exceeded" ? 408 : code === "not_found" ? 404 : 500;
          throw new ZerobootError(status, `${code}: ${msg.error.message ?? ""}`, { body: msg.error });
        }
        return;
      }
      const ev = (msg.event ?? {}) as ProcessEvent;
      if (!ev.keepalive) yield ev;
    }
  }
  throw new ZerobootError(0, "the stream was cut off");
}

class Envd {
  constructor(protected readonly sandbox: LiveSandbox) {}

  protected headers(extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = { "e2b-sandbox-id": this.sandbox.id, "e2b-sandbox-port": ENVD_PORT, ...extra };
    if (this.sandbox.accessToken) h["x-access-token"] = this.sandbox.accessToken;
    return h;
  }

  protected async unary(procedure: string, message: unknown): Promise<Record<string, unknown>> {
    const res = await this.sandbox.client.fetchRaw(
      "POST",
      `/${procedure}`,
      JSON.stringify(message),
      this.headers({ "content-type": "application/json", "connect-protocol-version": "1" }),
    );
    const text = await res.text();
    return text ? JSON.parse(text) : {};
  }

  protected async stream(procedure: string, message: unknown, timeout?: number): Promise<AsyncGenerator<ProcessEvent>> {
    const extra: Record<string, string> = {
      "content-type": "application/connect+json",
      "connect-protocol-version": "1",
    };
    if (timeout) extra["connect-timeout-ms"] = String(Math.round(timeout * 1000));
    const res = await this.sandbox.client.fetchRaw(
      "POST",
      `/${procedure}`,
      envelope(message),
      this.headers(extra),
      ((timeout || 3600) + 10) * 1000,
    );
    return envelopes(res);
  }
}

const INTERPRETER_PORT = "49999";

/** One rich result of a cell: its last expression's value (`isMainResult`) or something it displayed. */
export interface Result {
  text?: string;
  html?: string;
  markdown?: string;
  svg?: string;
  /** Base64. */
  png?: string;
  jpeg?: string;
  pdf?: string;
  latex?: string;
  json?: unknown;
  javascript?: string;
  data?: unknown;
  chart?: unknown;
  extra?: Record<string, unknown>;
  isMainResult: boolean;
}

export interface ExecutionError {
  name: string;
  value: string;
  traceback: string;
}

/** What a cell produced; `text` is the main result's text. */
export interface Execution {
  results: Result[];
  logs: { stdout: string[]; stderr: string[] };
  error?: ExecutionError;
  executionCount?: number;
  text?: string;
}

export interface CodeContext {
  id: string;
  language: string;
  cwd: string;
}

export interface RunCodeOptions {
  language?: string;
  context?: CodeContext | string;
  onStdout?: (text: string) => void;
  onStderr?: (text: string) => void;
  onResult?: (result: Result) => void;
  onError?: (error: ExecutionError) => void;
  envs?: Record<string, string>;
  /** Seconds; the cell is interrupted in the sandbox then. */
  timeout?: number;
}

/** An {@link Execution} from a one-shot `/v1/exec` answer with `results: true`. */
function executionFromExec(d: Record<string, unknown>): Execution {
  if (d.error) throw new ZerobootError(0, String(d.error), { body: d });
  const ex: Execution = { results: [], logs: { stdout: [], stderr: [] } };
  for (const ev of (d.results as Record<string, unknown>[] | undefined) ?? []) {
    const r: Result = { isMainResult: Boolean(ev.is_main_result) };
    for (const f of RESULT_FIELDS) if (ev[f] !== undefined && ev[f] !== null) (r as unknown as Record<string, unknown>)[f] = ev[f];
    ex.results.push(r);
    if (r.isMainResult) ex.text = r.text;
  }
  if (typeof d.execution_count === "number") ex.executionCount = d.execution_count;
  if (d.stdout) ex.logs.stdout.push(String(d.stdout));
  if (d.stderr) ex.logs.stderr.push(String(d.stderr));
  const e = d.exception as Record<string, unknown> | null | undefined;
  if (e) {
    ex.error = { name: String(e.name ?? ""), value: String(e.value ?? ""), traceback: String(e.traceback ?? "") };
  } else if (d.timed_out) {
    const msg = "the cell ran past its time limit and was stopped";
    ex.error = { name: "TimeoutError", value: msg, traceback: msg };
  }
  return ex;
}

const RESULT_FIELDS = [
  "text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript", "data", "chart", "extra",
] as const;

/** E2B's code interpreter protocol (`/execute`, `/contexts`) on port 49999. */
class CodeInterpreter extends Envd {
  protected override headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...super.headers(extra), "e2b-sandbox-port": INTERPRETER_PORT };
  }

  private async json(method: HttpMethod, path: string, body?: unknown): Promise<unknown> {
    const res = await this.sandbox.client.fetchRaw(
      method,
      path,
      body === undefined ? undefined : JSON.stringify(body),
      this.headers({ "content-type": "application/json" }),
    );
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  async runCode(code: string, o: RunCodeOptions): Promise<Execution> {
    if (typeof code !== "string") throw new TypeError("code must be a string");
    if (o.language !== undefined && o.context !== undefined) throw new TypeError("give language or context, not both");
    const body: Record<string, unknown> = { code };
    if (o.language !== undefined) body.language = o.language;
    if (o.context !== undefined) body.context_id = typeof o.context === "string" ? o.context : o.context.id;
    if (o.envs) body.env_vars = o.envs;
    if (o.timeout !== undefined) body.timeout = o.timeout;
    const res = await this.sandbox.client.fetchRaw(
      "POST",
      "/execute",
      JSON.stringify(body),
      this.headers({ "content-type": "application/json" }),
      ((o.timeout ?? 3600) + 30) * 1000,
    );
    const ex: Execution = { results: [], logs: { stdout: [], stderr: [] } };
    let buf = "";
    const decoder = new TextDecoder();
    for await (const chunk of readBody(res)) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line) as Record<string, unknown>;
        switch (ev.type) {
          case "stdout":
            ex.logs.stdout.push(String(ev.text));
            o.onStdout?.(String(ev.text));
            break;
          case "stderr":
            ex.logs.stderr.push(String(ev.text));
            o.onStderr?.(String(ev.text));
            break;
          case "result": {
            const r: Result = { isMainResult: Boolean(ev.is_main_result) };
            for (const f of RESULT_FIELDS) if (ev[f] !== undefined && ev[f] !== null) (r as unknown as Record<string, unknown>)[f] = ev[f];
            ex.results.push(r);
            if (r.isMainResult) ex.text = r.text;
            o.onResult?.(r);
            break;
          }
          case "error":
            ex.error = { name: String(ev.name ?? ""), value: String(ev.value ?? ""), traceback: String(ev.traceback ?? "") };
            o.onError?.(ex.error);
            break;
          case "number_of_executions":
            ex.executionCount = Number(ev.execution_count);
            break;
          case "end_of_execution":
            return ex;
        }
      }
    }
    throw new ZerobootError(0, "the execution's stream was cut off");
  }

  async createContext(o: { language?: string; cwd?: string }): Promise<CodeContext> {
    const body: Record<string, string> = {};
    if (o.language) body.language = o.language;
    if (o.cwd) body.cwd = o.cwd;
    return (await this.json("POST", "/contexts", body)) as CodeContext;
  }

  async listContexts(): Promise<CodeContext[]> {
    return (await this.json("GET", "/contexts")) as CodeContext[];
  }

  async manage(method: "POST" | "DELETE", context: CodeContext | string, suffix: string): Promise<void> {
    const id = typeof context === "string" ? context : context.id;
    await this.json(method, `/contexts/${encodeURIComponent(id)}${suffix}`);
  }
}

/** A started command ({@link Commands.run} with `background`). */
export class CommandHandle {
  constructor(
    private readonly commands: Commands,
    readonly pid: number,
    private readonly events: AsyncGenerator<ProcessEvent>,
  ) {}

  /** Resolves when it ends; output arrives through the callbacks as it is written. */
  async wait(options: { onStdout?: (d: string) => void; onStderr?: (d: string) => void } = {}): Promise<CommandResult> {
    let stdout = "";
    let stderr = "";
    for await (const ev of this.events) {
      if (ev.data?.stdout !== undefined) {
        const t = Buffer.from(ev.data.stdout, "base64").toString("utf8");
        stdout += t;
        options.onStdout?.(t);
      }
      if (ev.data?.stderr !== undefined) {
        const t = Buffer.from(ev.data.stderr, "base64").toString("utf8");
        stderr += t;
        options.onStderr?.(t);
      }
      if (ev.end) return { pid: this.pid, exitCode: ev.end.exitCode ?? 0, stdout, stderr, error: ev.end.error };
    }
    throw new ZerobootError(0, "the command's stream ended without its end event");
  }

  kill(): Promise<boolean> {
    return this.commands.kill(this.pid);
  }

  sendStdin(data: string | Uint8Array): Promise<void> {
    return this.commands.sendStdin(this.pid, data);
  }

  closeStdin(): Promise<void> {
    return this.commands.closeStdin(this.pid);
  }
}

/** `handle.commands`: each command runs as `/bin/bash -l -c CMD`, as E2B's SDKs do. */
export class Commands extends Envd {
  async run(cmd: string, options: CommandOptions & { background: true }): Promise<CommandHandle>;
  async run(cmd: string, options?: CommandOptions): Promise<CommandResult>;
  async run(cmd: string, options: CommandOptions = {}): Promise<CommandResult | CommandHandle> {
    const process: Record<string, unknown> = { cmd: "/bin/bash", args: ["-l", "-c", cmd], envs: options.envs ?? {} };
    if (options.cwd) process.cwd = options.cwd;
    const events = await this.stream(
      "process.Process/Start",
      { process, stdin: options.stdin ?? false },
      options.timeout ?? 60,
    );
    const first = await events.next();
    const pid = first.done ? undefined : first.value.start?.pid;
    if (pid === undefined) throw new ZerobootError(0, "the command did not start");
    const h = new CommandHandle(this, pid, events);
    if (options.background) return h;
    return h.wait({ onStdout: options.onStdout, onStderr: options.onStderr });
  }

  /** Running commands: `[{pid, config: {cmd, args, envs, cwd?}, tag?}]`. */
  async list(): Promise<Array<{ pid: number; config: Record<string, unknown>; tag?: string }>> {
    const r = await this.unary("process.Process/List", {});
    return (r.processes as Array<{ pid: number; config: Record<string, unknown>; tag?: string }>) ?? [];
  }

  /** SIGKILL; false if no such command runs. */
  async kill(pid: number): Promise<boolean> {
    try {
      await this.unary("process.Process/SendSignal", { process: { pid }, signal: "SIGNAL_SIGKILL" });
    } catch (e) {
      if (e instanceof ZerobootError && e.status === 404) return false;
      throw e;
    }
    return true;
  }

  async sendStdin(pid: number, data: string | Uint8Array): Promise<void> {
    const raw = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    await this.unary("process.Process/SendInput", { process: { pid }, input: { stdin: raw.toString("base64") } });
  }

  async closeStdin(pid: number): Promise<void> {
    await this.unary("process.Process/CloseStdin", { process: { pid } });
  }
}

/** `handle.files`: the sandbox's file system (no code runs in it for these). */
export class Files extends Envd {
  /** The file at `path` as text (or bytes with `{format: "bytes"}`); rejects with status 404 if missing. */
  async read(path: string): Promise<string>;
  async read(path: string, options: { format: "bytes" }): Promise<Uint8Array>;
  async read(path: string, options: { format?: "text" | "bytes" } = {}): Promise<string | Uint8Array> {
    const res = await this.sandbox.client.fetchRaw("GET", `/files?${new URLSearchParams({ path })}`, undefined, this.headers());
    const buf = new Uint8Array(await res.arrayBuffer());
    return options.format === "bytes" ? buf : new TextDecoder().decode(buf);
  }

  /** Writes (creates or replaces) `path`; parents are made. */
  async write(path: string, data: string | Uint8Array): Promise<void> {
    const body = typeof data === "string" ? new TextEncoder().encode(data) : data;
    const res = await this.sandbox.client.fetchRaw(
      "POST",
      `/files?${new URLSearchParams({ path })}`,
      body,
      this.headers({ "content-type": "application/octet-stream" }),
    );
    await res.arrayBuffer();
  }

  /** Entries under `path`: `[{name, type, path, size, ...}]`. */
  async list(path: string, options: { depth?: number } = {}): Promise<Array<Record<string, unknown>>> {
    const r = await this.unary("filesystem.Filesystem/ListDir", { path, depth: options.depth ?? 1 });
    return (r.entries as Array<Record<string, unknown>>) ?? [];
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.unary("filesystem.Filesystem/Stat", { path });
    } catch (e) {
      if (e instanceof ZerobootError && e.status === 404) return false;
      throw e;
    }
    return true;
  }

  async makeDir(path: string): Promise<void> {
    await this.unary("filesystem.Filesystem/MakeDir", { path });
  }

  async remove(path: string): Promise<void> {
    await this.unary("filesystem.Filesystem/Remove", { path });
  }

  async rename(oldPath: string, newPath: string): Promise<void> {
    await this.unary("filesystem.Filesystem/Move", { source: oldPath, destination: newPath });
  }
}
