//! Checking a chain: `toolgate audit verify FILE...`.
//!
//! The files may be given in any order (a shell glob sorts `audit.jsonl.10` before
//! `audit.jsonl.2`); they are put in chain order by the `seq` of their first record. Then every
//! line must be a record whose `prev` is the hash of the line before it and whose `seq` is one
//! more. The first break is reported with its file and line, classified from what the
//! surrounding links say: a *modified* line (its successor's `prev` names a line that is not
//! there, or its own `seq` is wrong), *deleted* records (`seq` jumps), *inserted* lines (the
//! chain goes on past them from the line before) or *reordered* ones (a line's `prev` names a
//! line elsewhere in the files).
//!
//! Limits, by construction of a hash chain: changes to the newest record, or the removal of
//! records from the end, leave no later link to break; compare the head with the one the
//! daemon logged or exported. The oldest file given may continue from a file that is gone
//! (rotation keeps a bounded number): that is reported, not an error.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS, Link};

/// What is wrong with a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breach {
    /// A line's content differs from what was written.
    Modified,
    /// Records are missing.
    Deleted,
    /// Lines that were never written by the daemon.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// A file could not be read.
    Unreadable,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
            Self::Unreadable => "unreadable",
        })
    }
}

/// The first problem found, located.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {breach}: {detail}", file.display())]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem is the file itself).
    pub line: usize,
    /// What kind of tampering (or damage) it looks like.
    pub breach: Breach,
    /// What exactly does not fit.
    pub detail: String,
}

/// What a chain that verifies contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Records checked.
    pub records: usize,
    /// The first record's `seq`.
    pub first_seq: u64,
    /// The newest record's `seq`.
    pub last_seq: u64,
    /// The newest record's hash: compare it with the head the daemon logged.
    pub head: String,
    /// The file the oldest given file continues from, when that file was not given.
    pub continues_from: Option<String>,
    /// Bytes after the last complete line of the newest file (a crash during a write).
    pub torn_tail: usize,
}

struct Line {
    file: usize,
    number: usize,
    hash: String,
    link: Link,
}

/// Verifies the chain through `files`.
pub fn verify(files: &[PathBuf]) -> Result<Summary, Problem> {
    // One file's bytes at a time: only the links of each line are kept.
    let mut parsed: Vec<(PathBuf, Vec<Line>, usize)> = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| Problem {
            file: path.clone(),
            line: 0,
            breach: Breach::Unreadable,
            detail: e.to_string(),
        })?;
        let (lines, torn) = parse(path, &bytes)?;
        parsed.push((path.clone(), lines, torn));
    }
    let mut files = parsed;
    files.sort_by_key(|(_, lines, _)| lines.first().map_or(u64::MAX, |l| l.link.seq));
    let last_file = files.len().saturating_sub(1);
    for (index, (path, _, torn)) in files.iter().enumerate() {
        if *torn > 0 && index != last_file {
            return Err(Problem {
                file: path.clone(),
                line: 0,
                breach: Breach::Modified,
                detail: format!(
                    "{torn} bytes after the last complete line, in a file that is not the newest"
                ),
            });
        }
    }
    let torn_tail = files.last().map_or(0, |(_, _, torn)| *torn);
    let paths: Vec<PathBuf> = files.iter().map(|(p, _, _)| p.clone()).collect();
    let lines: Vec<Line> = files
        .into_iter()
        .enumerate()
        .flat_map(|(i, (_, lines, _))| {
            lines.into_iter().map(move |mut l| {
                l.file = i;
                l
            })
        })
        .collect();
    let Some(first) = lines.first() else {
        return Err(Problem {
            file: paths.first().cloned().unwrap_or_default(),
            line: 0,
            breach: Breach::Deleted,
            detail: "no records".to_owned(),
        });
    };
    let at = |l: &Line| (paths[l.file].clone(), l.number);
    let problem = |l: &Line, breach, detail: String| {
        let (file, line) = at(l);
        Problem {
            file,
            line,
            breach,
            detail,
        }
    };
    let is_start = first.link.event.as_deref() == Some("file_start");
    if !is_start {
        return Err(problem(
            first,
            Breach::Deleted,
            "the chain does not begin with a file_start record: records before this line were removed".to_owned(),
        ));
    }
    let continues_from = if first.link.prev == GENESIS && first.link.seq == 0 {
        None
    } else {
        Some(
            first
                .link
                .previous_file
                .clone()
                .unwrap_or_else(|| "an earlier file".to_owned()),
        )
    };
    // Every line by its hash, to tell moved lines from foreign ones.
    let by_hash: HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l.hash.as_str(), i))
        .collect();
    for i in 1..lines.len() {
        let (before, line) = (&lines[i - 1], &lines[i]);
        if line.link.prev == before.hash && line.link.seq == before.link.seq + 1 {
            continue;
        }
        let place = |l: &Line| {
            let (file, number) = at(l);
            format!("{}:{number}", file.display())
        };
        if line.link.prev == before.hash {
            return Err(problem(
                line,
                Breach::Modified,
                format!(
                    "seq is {} but the record before has seq {}",
                    line.link.seq, before.link.seq
                ),
            ));
        }
        // Does the chain continue from `before` further on? Then what lies between is foreign.
        if let Some(next) = lines[i + 1..]
            .iter()
            .position(|l| l.link.prev == before.hash)
        {
            let end = i + 1 + next;
            // A line whose `prev` names a record that exists was written by the daemon, just
            // not here; one whose `prev` names nothing was made up.
            let moved = lines[i..end].iter().any(|l| {
                by_hash
                    .get(l.link.prev.as_str())
                    .is_some_and(|&k| k != i - 1)
            });
            let (breach, what) = if moved {
                (Breach::Reordered, "belong elsewhere in the chain")
            } else {
                (Breach::Inserted, "are not part of the chain")
            };
            return Err(problem(
                line,
                breach,
                format!(
                    "{} line(s) from here {what}: the record after {} continues at {}",
                    end - i,
                    place(before),
                    place(&lines[end])
                ),
            ));
        }
        if let Some(&k) = by_hash.get(line.link.prev.as_str()) {
            let breach = if k < i - 1 && line.link.seq == lines[k].link.seq + 1 {
                Breach::Inserted
            } else {
                Breach::Reordered
            };
            let detail = if breach == Breach::Inserted {
                format!(
                    "this record follows {}, so the {} line(s) before it were inserted",
                    place(&lines[k]),
                    i - 1 - k
                )
            } else {
                format!("this record belongs after {}", place(&lines[k]))
            };
            return Err(problem(line, breach, detail));
        }
        if line.link.seq > before.link.seq + 1 {
            return Err(problem(
                line,
                Breach::Deleted,
                format!(
                    "records with seq {} to {} are missing before this line",
                    before.link.seq + 1,
                    line.link.seq - 1
                ),
            ));
        }
        if line.link.seq <= before.link.seq {
            return Err(problem(
                line,
                Breach::Reordered,
                format!("seq {} comes after seq {}", line.link.seq, before.link.seq),
            ));
        }
        return Err(problem(
            before,
            Breach::Modified,
            format!(
                "this line's hash is not the `prev` of {} (this line, or that `prev`, was changed)",
                place(line)
            ),
        ));
    }
    let last = lines.last().unwrap_or(first);
    Ok(Summary {
        records: lines.len(),
        first_seq: first.link.seq,
        last_seq: last.link.seq,
        head: last.hash.clone(),
        continues_from,
        torn_tail,
    })
}

/// The records of one file, and the length of an incomplete last line.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Line>, usize), Problem> {
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1);
    let mut lines = Vec::new();
    let body = bytes[..complete].strip_suffix(b"\n").unwrap_or_default();
    let raws: Vec<&[u8]> = if body.is_empty() && complete == 0 {
        Vec::new()
    } else {
        body.split(|&b| b == b'\n').collect()
    };
    for (index, raw) in raws.into_iter().enumerate() {
        let link = Link::parse(raw).ok_or_else(|| Problem {
            file: path.to_owned(),
            line: index + 1,
            breach: Breach::Modified,
            detail: "not a chained audit record (not JSON, or no seq/prev)".to_owned(),
        })?;
        lines.push(Line {
            file: 0,
            number: index + 1,
            hash: chain::hash(raw),
            link,
        });
    }
    Ok((lines, bytes.len() - complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid chain of `n` records as lines.
    fn chain_lines(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for seq in 0..n {
            let body = if seq == 0 {
                br#"{"event":"file_start"}"#.to_vec()
            } else {
                format!(r#"{{"event":"end","n":{seq}}}"#).into_bytes()
            };
            let line = chain::compose(seq, &prev, &body);
            prev = chain::hash(&line);
            out.push(line);
        }
        out
    }

    fn check(lines: &[Vec<u8>]) -> Result<Summary, Problem> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut text = lines.join(&b'\n');
        text.push(b'\n');
        std::fs::write(&path, text).unwrap();
        verify(&[path])
    }

    fn breach(lines: &[Vec<u8>]) -> (Breach, usize) {
        let p = check(lines).unwrap_err();
        (p.breach, p.line)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let s = check(&chain_lines(6)).unwrap();
        assert_eq!((s.records, s.first_seq, s.last_seq), (6, 0, 5));
        assert_eq!(s.continues_from, None);
    }

    #[test]
    fn a_modified_line_is_found() {
        let mut lines = chain_lines(6);
        lines[2] = String::from_utf8(lines[2].clone())
            .unwrap()
            .replace("\"n\":2", "\"n\":9")
            .into_bytes();
        assert_eq!(breach(&lines), (Breach::Modified, 3));
        let mut lines = chain_lines(6);
        lines[2] = b"garbage".to_vec();
        assert_eq!(breach(&lines), (Breach::Modified, 3));
    }

    #[test]
    fn deleted_records_are_found() {
        let mut lines = chain_lines(6);
        lines.remove(3);
        assert_eq!(breach(&lines), (Breach::Deleted, 4));
        let mut lines = chain_lines(6);
        lines.remove(0);
        assert_eq!(breach(&lines), (Breach::Deleted, 1));
    }

    #[test]
    fn inserted_records_are_found() {
        let mut lines = chain_lines(6);
        let forged = chain::compose(3, &chain::hash(&lines[2]), br#"{"event":"end"}"#);
        lines.insert(3, forged);
        assert_eq!(breach(&lines), (Breach::Inserted, 5));
        let mut lines = chain_lines(6);
        lines.insert(3, chain::compose(3, "ff", br#"{"event":"end"}"#));
        assert_eq!(breach(&lines), (Breach::Inserted, 4));
    }

    #[test]
    fn reordered_records_are_found() {
        let mut lines = chain_lines(6);
        lines.swap(2, 3);
        assert_eq!(breach(&lines), (Breach::Reordered, 3));
    }

    #[test]
    fn files_are_put_in_chain_order_and_checked_across() {
        let lines = chain_lines(6);
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("a.jsonl.1");
        let new = dir.path().join("a.jsonl");
        std::fs::write(&old, [lines[..3].join(&b'\n'), b"\n".to_vec()].concat()).unwrap();
        let mut second = lines[3..].to_vec();
        // A rotated file starts with a file_start record of its own.
        second[0] = String::from_utf8(second[0].clone())
            .unwrap()
            .replace("\"end\"", "\"file_start\"")
            .into_bytes();
        let relinked = relink(&lines[2], &second);
        std::fs::write(&new, [relinked.join(&b'\n'), b"\n".to_vec()].concat()).unwrap();
        let s = verify(&[new.clone(), old.clone()]).unwrap();
        assert_eq!(s.records, 6);
        // Without the older file, the newer one verifies as a continuation.
        let s = verify(std::slice::from_ref(&new)).unwrap();
        assert!(s.continues_from.is_some());
        // Without the newer file's first records, it does not.
        let text = std::fs::read(&new).unwrap();
        let cut = text.iter().position(|&b| b == b'\n').unwrap() + 1;
        std::fs::write(&new, &text[cut..]).unwrap();
        let p = verify(&[old, new]).unwrap_err();
        assert_eq!(p.breach, Breach::Deleted);
    }

    /// Recomputes the links of `lines` after `before`.
    fn relink(before: &[u8], lines: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut prev = chain::hash(before);
        let mut seq = Link::parse(before).unwrap().seq;
        lines
            .iter()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_slice(line).unwrap();
                let mut body = value.as_object().unwrap().clone();
                body.remove("seq");
                body.remove("prev");
                seq += 1;
                let line = chain::compose(seq, &prev, &serde_json::to_vec(&body).unwrap());
                prev = chain::hash(&line);
                line
            })
            .collect()
    }

    #[test]
    fn a_torn_tail_is_reported_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut text = chain_lines(3).join(&b'\n');
        text.extend_from_slice(b"\n{\"seq\":3,");
        std::fs::write(&path, text).unwrap();
        let s = verify(&[path]).unwrap();
        assert_eq!((s.records, s.torn_tail), (3, 9));
    }
}
