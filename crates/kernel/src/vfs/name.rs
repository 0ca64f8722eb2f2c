//! File names as bytes. Linux names are any bytes but NUL and '/'; the VFS
//! keeps paths as Rust strings, so a guest's bytes are carried in them by a
//! lossless encoding (MirBSD's OPTU-8 idea): every byte that is not part
//! of valid UTF-8 becomes the private-use character U+EF80 + (byte - 0x80)
//! (only bytes 0x80..=0xFF can be invalid), and so that the mapping stays
//! one-to-one, a name's own characters in that range U+EF80..=U+EFFF are
//! escaped byte by byte the same way. Decoding turns each character of the
//! range back into its one byte. A valid UTF-8 name without those
//! characters is unchanged, so everything the host or a client writes in
//! UTF-8 means what it says.
//!
//! Encode where bytes enter from the guest (paths read from guest memory),
//! decode where they leave (getdents, readlink, getcwd).

/// First character of the escape range (stands for byte 0x80).
const BASE: u32 = 0xEF80;

fn escaped(c: char) -> bool {
    (BASE..=BASE + 0x7f).contains(&(c as u32))
}

fn push_byte(out: &mut String, b: u8) {
    // b >= 0x80 here, so BASE + b - 0x80 is in the escape range.
    if let Some(c) = char::from_u32(BASE + (b as u32 - 0x80)) {
        out.push(c);
    }
}

/// The string that carries the name (or path) `b`.
pub fn from_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if escaped(c) {
                let mut tmp = [0u8; 4];
                for &x in c.encode_utf8(&mut tmp).as_bytes() {
                    push_byte(&mut out, x);
                }
            } else {
                out.push(c);
            }
        }
        for &x in chunk.invalid() {
            push_byte(&mut out, x);
        }
    }
    out
}

/// The bytes a carried name stands for.
pub fn to_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        if escaped(c) {
            out.push((c as u32 - BASE + 0x80) as u8);
        } else {
            let mut tmp = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
        }
    }
    out
}

/// How many bytes the name stands for (what NAME_MAX and PATH_MAX count).
pub fn byte_len(s: &str) -> usize {
    s.chars()
        .map(|c| if escaped(c) { 1 } else { c.len_utf8() })
        .sum()
}

/// A carried name for people (the host file API, logs): bytes that are
/// not UTF-8 are shown as U+FFFD.
pub fn display(s: &str) -> String {
    if !s.chars().any(escaped) {
        return s.to_string();
    }
    String::from_utf8_lossy(&to_bytes(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_string_round_trips() {
        let cases: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            b"@test-\xff".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            "\u{ef80}\u{efff}x".as_bytes().to_vec(),
            vec![0xef, 0xbe],
            (1u8..=255).filter(|&b| b != b'/').collect(),
        ];
        for b in cases {
            let s = from_bytes(&b);
            assert_eq!(to_bytes(&s), b, "{s:?}");
            assert_eq!(byte_len(&s), b.len());
        }
    }

    #[test]
    fn distinct_names_stay_distinct() {
        // The raw byte 0x80 and the character U+EF80 are different names.
        let a = from_bytes(b"\x80");
        let b = from_bytes("\u{ef80}".as_bytes());
        assert_ne!(a, b);
        assert_eq!(from_bytes(b"ascii/and/\xc3\xa9"), "ascii/and/\u{e9}");
        assert_eq!(display(&a), "\u{fffd}");
    }
}
