//! The hash chain: how a record line is framed and linked to the one before it.
//!
//! Every line is one JSON object that starts with `"seq"` (a number that grows by one per
//! record, across files) and `"prev"` (the SHA-256, in hex, of the previous line's exact bytes
//! without its newline). The first record ever has `prev` = 64 zeros ([`GENESIS`]). Changing,
//! removing, inserting or moving any line breaks the link of the line after it, which
//! `toolgate audit verify` reports. The hash covers the bytes as written (after redaction), so
//! verification needs nothing but the files.
//!
//! Assumption: the chain shows tampering to whoever checks it; it cannot stop someone who can
//! write the files from rewriting the chain from some point to its end. The newest head (seq
//! and hash) is therefore also logged by the daemon and exported as a metric, so it can be
//! kept elsewhere and compared.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The newest record of a chain: what the next record links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The newest record's `seq`.
    pub seq: u64,
    /// The SHA-256 hex of the newest record's line.
    pub hash: String,
}

/// The hex SHA-256 of a line (without its newline).
pub fn hash(line: &[u8]) -> String {
    let digest = Sha256::digest(line);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    hex
}

/// Frames `body` (a serialized JSON object) as record `seq` after `prev`: the line, without
/// its newline.
pub fn compose(seq: u64, prev: &str, body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + 100);
    line.extend_from_slice(format!("{{\"seq\":{seq},\"prev\":\"{prev}\"").as_bytes());
    // `body` is `{...}`; an empty object adds nothing after the two fields.
    let inner = body.strip_prefix(b"{").unwrap_or(body);
    if inner != b"}" {
        line.push(b',');
    }
    line.extend_from_slice(inner);
    line
}

/// The fields of a line the chain needs.
#[derive(Debug, Deserialize)]
pub struct Link {
    /// Position in the chain.
    pub seq: u64,
    /// Hash of the previous line.
    pub prev: String,
    /// What kind of record (`file_start` begins every file).
    #[serde(default)]
    pub event: Option<String>,
    /// For `file_start`: the file the chain continues from, if any.
    #[serde(default)]
    pub previous_file: Option<String>,
}

impl Link {
    /// Reads the chain fields of `line`, if it is a chained record.
    pub fn parse(line: &[u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }
}

/// The last complete line of `file` and the length of the file up to its end: bytes after
/// it (a line cut short by a crash) are not part of the log.
pub fn last_line(file: &mut File) -> io::Result<(Option<Vec<u8>>, u64)> {
    let len = file.metadata()?.len();
    // Read backwards in growing windows until a whole line is in view.
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
        file.by_ref().take(len - start).read_to_end(&mut tail)?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok((None, 0));
            }
            window = window.saturating_mul(4);
            continue;
        };
        let complete = start + end as u64 + 1;
        match tail[..end].iter().rposition(|&b| b == b'\n') {
            Some(begin) => return Ok((Some(tail[begin + 1..end].to_vec()), complete)),
            None if start == 0 => return Ok((Some(tail[..end].to_vec()), complete)),
            None => window = window.saturating_mul(4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn compose_puts_the_chain_fields_first() {
        let line = compose(7, GENESIS, br#"{"event":"x"}"#);
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.starts_with(&format!("{{\"seq\":7,\"prev\":\"{GENESIS}\",\"event\"")));
        let link = Link::parse(&line).unwrap();
        assert_eq!((link.seq, link.event.as_deref()), (7, Some("x")));
        assert_eq!(compose(1, "ab", b"{}"), br#"{"seq":1,"prev":"ab"}"#);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn last_line_ignores_a_torn_tail() {
        let mut file = tempfile::tempfile().unwrap();
        assert_eq!(last_line(&mut file).unwrap(), (None, 0));
        file.write_all(b"one\ntwo\nthr").unwrap();
        assert_eq!(last_line(&mut file).unwrap(), (Some(b"two".to_vec()), 8));
        let mut big = tempfile::tempfile().unwrap();
        let long = vec![b'x'; 200_000];
        big.write_all(&long).unwrap();
        big.write_all(b"\n").unwrap();
        big.write_all(&long).unwrap();
        big.write_all(b"\n").unwrap();
        let (line, len) = last_line(&mut big).unwrap();
        assert_eq!(line.unwrap().len(), 200_000);
        assert_eq!(len, 400_002);
    }
}
