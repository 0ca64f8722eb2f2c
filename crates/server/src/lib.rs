//! zeroboot's HTTP API (DESIGN.md §3): `POST /v1/exec`, `POST
//! /v1/exec/batch`, `GET /v1/health`, `GET /v1/metrics`, `GET
//! /v1/openapi.json`, with API keys, per-key rate limits, and a bounded
//! pool of vCPU threads behind a bounded queue; and live sandboxes
//! (`sandboxes`) behind E2B's control plane (`e2b`) and E2B's in-sandbox
//! envd services (`envd`).
#![forbid(unsafe_code)]

mod api;
mod auth;
mod e2b;
mod envd;
pub mod fleet;
pub mod gateway;
pub mod mcp;
mod metrics;
pub mod network;
mod node;
mod openapi;
mod pool;
mod sandboxes;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;
pub use sandboxes::SandboxLimits;
use zeroboot_engine::{Language, Template};

pub use auth::{load_keys, KeysError};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Executions running at once (vCPU threads).
    pub workers: usize,
    /// Executions waiting for a worker before requests get 503.
    pub queue: usize,
    /// Requests per second per API key (0: no limit).
    pub rate_limit: u32,
    /// Largest `code` accepted (bytes).
    pub max_code_bytes: usize,
    /// Most executions in one batch.
    pub max_batch: usize,
    /// Most bytes of stdout and of stderr returned per execution, unless
    /// the request asks for another amount (up to `max_output_bytes`).
    pub output_cap: usize,
    /// The most a request may ask for: memory (MiB), writable disk (MiB),
    /// open descriptors, stdout/stderr bytes.
    pub max_memory_mb: u64,
    pub max_disk_mb: u64,
    pub max_open_files: u64,
    pub max_output_bytes: usize,
    /// The API keys (None: authentication is off).
    pub keys: Option<Vec<String>>,
    /// Where the keys came from (for the start-up log).
    pub keys_file: Option<PathBuf>,
    /// Run first on each vCPU thread (the binary installs its seccomp
    /// filter there); an error stops the server from starting.
    pub vcpu_setup: fn() -> Result<(), String>,
    /// Live sandboxes: how many, how long, on how many threads.
    pub sandboxes: SandboxLimits,
    /// The operator's egress policy (off by default; docs/network.md).
    pub network: Arc<zeroboot_engine::NetOperator>,
    /// Where snapshots and sandboxes paused to disk are kept (None: no
    /// snapshots; pause keeps sandboxes in memory).
    pub state_dir: Option<std::path::PathBuf>,
    /// After SIGTERM, how long to drain (take no new sandboxes, serve the
    /// live ones until they are gone) before stopping; zero stops at once.
    pub drain_grace: std::time::Duration,
}

fn no_setup() -> Result<(), String> {
    Ok(())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4),
            queue: 256,
            rate_limit: 100,
            max_code_bytes: 1 << 20,
            max_batch: 100,
            output_cap: 1 << 20,
            max_memory_mb: 2048,
            max_disk_mb: 256,
            max_open_files: 1024,
            max_output_bytes: 16 << 20,
            keys: None,
            keys_file: None,
            vcpu_setup: no_setup,
            sandboxes: SandboxLimits::default(),
            network: Arc::new(zeroboot_engine::NetOperator::default()),
            state_dir: None,
            drain_grace: std::time::Duration::ZERO,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub config: ServerConfig,
    pub templates: HashMap<Language, Arc<Template>>,
    pub auth: auth::Auth,
    pub pool: pool::Pool,
    pub metrics: metrics::Metrics,
    pub sandboxes: Arc<sandboxes::Sandboxes>,
    /// envd's state across requests (polled watchers).
    pub envd: envd::EnvdState,
    /// Cancelled when the server stops: ends long-lived streams (MCP's).
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// The shared state: execution pool, live sandboxes and their reaper.
/// `app` serves it over HTTP; `zeroboot mcp` over stdio.
pub fn state(
    config: ServerConfig,
    templates: HashMap<Language, Arc<Template>>,
) -> Result<Arc<AppState>, ServeError> {
    let pool = pool::Pool::new(config.workers, config.queue, config.vcpu_setup)
        .map_err(ServeError::Workers)?;
    let store = match &config.state_dir {
        Some(dir) => Some(Arc::new(
            store::Store::open(dir).map_err(ServeError::State)?,
        )),
        None => None,
    };
    let live = sandboxes::Sandboxes::new(
        config.sandboxes.clone(),
        config.vcpu_setup,
        templates.values().cloned().collect(),
        store,
    )
    .map_err(ServeError::Workers)?;
    let back = live.adopt_paused(|m| {
        let language = Language::parse(&m.language)?;
        let template = templates.get(&language)?.clone();
        let network = network::setup(&config.network, None, None, m.id.clone()).ok()?;
        Some((
            template,
            sandboxes::Spec {
                template: m.template.clone(),
                language,
                owner: m.owner,
                metadata: m.metadata.clone(),
                secure: m.secure,
                memory_mb: m.memory_mb,
                disk_mb: m.disk_mb,
                network: Arc::new(std::sync::Mutex::new(network)),
                auto_pause: m.auto_pause,
                auto_pause_memory: m.auto_pause_memory,
            },
        ))
    });
    if back > 0 {
        tracing::info!(
            sandboxes = back,
            "sandboxes paused to disk are back (paused)"
        );
    }
    start_reaper(&live).map_err(ServeError::Workers)?;
    let state = Arc::new(AppState {
        sandboxes: live,
        auth: auth::Auth::new(config.keys.clone(), config.rate_limit),
        pool,
        metrics: metrics::Metrics::default(),
        templates,
        config,
        envd: envd::EnvdState::default(),
        shutdown: tokio_util::sync::CancellationToken::new(),
    });
    Ok(state)
}

/// The router (without the listener), for `serve` and for tests.
pub fn app(
    config: ServerConfig,
    templates: HashMap<Language, Arc<Template>>,
) -> Result<Router, ServeError> {
    Ok(router(state(config, templates)?))
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/exec",
            post(api::exec).fallback(api::method_not_allowed),
        )
        .route(
            "/v1/exec/batch",
            post(api::exec_batch).fallback(api::method_not_allowed),
        )
        .route(
            "/v1/health",
            get(api::health).fallback(api::method_not_allowed),
        )
        .route("/v1/health/live", get(node::live))
        .route("/v1/health/ready", get(node::ready))
        .route(
            "/v1/metrics",
            get(api::metrics).fallback(api::method_not_allowed),
        )
        .route(
            "/v1/openapi.json",
            get(api::openapi).fallback(api::method_not_allowed),
        )
        // E2B's control plane (spec/openapi.yml of e2b-dev/E2B).
        .route("/health", get(e2b::health))
        .route("/sandboxes", post(e2b::create).get(e2b::list_v1))
        .route("/v2/sandboxes", post(e2b::create_v2).get(e2b::list_v2))
        .route("/sandboxes/{id}", get(e2b::get).delete(e2b::kill))
        .route("/sandboxes/{id}/timeout", post(e2b::set_timeout))
        .route("/sandboxes/{id}/network", put(e2b::set_network))
        .route("/sandboxes/{id}/connect", post(e2b::connect))
        .route("/v2/sandboxes/{id}/connect", post(e2b::connect))
        .route("/sandboxes/{id}/fork", post(e2b::fork))
        .route("/sandboxes/{id}/pause", post(e2b::pause))
        .route("/sandboxes/{id}/resume", post(e2b::resume))
        .route("/sandboxes/{id}/snapshots", post(e2b::snapshot))
        .route("/snapshots", get(e2b::list_snapshots))
        .route("/templates/{id}", delete(e2b::delete_template))
        // Ours: run code in a live sandbox.
        .route(
            "/v1/sandboxes/{id}/exec",
            post(e2b::exec).fallback(api::method_not_allowed),
        )
        // MCP's streamable HTTP transport.
        .merge(mcp::router(&state))
        .fallback(api::not_found)
        // In-sandbox calls (E2b-Sandbox-Id, or a <port>-<id>.<domain>
        // host) go to the sandbox's envd whatever their path.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            envd::route,
        ))
        .with_state(state)
}

/// Kill expired sandboxes every 100 ms (a thread: no runtime needed; it
/// stops when the table goes).
fn start_reaper(live: &Arc<sandboxes::Sandboxes>) -> std::io::Result<()> {
    let weak = Arc::downgrade(live);
    std::thread::Builder::new()
        .name("zeroboot-reaper".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let Some(live) = weak.upgrade() else { return };
            let n = live.reap();
            if n > 0 {
                tracing::info!(sandboxes = n, "expired sandboxes killed");
            }
        })?;
    Ok(())
}

/// Errors of running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("the server failed")]
    Io(#[source] std::io::Error),
    #[error("cannot start the vCPU threads")]
    Workers(#[source] std::io::Error),
    #[error("cannot open the state directory")]
    State(#[source] store::StoreError),
}

/// Serve until SIGTERM or SIGINT; in-flight requests finish first.
pub async fn serve(
    config: ServerConfig,
    templates: HashMap<Language, Arc<Template>>,
) -> Result<(), ServeError> {
    let bind = config.bind;
    match &config.keys {
        None => tracing::warn!(
            "AUTHENTICATION IS OFF: no API keys file (api_keys.json or ZEROBOOT_API_KEYS_FILE); anyone who can reach {bind} can run code"
        ),
        Some(k) => tracing::info!(
            keys = k.len(),
            file = %config.keys_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "API keys loaded"
        ),
    }
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| ServeError::Bind(bind, e))?;
    // Streamed answers go out in small writes (a command's output, Connect
    // envelopes): without TCP_NODELAY, Nagle holds each behind the peer's
    // delayed ACK (40 ms) on keep-alive connections.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    tracing::info!(%bind, workers = config.workers, queue = config.queue, node_key = %config.sandboxes.node_key, "zeroboot serving");
    let state = state(config, templates)?;
    let stop = state.shutdown.clone();
    let live = state.sandboxes.clone();
    let grace = state.config.drain_grace;
    let app = router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal(&live, grace).await;
        // MCP's streams stay open as long as their clients: end them, or
        // the graceful shutdown would wait for them.
        stop.cancel();
    })
    .await
    .map_err(ServeError::Io)?;
    tracing::info!("zeroboot stopped");
    Ok(())
}

/// The next signal of `s` (never, if it could not be set up).
pub(crate) async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Wait for SIGTERM or SIGINT. SIGTERM with a drain grace drains first:
/// no new sandboxes (readiness turns 503), the live ones are served until
/// they are gone, the grace ends, or a second signal comes.
async fn shutdown_signal(live: &sandboxes::Sandboxes, grace: std::time::Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let by_term = tokio::select! {
        _ = next_signal(&mut term) => true,
        _ = tokio::signal::ctrl_c() => false,
    };
    if by_term && !grace.is_zero() && live.in_memory() > 0 {
        live.drain();
        tracing::info!(
            sandboxes = live.live(),
            grace_s = grace.as_secs(),
            "draining: no new sandboxes; stopping when the live ones are gone (SIGTERM again stops now)"
        );
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = next_signal(&mut term) => break,
                _ = tokio::signal::ctrl_c() => break,
            }
            if live.in_memory() == 0 {
                tracing::info!("drained: no live sandboxes left");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    sandboxes = live.live(),
                    "drain grace over: stopping with sandboxes still live"
                );
                break;
            }
        }
    }
    live.drain();
    tracing::info!("shutting down: finishing in-flight requests, refusing new ones");
}
