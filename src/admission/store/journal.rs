//! The quota journal: an append-only log of counter values, one small record per reservation
//! or settlement, written with one `write(2)` and no fsync (by default).
//!
//! A record says "these counters now hold these values" (absolute values, not deltas) and
//! carries a sequence number. Both make replay idempotent: replaying a record twice, or a record
//! already folded into the snapshot (its sequence number is at most the snapshot's), changes
//! nothing. The journal is split into segments (`quota-<generation>.journal`); compaction
//! starts a new segment, writes the counters as a snapshot, then deletes the older segments, so
//! a crash between the two steps leaves segments the snapshot already covers, which replay
//! skips by sequence number.
//!
//! Framing: `len: u32 LE | crc32(body): u32 LE | body`, body =
//! `seq: u64 | count: u16 | count × (key_len: u16 | key | used: 4 × u64 | keep: u64)`, all
//! little-endian. A record that is cut short or fails its checksum (the daemon died inside a
//! write, or the disk lost an unsynced tail) ends the segment's replay: it and anything after it
//! in that segment are ignored, never fatal. After a failed write the journal starts a new
//! segment, so nothing valid is ever written behind a torn record.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admission::quota::Amounts;

/// One quota counter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// Used in its window, reservations included.
    pub used: Amounts,
    /// Unix seconds after which it is dropped (its window ended, plus slack).
    pub keep: u64,
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number (increasing across segments and restarts).
    pub seq: u64,
    /// The counters it sets.
    pub entries: Vec<(String, Counter)>,
}

const HEADER: usize = 8;
/// Larger records are not written, and a length above this is read as damage.
const MAX_BODY: usize = 1 << 20;
const ENTRY_FIXED: usize = 2 + 5 * 8;

/// Appends the framed record `seq` setting `entries` to `out`.
pub fn encode<'a>(
    seq: u64,
    entries: impl ExactSizeIterator<Item = (&'a str, Counter)>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "quota record too large");
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    let count = u16::try_from(entries.len()).map_err(|_| too_big())?;
    out.extend_from_slice(&count.to_le_bytes());
    for (key, counter) in entries {
        let len = u16::try_from(key.len()).map_err(|_| too_big())?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        for v in counter.used.iter().chain([&counter.keep]) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let body = out.len() - start - HEADER;
    if body > MAX_BODY {
        out.truncate(start);
        return Err(too_big());
    }
    let crc = crc32(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(body as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The valid records at the start of `bytes`, and how many bytes they span; anything after is
/// a torn or damaged tail.
pub fn decode(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, len)) = decode_one(&bytes[at..]) {
        records.push(record);
        at += len;
    }
    (records, at)
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_BODY {
        return None;
    }
    let body = bytes.get(HEADER..HEADER + len)?;
    if crc32(body) != crc {
        return None;
    }
    let mut r = Reader(body);
    let seq = r.u64()?;
    let count = r.u16()?;
    let mut entries = Vec::with_capacity(usize::from(count).min(len / ENTRY_FIXED));
    for _ in 0..count {
        let key_len = usize::from(r.u16()?);
        let key = String::from_utf8(r.take(key_len)?.to_vec()).ok()?;
        let used = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let keep = r.u64()?;
        entries.push((key, Counter { used, keep }));
    }
    if !r.0.is_empty() {
        return None;
    }
    Some((Record { seq, entries }, HEADER + len))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// CRC-32 (IEEE 802.3, as zlib), table-driven.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The path of segment `generation` in `dir`.
pub fn segment_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("quota-{generation:020}.journal"))
}

/// The segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let generation = name
            .to_str()
            .and_then(|n| n.strip_prefix("quota-"))
            .and_then(|n| n.strip_suffix(".journal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(generation) = generation {
            out.push((generation, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The segment being written.
pub struct Journal {
    dir: PathBuf,
    file: Arc<File>,
    generation: u64,
    /// Records in this segment.
    records: u64,
    /// A write failed part-way: the segment may end in a torn record, so write no more to it.
    torn: bool,
    buf: Vec<u8>,
}

impl Journal {
    /// Creates segment `generation` in `dir` (empty; an existing file is truncated).
    pub fn create(dir: &Path, generation: u64) -> io::Result<Self> {
        Ok(Self {
            dir: dir.to_owned(),
            file: Arc::new(open_segment(dir, generation)?),
            generation,
            records: 0,
            torn: false,
            buf: Vec::with_capacity(256),
        })
    }

    /// Appends one record with one `write(2)` (more only if the kernel writes short). On
    /// error nothing may be assumed written; the next append goes to a new segment, and the
    /// caller gets the rotated-out file to keep for syncing.
    pub fn append<'a>(
        &mut self,
        seq: u64,
        entries: impl ExactSizeIterator<Item = (&'a str, Counter)>,
    ) -> io::Result<Option<Rotated>> {
        let rotated = if self.torn {
            Some(self.rotate()?)
        } else {
            None
        };
        self.buf.clear();
        encode(seq, entries, &mut self.buf)?;
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            self.torn = true;
            return Err(e);
        }
        self.records += 1;
        Ok(rotated)
    }

    /// Starts the next segment; gives the one it replaces.
    pub fn rotate(&mut self) -> io::Result<Rotated> {
        let file = Arc::new(open_segment(&self.dir, self.generation + 1)?);
        let old = Rotated {
            generation: self.generation,
            file: std::mem::replace(&mut self.file, file),
        };
        self.generation += 1;
        self.records = 0;
        self.torn = false;
        Ok(old)
    }

    /// Records in the current segment.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Makes the next write fail, as a full disk would.
    #[cfg(test)]
    pub fn fail_next_write(&mut self) {
        let path = segment_path(&self.dir, self.generation);
        self.file = Arc::new(File::open(path).expect("reopen read-only"));
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current segment's file (for `fdatasync` outside the lock).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }
}

/// A segment that is no longer written.
pub struct Rotated {
    /// Its generation.
    pub generation: u64,
    /// Its file, still open.
    pub file: Arc<File>,
}

fn open_segment(dir: &Path, generation: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(segment_path(dir, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(n: u64) -> Counter {
        Counter {
            used: [n, 2 * n, 0, u64::MAX],
            keep: 1_700_000_000,
        }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_a_torn_or_damaged_tail_ends_the_replay() {
        let mut bytes = Vec::new();
        encode(1, [("quota:a", counter(1))].into_iter(), &mut bytes).unwrap();
        let one = bytes.len();
        encode(
            2,
            [("quota:a", counter(2)), ("quota:b", counter(3))].into_iter(),
            &mut bytes,
        )
        .unwrap();
        let (records, valid) = decode(&bytes);
        assert_eq!(valid, bytes.len());
        assert_eq!(records[1].seq, 2);
        assert_eq!(records[1].entries[1], ("quota:b".to_owned(), counter(3)));
        // Every cut inside the second record keeps exactly the first.
        for cut in one..bytes.len() {
            let (records, valid) = decode(&bytes[..cut]);
            assert_eq!((records.len(), valid), (1, one), "cut at {cut}");
        }
        // A flipped bit, or zeros where the page cache lost the tail, is damage, not a record.
        let mut flipped = bytes.clone();
        flipped[one + 20] ^= 1;
        assert_eq!(decode(&flipped).1, one);
        let mut zeroed = bytes[..one].to_vec();
        zeroed.extend_from_slice(&[0; 64]);
        assert_eq!(decode(&zeroed).1, one);
    }

    #[test]
    fn appends_land_in_the_segment_and_rotation_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 7).unwrap();
        journal.append(1, [("k", counter(1))].into_iter()).unwrap();
        let old = journal.rotate().unwrap();
        assert_eq!(old.generation, 7);
        journal.append(2, [("k", counter(2))].into_iter()).unwrap();
        let found = segments(dir.path()).unwrap();
        assert_eq!(found.iter().map(|s| s.0).collect::<Vec<_>>(), vec![7, 8]);
        let (records, _) = decode(&std::fs::read(&found[1].1).unwrap());
        assert_eq!(records[0].seq, 2);
        assert_eq!(journal.records(), 1);
    }
}
