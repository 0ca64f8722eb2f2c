//! A loopback HTTP/1.1 server that tests and benchmarks start for the
//! sandboxes to fetch from (docs/network.md: no traffic leaves the
//! loopback). GET only, one request per connection (`Connection: close`),
//! each connection on its own thread. Used by `zeroboot bench net` and
//! tests/network.rs (which includes this file by path: the crate has no
//! library target).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a route answers: its path (`*`: any path) and body.
pub type Route = (&'static str, Arc<Vec<u8>>);

/// A running server on 127.0.0.1; it lives as long as the process.
pub struct TestHttp {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
}

impl TestHttp {
    /// Serve `routes` (the first whose path matches; else 404).
    pub fn start(routes: Vec<Route>) -> std::io::Result<TestHttp> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let routes = routes.clone();
                std::thread::spawn(move || answer(c, &routes));
            }
        });
        Ok(TestHttp { port, accepted })
    }

    /// Serve `body` for every path.
    #[allow(dead_code)] // tests/network.rs
    pub fn serving(body: Vec<u8>) -> std::io::Result<TestHttp> {
        TestHttp::start(vec![("*", Arc::new(body))])
    }

    /// Connections accepted so far.
    #[allow(dead_code)] // tests/network.rs
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn answer(mut c: std::net::TcpStream, routes: &[Route]) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if req.len() > 64 << 10 {
            return;
        }
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next());
    let body = match path {
        Some(p) if method == b"GET" => routes
            .iter()
            .find(|(r, _)| *r == "*" || r.as_bytes() == p)
            .map(|(_, b)| b.as_slice()),
        _ => None,
    };
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", &b""[..]),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(body);
}
