//! One MCP session: rmcp's `ServerHandler` over our tools, and the
//! sandboxes the session created, killed when it ends. rmcp makes one
//! handler per session (HTTP) or per connection (stdio) and drops it when
//! the session closes (DELETE, idle expiry, end of input), which is when
//! `Owned` drops.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use super::tools::{self, Ctx};
use super::Caller;
use crate::AppState;

const INSTRUCTIONS: &str = "zeroboot runs code in hardware-isolated sandboxes (KVM virtual \
machines forked in about a millisecond). For a one-off computation call run_code with the code. \
To keep state across steps (variables, files, installed files), call create_sandbox once and pass \
its sandbox_id to run_code, run_command, read_file, write_file and list_files. Sandboxes have no \
network access. Sandboxes created in this session are killed when it ends.";

/// The sandboxes a session created: (id -> owner key).
pub(super) struct Owned {
    state: Arc<AppState>,
    ids: Mutex<BTreeMap<String, Option<usize>>>,
}

impl Owned {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<usize>>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, id: &str, owner: Option<usize>) {
        self.lock().insert(id.to_string(), owner);
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn has(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.lock());
        let n = ids.len();
        for (id, owner) in ids {
            // Already gone (killed, expired) is fine.
            let _ = self.state.sandboxes.kill(&id, owner);
        }
        if n > 0 {
            tracing::info!(
                sandboxes = n,
                "MCP session ended: its sandboxes were killed"
            );
        }
    }
}

/// rmcp's handler for one session.
#[derive(Clone)]
pub struct Session {
    state: Arc<AppState>,
    owned: Arc<Owned>,
    /// The caller when the transport carries no request (stdio).
    default_caller: Option<usize>,
}

impl Session {
    pub(super) fn new(state: Arc<AppState>, default_caller: Option<usize>) -> Session {
        Session {
            owned: Arc::new(Owned {
                state: state.clone(),
                ids: Mutex::new(BTreeMap::new()),
            }),
            state,
            default_caller,
        }
    }

    /// The caller's key: over HTTP, what `authorize` found for this very
    /// request (each request carries its key); else the transport's.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Option<usize>, ErrorData> {
        match ctx.extensions.get::<axum::http::request::Parts>() {
            Some(parts) => match parts.extensions.get::<Caller>() {
                Some(Caller(k)) => Ok(*k),
                None => Err(ErrorData::internal_error(
                    "the request was not authorized (a bug)",
                    None,
                )),
            },
            None => Ok(self.default_caller),
        }
    }
}

impl ServerHandler for Session {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("zeroboot", env!("CARGO_PKG_VERSION"))
                    .with_title("zeroboot sandboxes"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    /// Handshake-era versions only: MCP 2026-07-28 removed sessions
    /// (SEP-2567), and a session is what owns the sandboxes it creates.
    /// Clients that probe with `server/discover` fall back to `initialize`.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let owner = self.caller(&context)?;
        let ctx = Ctx {
            state: &self.state,
            owner,
            owned: &self.owned,
        };
        let name = request.name.to_string();
        match tools::call(&ctx, &name, request.arguments).await {
            Some(r) => {
                tracing::debug!(tool = %name, is_error = ?r.is_error, "mcp tool call");
                Ok(r.into())
            }
            None => Err(ErrorData::invalid_params(
                format!("unknown tool {name:?} (tools/list names them)"),
                None,
            )),
        }
    }
}
