//! Whom an envd request acts as: E2B's SDKs name the user in an
//! `Authorization: Basic base64("<user>:")` header (Connect RPCs) or a
//! `username` query parameter (`/files`); a request naming nobody runs as
//! E2B's default user, `user` (envd >= 0.4.0, as the SDKs expect of the
//! version we report).

use axum::http::HeaderMap;
use base64::Engine as _;
use zeroboot_kernel::accounts::{self, DEFAULT_USER};
use zeroboot_kernel::cred::Cred;
use zeroboot_kernel::vfs::Vfs;

/// The user a request's headers name (the default user when none).
pub(crate) fn from_headers(headers: &HeaderMap) -> String {
    let named = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|s| s.split(':').next().unwrap_or("").to_string())
        .filter(|u| !u.is_empty());
    named.unwrap_or_else(|| DEFAULT_USER.to_string())
}

/// The user a `/files` query names (the default user when none or empty).
pub(crate) fn or_default(user: Option<String>) -> String {
    user.filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_USER.to_string())
}

/// The credentials of account `user` in this sandbox.
pub(crate) fn cred(vfs: &Vfs, user: &str) -> Result<Cred, accounts::AccountError> {
    accounts::lookup(vfs, user).map(|a| a.cred())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_header_names_the_user_and_nobody_means_user() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), "user");
        // base64("root:")
        h.insert(
            "authorization",
            "Basic cm9vdDo=".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(from_headers(&h), "root");
        h.insert(
            "authorization",
            "Bearer x".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(from_headers(&h), "user");
    }
}
