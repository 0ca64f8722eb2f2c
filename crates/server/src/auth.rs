//! API keys and per-key rate limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use subtle::ConstantTimeEq;

/// Errors of loading the keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read the API keys file {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("the API keys file {0} is not a JSON list of keys (or {{\"keys\": [...]}}): {1}")]
    Format(PathBuf, String),
    #[error("the API keys file {0} has no keys")]
    Empty(PathBuf),
}

/// Load keys from `$ZEROBOOT_API_KEYS_FILE` (which must exist if set) or
/// `./api_keys.json` (optional). `None`: authentication is off.
pub fn load_keys() -> Result<Option<(Vec<String>, PathBuf)>, KeysError> {
    let (path, required) =
        match std::env::var_os("ZEROBOOT_API_KEYS_FILE").filter(|p| !p.is_empty()) {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from("api_keys.json"), false),
        };
    if !required && !path.exists() {
        return Ok(None);
    }
    let keys = read_keys(&path)?;
    Ok(Some((keys, path)))
}

fn read_keys(path: &Path) -> Result<Vec<String>, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeysError::Read(path.into(), e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| KeysError::Format(path.into(), e.to_string()))?;
    let list = match &v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => match o.get("keys") {
            Some(serde_json::Value::Array(a)) => a.clone(),
            _ => return Err(KeysError::Format(path.into(), "no \"keys\" list".into())),
        },
        _ => return Err(KeysError::Format(path.into(), "not a list".into())),
    };
    let mut keys = Vec::new();
    for item in list {
        let k = match item {
            serde_json::Value::String(s) => s,
            serde_json::Value::Object(o) => match o.get("key") {
                Some(serde_json::Value::String(s)) => s.clone(),
                _ => {
                    return Err(KeysError::Format(
                        path.into(),
                        "an entry without a \"key\" string".into(),
                    ))
                }
            },
            _ => {
                return Err(KeysError::Format(
                    path.into(),
                    "an entry that is not a string".into(),
                ))
            }
        };
        if k.is_empty() {
            return Err(KeysError::Format(path.into(), "an empty key".into()));
        }
        keys.push(k);
    }
    if keys.is_empty() {
        return Err(KeysError::Empty(path.into()));
    }
    Ok(keys)
}

/// Why a request was turned away.
pub enum Denied {
    /// No key or a wrong key.
    Unauthorized(&'static str),
    /// Over the rate limit; retry after this many seconds.
    RateLimited(u64),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Auth {
    keys: Option<Vec<String>>,
    rate: u32,
    buckets: Mutex<HashMap<usize, Bucket>>,
}

impl Auth {
    pub fn new(keys: Option<Vec<String>>, rate: u32) -> Auth {
        Auth {
            keys,
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Check the Authorization header and the key's rate limit. Returns an
    /// opaque key index for logs (never the key).
    pub fn check(&self, header: Option<&str>) -> Result<Option<usize>, Denied> {
        let id = match &self.keys {
            None => None,
            Some(keys) => {
                let given = header
                    .and_then(|h| {
                        h.strip_prefix("Bearer ")
                            .or_else(|| h.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .ok_or(Denied::Unauthorized(
                        "missing API key (Authorization: Bearer <key>)",
                    ))?;
                // Compare against every key in constant time so neither
                // the key nor which key matched shows in the timing.
                let mut found = None;
                for (i, k) in keys.iter().enumerate() {
                    let eq: bool = k.as_bytes().ct_eq(given.as_bytes()).into();
                    if eq && found.is_none() {
                        found = Some(i);
                    }
                }
                Some(found.ok_or(Denied::Unauthorized("invalid API key"))?)
            }
        };
        self.take_token(id.unwrap_or(usize::MAX))?;
        Ok(id)
    }

    fn take_token(&self, id: usize) -> Result<(), Denied> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = self.rate as f64;
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = b.entry(id).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
            Err(Denied::RateLimited(wait as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_and_limits() {
        let a = Auth::new(Some(vec!["k1".into(), "k2".into()]), 3);
        assert!(matches!(a.check(None), Err(Denied::Unauthorized(_))));
        assert!(matches!(
            a.check(Some("Bearer nope")),
            Err(Denied::Unauthorized(_))
        ));
        assert!(matches!(a.check(Some("k1")), Err(Denied::Unauthorized(_))));
        assert_eq!(a.check(Some("Bearer k2")).ok().flatten(), Some(1));
        assert!(a.check(Some("Bearer k2")).is_ok());
        assert!(a.check(Some("Bearer k2")).is_ok());
        assert!(matches!(
            a.check(Some("Bearer k2")),
            Err(Denied::RateLimited(1))
        ));
        // Another key has its own bucket.
        assert!(a.check(Some("Bearer k1")).is_ok());
    }

    #[test]
    fn key_file_formats() {
        let d = std::env::temp_dir().join(format!("zb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for (text, ok) in [
            (r#"["a", "b"]"#, true),
            (r#"{"keys": ["a"]}"#, true),
            (r#"[{"key": "a", "name": "ci"}]"#, true),
            (r#"[]"#, false),
            (r#"{"nope": 1}"#, false),
            (r#"not json"#, false),
        ] {
            let p = d.join("k.json");
            std::fs::write(&p, text).unwrap();
            assert_eq!(read_keys(&p).is_ok(), ok, "{text}");
        }
    }
}
