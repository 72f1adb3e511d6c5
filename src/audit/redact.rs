//! Redaction of secret arguments before a record is written (and so before it is hashed).
//!
//! A pattern is a regular expression matched against a whole argument, like the argument rules.
//! When it has capture groups only what they capture is replaced (`--password=(.*)` keeps the
//! flag name, which tells the reader what was hidden); without groups the whole argument is.
//! Whatever was hidden in an argument is also hidden wherever else the record repeats it (the
//! command line as written, a refusal message quoting the argument).
//!
//! Security assumption: redaction is best effort against accidental disclosure in the log, not a
//! boundary. A secret spread over two arguments (`--password SECRET`) is only caught by a
//! pattern for the second one, so policies should prefer the `--flag=value` form for secrets.

use regex::Regex;

/// What a redacted part is replaced with.
pub const REDACTED: &str = "[redacted]";

/// A compiled list of redaction patterns.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Anchored, for whole arguments.
    whole: Vec<Regex>,
    /// Unanchored, for a command line that could not be split into arguments.
    anywhere: Vec<Regex>,
}

impl Redactor {
    /// Compiles `patterns`; the error names the pattern that does not compile.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut redactor = Self::default();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let compile = |source: String| {
                Regex::new(&source)
                    .map_err(|e| format!("invalid redaction pattern `{pattern}`: {e}"))
            };
            redactor.whole.push(compile(format!("^(?:{pattern})$"))?);
            redactor.anywhere.push(compile(pattern.to_owned())?);
        }
        Ok(redactor)
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.whole.is_empty()
    }

    /// Both lists together: the daemon's and a tool's.
    pub fn with(&self, other: &Self) -> Self {
        let mut both = self.clone();
        both.whole.extend(other.whole.iter().cloned());
        both.anywhere.extend(other.anywhere.iter().cloned());
        both
    }

    /// Redacts each argument; returns the redacted list and the secrets found, so that other
    /// text repeating them can be [`scrub`](Secrets::scrub)bed.
    pub fn arguments(&self, args: &[String]) -> (Vec<String>, Secrets) {
        let mut secrets = Secrets::default();
        let redacted = args
            .iter()
            .map(|arg| {
                let mut out = arg.clone();
                for regex in &self.whole {
                    if let Some(hidden) = redact_match(regex, &out, &mut secrets) {
                        out = hidden;
                    }
                }
                out
            })
            .collect();
        (redacted, secrets)
    }

    /// Redacts every match anywhere in `text` (for a command line that could not be split).
    pub fn text(&self, text: &str, secrets: &mut Secrets) -> String {
        let mut out = text.to_owned();
        for regex in &self.anywhere {
            let found: Vec<String> = regex
                .captures_iter(&out)
                .flat_map(|caps| secret_parts(&caps))
                .collect();
            for secret in found {
                secrets.add(secret);
            }
            out = secrets.scrub(&out);
        }
        out
    }
}

/// The groups of a match, or the whole match when the pattern has no group.
fn secret_parts(caps: &regex::Captures<'_>) -> Vec<String> {
    let groups: Vec<String> = caps
        .iter()
        .skip(1)
        .flatten()
        .map(|m| m.as_str().to_owned())
        .collect();
    if caps.len() > 1 {
        groups
    } else {
        caps.get(0)
            .map(|m| vec![m.as_str().to_owned()])
            .unwrap_or_default()
    }
}

fn redact_match(regex: &Regex, arg: &str, secrets: &mut Secrets) -> Option<String> {
    let caps = regex.captures(arg)?;
    let parts = secret_parts(&caps);
    if caps.len() == 1 {
        secrets.add(arg.to_owned());
        return Some(REDACTED.to_owned());
    }
    // Replace the captured spans from the end so earlier offsets stay valid.
    let mut spans: Vec<(usize, usize)> = caps
        .iter()
        .skip(1)
        .flatten()
        .map(|m| (m.start(), m.end()))
        .collect();
    spans.sort_unstable();
    spans.dedup();
    let mut out = arg.to_owned();
    for (start, end) in spans.into_iter().rev() {
        out.replace_range(start..end, REDACTED);
    }
    for part in parts {
        secrets.add(part);
    }
    Some(out)
}

/// Secret strings found by redaction, to hide wherever else they appear.
#[derive(Clone, Debug, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    fn add(&mut self, secret: String) {
        // An empty capture hides nothing; replacing "" would scatter markers everywhere.
        if !secret.is_empty() && !self.0.contains(&secret) {
            self.0.push(secret);
            // Longest first, so a secret containing another is hidden whole.
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Both sets together.
    pub fn merge(mut self, other: Self) -> Self {
        for secret in other.0 {
            self.add(secret);
        }
        self
    }

    /// `text` with every secret replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            out = out.replace(secret.as_str(), REDACTED);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn groups_hide_only_what_they_capture_and_plain_patterns_hide_the_argument() {
        let r = Redactor::new(&["--password=(.*)", "sk-[a-z0-9]+"]).unwrap();
        let (out, secrets) = r.arguments(&args(&["-v", "--password=hunter2", "sk-abc123"]));
        assert_eq!(out, args(&["-v", "--password=[redacted]", "[redacted]"]));
        assert_eq!(
            secrets.scrub("tool --password=hunter2 sk-abc123: not allowed"),
            "tool --password=[redacted] [redacted]: not allowed"
        );
    }

    #[test]
    fn patterns_match_whole_arguments_only() {
        let r = Redactor::new(&["secret"]).unwrap();
        let (out, _) = r.arguments(&args(&["not-a-secret-here", "secret"]));
        assert_eq!(out, args(&["not-a-secret-here", "[redacted]"]));
    }

    #[test]
    fn unsplittable_text_is_redacted_anywhere() {
        let r = Redactor::new(&["--token=(\\S+)"]).unwrap();
        let mut secrets = Secrets::default();
        assert_eq!(
            r.text("cmd --token=abc 'unclosed", &mut secrets),
            "cmd --token=[redacted] 'unclosed"
        );
        assert_eq!(secrets.scrub("abc"), "[redacted]");
    }

    #[test]
    fn invalid_pattern_is_named() {
        let err = Redactor::new(&["(open"]).unwrap_err();
        assert!(err.contains("`(open`"), "{err}");
    }
}
