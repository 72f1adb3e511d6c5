//! The policy file format as written by ops: serde structures, one per TOML table.
//!
//! Every table denies unknown keys, so a typo is an error with its line and column rather than
//! a silently ignored rule. Values that need checking beyond their type keep their span
//! (`Spanned`) so [`super::compile`] can point at them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One policy file: a set of tools.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Tools by name: `[tool.NAME]`.
    #[serde(default)]
    pub tool: BTreeMap<Spanned<String>, ToolSpec>,
}

/// `[tool.NAME]`: one tool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// What the tool does, shown to callers.
    #[serde(default)]
    pub description: String,
    /// Absolute path of the program; `${var}` placeholders allowed. Required unless the tool
    /// lists `programs`.
    pub program: Option<Spanned<String>>,
    /// A shell-like tool: several programs, each with its own arguments and rules, picked by
    /// the first word of a request's `command` (`[tool.NAME.programs.WORD]`). Everything else
    /// of the tool (environment, sandbox, limits, callers, rates) is shared by them.
    #[serde(default)]
    pub programs: BTreeMap<Spanned<String>, ProgramSpec>,
    /// Fixed arguments placed before the caller's.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory; `${var}` placeholders allowed. Default `/`.
    pub cwd: Option<Spanned<String>>,
    /// Time limit, e.g. `"30s"`. Default 30 s.
    pub timeout: Option<Spanned<String>>,
    /// Cap on each of stdout and stderr, e.g. `"1MiB"` or a number of bytes. Default 1 MiB.
    pub max_output: Option<Spanned<ByteSize>>,
    /// Argument rules.
    #[serde(default)]
    pub arguments: ArgumentsSpec,
    /// Environment rules.
    #[serde(default)]
    pub env: EnvSpec,
    /// Sandbox settings.
    #[serde(default)]
    pub sandbox: SandboxSpec,
    /// Examples checked at load.
    #[serde(default)]
    pub examples: ExamplesSpec,

    // Admission control (see `crate::admission::spec` for the meaning of each key).
    /// Who may call the tool; the daemon's `default_callers` when absent.
    pub callers: Option<Vec<Spanned<String>>>,
    /// Rate limits.
    pub rate_limit: Option<Spanned<crate::admission::spec::RateLimitSpec>>,
    /// Most invocations of this tool in flight at once.
    pub max_concurrent: Option<Spanned<u32>>,
    /// Quota per caller on this tool.
    pub quota: Option<Spanned<crate::admission::spec::QuotaSpec>>,
    /// Circuit breaker.
    pub breaker: Option<Spanned<crate::admission::spec::BreakerSpec>>,
    /// What the audit log keeps of the tool's invocations.
    #[serde(default)]
    pub audit: AuditSpec,
}

/// `[tool.NAME.audit]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSpec {
    /// Regular expressions for secret arguments, matched against whole arguments; what they
    /// match (or, with groups, what the groups capture) is replaced before the record is
    /// written, e.g. `['--password=(.*)']`.
    #[serde(default)]
    pub redact: Vec<Spanned<String>>,
}

/// `[tool.NAME.programs.WORD]`: one program of a shell-like tool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// Absolute path of the program; `${var}` placeholders allowed.
    pub program: Spanned<String>,
    /// Fixed arguments placed before the caller's.
    #[serde(default)]
    pub args: Vec<String>,
    /// Argument rules for this program.
    #[serde(default)]
    pub arguments: ArgumentsSpec,
    /// Argument lines (without the program's word) checked at load.
    #[serde(default)]
    pub examples: ExamplesSpec,
}

/// `[tool.NAME.arguments]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentsSpec {
    /// Most arguments a request may give.
    pub max_count: Option<usize>,
    /// Longest argument in bytes.
    pub max_length: Option<usize>,
    /// The only flags allowed, when given.
    pub allow_flags: Option<Vec<String>>,
    /// Flags always refused.
    #[serde(default)]
    pub deny_flags: Vec<String>,
    /// Flags that take a value.
    #[serde(default)]
    pub flags_with_value: Vec<String>,
    /// Regular expressions no argument may match.
    #[serde(default)]
    pub deny_patterns: Vec<Spanned<String>>,
    /// Regular expressions each positional argument must match one of, when given.
    pub positional: Option<Vec<Spanned<String>>>,
    /// What positional arguments are, in words.
    pub positional_help: Option<String>,
    /// Whether `--` ends the options. Default true.
    pub end_of_options: Option<bool>,
    /// When given, the first argument must be one of these words (`git log ...`).
    pub subcommands: Option<Vec<String>>,
}

impl ArgumentsSpec {
    /// Whether no rule is written (a shell-like tool's rules belong to its programs).
    pub fn is_empty(&self) -> bool {
        self.max_count.is_none()
            && self.max_length.is_none()
            && self.allow_flags.is_none()
            && self.deny_flags.is_empty()
            && self.flags_with_value.is_empty()
            && self.deny_patterns.is_empty()
            && self.positional.is_none()
            && self.positional_help.is_none()
            && self.end_of_options.is_none()
            && self.subcommands.is_none()
    }
}

/// `[tool.NAME.env]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSpec {
    /// Names a request may set.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Fixed variables, always set (a request cannot override them).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

/// `[tool.NAME.sandbox]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Paths readable (and executable) beneath.
    #[serde(default)]
    pub read: Vec<Spanned<String>>,
    /// Paths readable and writable beneath.
    #[serde(default)]
    pub write: Vec<Spanned<String>>,
    /// Whether the system's library and program directories are readable. Default true.
    pub system_paths: Option<bool>,
    /// `"none"` (default) or `"allow"`.
    pub network: Option<Spanned<String>>,
    /// With `network = "allow"`: the only TCP ports the tool may connect to.
    pub tcp_connect: Option<Spanned<Vec<u16>>>,
    /// With `network = "allow"`: the only TCP ports the tool may bind.
    pub tcp_bind: Option<Spanned<Vec<u16>>>,
    /// User (name or numeric uid) the tool runs as when the daemon is root.
    pub run_as: Option<Spanned<String>>,
    /// The lowest landlock ABI the tool may run under; below it, invocations are refused.
    pub min_landlock_abi: Option<Spanned<i32>>,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The syscall filter.
    pub seccomp: Option<Spanned<SeccompSpec>>,
}

/// `[tool.NAME.sandbox.seccomp]`: which syscalls the tool may make.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompSpec {
    /// A named profile: `"default"` (ordinary command-line tools) or `"minimal"`.
    pub profile: Option<String>,
    /// Syscalls allowed on top of the profile, by kernel name.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `"errno"` (default: denied calls fail with EPERM) or `"kill"` (the process dies).
    pub action: Option<String>,
}

/// `[tool.NAME.sandbox.limits]`: rlimits applied to the tool.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Address space (RLIMIT_AS).
    pub memory: Option<ByteSize>,
    /// Processes of the tool's user (RLIMIT_NPROC).
    pub processes: Option<u64>,
    /// CPU time (RLIMIT_CPU), e.g. `"10s"`.
    pub cpu_time: Option<Spanned<String>>,
    /// Open files (RLIMIT_NOFILE). Default 1024.
    pub open_files: Option<u64>,
    /// Largest file the tool may write (RLIMIT_FSIZE).
    pub file_size: Option<ByteSize>,
    /// CPU bandwidth in cores, e.g. `0.5` (cgroup).
    pub cpus: Option<Spanned<f64>>,
    /// Size of the tool's private `/tmp`. Default 64 MiB.
    pub tmp_size: Option<ByteSize>,
}

/// `[tool.NAME.examples]`: command lines (the arguments after the program, quoted as in a
/// `command`) that must be allowed and must be refused; checked whenever the policy loads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamplesSpec {
    /// Argument lines the rules must allow.
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Argument lines the rules must refuse.
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

/// A size in bytes, written as a number or a string with a unit (`"64KiB"`, `"1MiB"`, `"2G"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => parse_byte_size(&text)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"512"`, `"64KiB"`, `"64K"`, `"1MiB"`, `"1.5GiB"`: binary units (K = KiB).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`: use B, KiB, MiB or GiB"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write e.g. 65536, \"64KiB\" or \"1MiB\""))?;
    Ok((value * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert_eq!(parse_byte_size("64KiB"), Ok(65536));
        assert_eq!(parse_byte_size("1M"), Ok(1 << 20));
        assert_eq!(parse_byte_size("1.5 GiB"), Ok(3 << 29));
        assert!(parse_byte_size("12 parsecs").unwrap_err().contains("unit"));
        assert!(parse_byte_size("lots").is_err());
    }
}
