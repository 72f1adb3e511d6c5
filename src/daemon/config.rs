//! The daemon's configuration file (`toolgate.toml`) and its defaults.
//!
//! Relative paths in the file are resolved against the file's own directory, so an example
//! config can run from a checkout wherever it is. Unknown keys are errors with line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::redact::Redactor;
use crate::audit::{Durability, OnFailure};
use crate::command::Position;
use crate::gate::RequestLimits;
use crate::policy::{self, Vars};

/// The audit log's settings (`audit_*` and `on_audit_failure` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditConfig {
    /// `audit_durability`: `always`, `batch` (default) or `none`.
    pub durability: Durability,
    /// `audit_batch_delay`: with `batch`, how long to gather records before an fsync (0).
    pub batch_delay: Duration,
    /// `audit_max_bytes`: rotate the file at this size (64 MiB; 0 never rotates).
    pub max_bytes: Option<u64>,
    /// `audit_keep`: rotated files kept (10).
    pub keep: usize,
    /// `on_audit_failure`: `refuse` (default) or `allow`.
    pub on_failure: OnFailure,
    /// `audit_redact`: daemon-wide redaction patterns, on top of each tool's `audit.redact`.
    pub redact: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Batch,
            batch_delay: Duration::ZERO,
            max_bytes: Some(64 << 20),
            keep: 10,
            on_failure: OnFailure::Refuse,
            redact: Vec::new(),
        }
    }
}

/// The daemon's settings after defaults, overrides and path resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Unix socket to listen on.
    pub socket: PathBuf,
    /// Optional TCP address to listen on as well.
    pub listen: Option<SocketAddr>,
    /// Directory of policy files.
    pub policy_dir: PathBuf,
    /// Audit log file.
    pub audit_log: PathBuf,
    /// How long in-flight invocations may take to finish at shutdown before they are killed.
    pub drain_timeout: Duration,
    /// Request size limits.
    pub limits: RequestLimits,
    /// Values for `${name}` placeholders in policies.
    pub policy_vars: Vars,
    /// The user tools run as when the daemon is root and their policy names none.
    pub run_as: String,

    // Identity and admission control.
    /// Whether TCP without TLS or tokens is allowed (anonymous callers, by address).
    pub insecure_tcp: bool,
    /// TLS for the TCP listener.
    pub tls: Option<TlsFiles>,
    /// Bearer tokens: name → SHA-256 of the token, lowercase hex.
    pub tokens: BTreeMap<String, String>,
    /// Callers, rates, concurrency, quotas.
    pub admission: crate::admission::Settings,
    /// Where limits and quotas are kept.
    pub store: crate::admission::config::StoreConfig,
    /// The audit log's durability, rotation, failure mode and redaction.
    pub audit: AuditConfig,
    /// Where to serve Prometheus metrics over HTTP (`metrics_listen`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether changes in the policy directory trigger a reload (`watch_policy_dir`, true).
    pub watch_policy_dir: bool,
}

/// `[tls]`: the TCP listener's certificate, key, and the CA its clients' certificates must
/// chain to (mutual TLS: with `client_ca`, a client certificate is required).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM.
    pub key: PathBuf,
    /// CA for client certificates, PEM; absent: no client certificates (tokens then).
    pub client_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/toolgate/toolgate.sock"),
            listen: None,
            policy_dir: PathBuf::from("/etc/toolgate/policies.d"),
            audit_log: PathBuf::from("/var/log/toolgate/audit.jsonl"),
            drain_timeout: Duration::from_secs(30),
            limits: RequestLimits {
                max_command_bytes: 64 * 1024,
                max_stdin_bytes: 1 << 20,
            },
            policy_vars: Vars::new(),
            run_as: "nobody".to_owned(),
            insecure_tcp: false,
            tls: None,
            tokens: BTreeMap::new(),
            admission: crate::admission::Settings::default(),
            store: crate::admission::config::StoreConfig::default(),
            audit: AuditConfig::default(),
            metrics_listen: None,
            watch_policy_dir: true,
        }
    }
}

/// A size written as a number of bytes or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    socket: Option<PathBuf>,
    listen: Option<SocketAddr>,
    policy_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    drain_timeout: Option<String>,
    max_command_bytes: Option<usize>,
    max_stdin_bytes: Option<usize>,
    run_as: Option<String>,
    #[serde(default)]
    policy_vars: BTreeMap<String, PathBuf>,
    // Identity and admission control.
    default_callers: Option<Vec<String>>,
    state_dir: Option<PathBuf>,
    insecure_tcp: Option<bool>,
    tls: Option<TlsFile>,
    #[serde(default)]
    tokens: BTreeMap<String, String>,
    #[serde(default)]
    admission: crate::admission::config::AdmissionFile,
    audit_durability: Option<Durability>,
    audit_batch_delay: Option<String>,
    audit_max_bytes: Option<Size>,
    audit_keep: Option<usize>,
    on_audit_failure: Option<OnFailure>,
    audit_redact: Option<Vec<String>>,
    metrics_listen: Option<SocketAddr>,
    watch_policy_dir: Option<bool>,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads `path` over the defaults.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |at: usize, message: String| {
            let at = Position::of(&text, at.min(text.len()));
            Error::Invalid {
                path: path.to_owned(),
                line: at.line,
                column: at.column,
                message,
            }
        };
        let file: ConfigFile = toml::from_str(&text)
            .map_err(|e| invalid(e.span().map_or(0, |s| s.start), e.message().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let mut config = Self::default();
        if let Some(socket) = file.socket {
            config.socket = resolve(socket);
        }
        config.listen = file.listen;
        if let Some(dir) = file.policy_dir {
            config.policy_dir = resolve(dir);
        }
        if let Some(log) = file.audit_log {
            config.audit_log = resolve(log);
        }
        if let Some(text) = file.drain_timeout {
            config.drain_timeout = policy::parse_duration(&text)
                .map_err(|m| invalid(0, format!("drain_timeout: {m}")))?;
        }
        if let Some(n) = file.max_command_bytes {
            config.limits.max_command_bytes = n;
        }
        if let Some(user) = file.run_as {
            config.run_as = user;
        }
        if let Some(n) = file.max_stdin_bytes {
            config.limits.max_stdin_bytes = n;
        }
        // Identity and admission control.
        config.insecure_tcp = file.insecure_tcp.unwrap_or(false);
        config.tls = file.tls.map(|t| TlsFiles {
            cert: resolve(t.cert),
            key: resolve(t.key),
            client_ca: t.client_ca.map(resolve),
        });
        for (name, digest) in file.tokens {
            let digest = digest.strip_prefix("sha256:").unwrap_or(&digest);
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    0,
                    format!(
                        "tokens.{name}: store the token's SHA-256 as 64 hex digits (`toolgate token-hash`), never the token"
                    ),
                ));
            }
            config.tokens.insert(name, digest.to_ascii_lowercase());
        }
        if let Some(dir) = file.state_dir {
            config.store.state_dir = resolve(dir);
        }
        crate::admission::config::apply(
            file.default_callers,
            file.admission,
            &mut config.admission,
            &mut config.store,
        )
        .map_err(|m| invalid(0, m))?;

        if let Some(durability) = file.audit_durability {
            config.audit.durability = durability;
        }
        if let Some(text) = file.audit_batch_delay {
            config.audit.batch_delay = policy::parse_duration(&text)
                .map_err(|m| invalid(0, format!("audit_batch_delay: {m}")))?;
        }
        match file.audit_max_bytes {
            Some(Size::Bytes(0)) => config.audit.max_bytes = None,
            Some(Size::Bytes(n)) => config.audit.max_bytes = Some(n),
            Some(Size::Text(text)) => {
                let n = policy::parse_byte_size(&text)
                    .map_err(|m| invalid(0, format!("audit_max_bytes: {m}")))?;
                config.audit.max_bytes = (n > 0).then_some(n);
            }
            None => {}
        }
        if let Some(keep) = file.audit_keep {
            if keep == 0 {
                return Err(invalid(
                    0,
                    "audit_keep must be at least 1: rotation moves the full file to .1".to_owned(),
                ));
            }
            config.audit.keep = keep;
        }
        if let Some(mode) = file.on_audit_failure {
            config.audit.on_failure = mode;
        }
        if let Some(patterns) = file.audit_redact {
            Redactor::new(&patterns).map_err(|m| invalid(0, format!("audit_redact: {m}")))?;
            config.audit.redact = patterns;
        }
        config.metrics_listen = file.metrics_listen;
        if let Some(watch) = file.watch_policy_dir {
            config.watch_policy_dir = watch;
        }
        for (name, value) in file.policy_vars {
            let value = resolve(value);
            // Canonical so landlock rules and policy paths name the same place.
            let value = value.canonicalize().unwrap_or(value);
            config
                .policy_vars
                .insert(name, value.to_string_lossy().into_owned());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("toolgate.toml");
        std::fs::write(
            &path,
            "socket = \"run/t.sock\"\naudit_log = \"/abs/audit.jsonl\"\ndrain_timeout = \"2s\"\n[policy_vars]\nworkspace = \".\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.socket, dir.path().join("run/t.sock"));
        assert_eq!(config.audit_log, Path::new("/abs/audit.jsonl"));
        assert_eq!(config.drain_timeout, Duration::from_secs(2));
        assert_eq!(
            config.policy_vars["workspace"],
            dir.path().canonicalize().unwrap().to_string_lossy()
        );

        assert_eq!(config.audit, AuditConfig::default());
        assert_eq!(config.metrics_listen, None);

        std::fs::write(
            &path,
            "audit_durability = \"always\"\naudit_max_bytes = \"1MiB\"\naudit_keep = 3\non_audit_failure = \"allow\"\naudit_redact = [\"--password=(.*)\"]\nmetrics_listen = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.audit.durability, Durability::Always);
        assert_eq!(config.audit.max_bytes, Some(1 << 20));
        assert_eq!(config.audit.keep, 3);
        assert_eq!(config.audit.on_failure, OnFailure::Allow);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );

        std::fs::write(&path, "audit_durability = \"sometimes\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("toolgate.toml:1:20"), "{err}");

        std::fs::write(&path, "socket = \"a\"\nsockett = \"b\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("toolgate.toml:2:1: unknown field `sockett`"),
            "{err}"
        );
    }
}
