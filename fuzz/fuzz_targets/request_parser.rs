//! The server's request validation, through the real router: arbitrary
//! bodies (and an optional Authorization header) to POST /v1/exec and
//! POST /v1/exec/batch, on a server with no templates, so no code ever
//! runs. Every answer must be a client error (or the empty batch's 200)
//! with a JSON body; a 5xx or a panic is a bug.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    open: axum::Router,
    keyed: axum::Router,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let config = |keys: Option<Vec<String>>| zeroboot_server::ServerConfig {
            workers: 1,
            queue: 4,
            rate_limit: 0,
            keys,
            ..Default::default()
        };
        let (open, keyed) = rt.block_on(async {
            (
                zeroboot_server::app(config(None), HashMap::new()).expect("the router"),
                zeroboot_server::app(config(Some(vec!["k1".into()])), HashMap::new())
                    .expect("the router"),
            )
        });
        World { rt, open, keyed }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let path = if sel & 1 == 0 {
        "/v1/exec"
    } else {
        "/v1/exec/batch"
    };
    // With bit 1: a keyed server, and the header is the body's first line.
    let (app, auth, body) = if sel & 2 != 0 {
        let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(0);
        (
            &w.keyed,
            Some(&rest[..cut]),
            &rest[(cut + 1).min(rest.len())..],
        )
    } else {
        (&w.open, None, rest)
    };
    let mut b = Request::builder().method("POST").uri(path);
    if sel & 4 == 0 {
        b = b.header("content-type", "application/json");
    }
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let Ok(mut req) = b.body(Body::from(body.to_vec())) else {
        // The header bytes are not a valid header value.
        return;
    };
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4242))));
    let resp = match w.rt.block_on(app.clone().oneshot(req)) {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = resp.status().as_u16();
    let bytes =
        w.rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 24))
            .expect("the reply body");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("every reply is JSON");
    assert!(status < 500, "server error {status}: {v}");
    if status >= 400 {
        assert!(
            v["error"].is_string(),
            "error without a message: {status} {v}"
        );
    } else {
        assert_eq!(status, 200);
        assert!(v["results"].as_array().is_some_and(|r| r.is_empty()), "{v}");
    }
});
