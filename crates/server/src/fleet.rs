//! Sandbox ids that name their node (docs/fleet.md): with a node key `k`
//! (1 to 9 of `[a-z0-9]`), an id is `<len(k)><k><20 random>`, e.g. node
//! `n2` makes `2n2` followed by 20 random characters. Ids stay
//! `[a-z0-9]+` (E2B's shape: they go into `<port>-<id>.<domain>` host
//! names), and which node holds a sandbox is a pure function of its id: a
//! gateway routes without a catalog. A node without a key makes plain
//! 20-character ids, which never parse as keyed (the lengths differ).

/// Random characters after the node key.
pub const RANDOM_CHARS: usize = 20;
/// Longest node key (its length is one digit of the id).
pub const MAX_KEY: usize = 9;

/// A bad `--node-key`.
#[derive(Debug, thiserror::Error)]
#[error("node key {0:?}: use 1 to 9 lowercase letters and digits (e.g. n1), or `auto`")]
pub struct BadNodeKey(pub String);

/// Check a node key's shape.
pub fn check_key(key: &str) -> Result<(), BadNodeKey> {
    if (1..=MAX_KEY).contains(&key.len())
        && key
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(BadNodeKey(key.to_string()))
    }
}

/// A node key made up at start (`--node-key auto`): a restarted node gets
/// a new one, so ids of the sandboxes that died with the old process never
/// route to the new one.
pub fn random_key() -> String {
    crate::sandboxes::random_chars(6)
}

/// The id of a new sandbox on the node keyed `key` ("" for none), from
/// `random` (RANDOM_CHARS characters).
pub fn sandbox_id(key: &str, random: &str) -> String {
    if key.is_empty() {
        random.to_string()
    } else {
        format!("{}{key}{random}", key.len())
    }
}

/// The node key inside `id`, if it has one.
pub fn node_of(id: &str) -> Option<&str> {
    let b = id.as_bytes();
    let n = usize::from(b.first()?.wrapping_sub(b'0'));
    if !(1..=MAX_KEY).contains(&n) || id.len() != 1 + n + RANDOM_CHARS {
        return None;
    }
    let key = id.get(1..1 + n)?;
    check_key(key).ok()?;
    id.bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_round_trip() {
        let r = "abcdefghij0123456789";
        let id = sandbox_id("n2", r);
        assert_eq!(id, "2n2abcdefghij0123456789");
        assert_eq!(node_of(&id), Some("n2"));
        let id = sandbox_id("node12345", r);
        assert_eq!(node_of(&id), Some("node12345"));
        // Unkeyed ids, wrong lengths and foreign shapes name no node.
        assert_eq!(node_of(r), None);
        assert_eq!(node_of(&sandbox_id("", r)), None);
        assert_eq!(node_of("2n2abc"), None);
        assert_eq!(node_of("0abcdefghij0123456789x"), None);
        assert_eq!(node_of("2N2abcdefghij0123456789"), None);
        assert_eq!(node_of(""), None);
        assert_eq!(node_of("2n2abcdefghij012345678-"), None);
    }

    #[test]
    fn key_shape() {
        assert!(check_key("n1").is_ok());
        assert!(check_key(&random_key()).is_ok());
        for bad in ["", "N1", "n-1", "abcdefghij", "n 1"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
