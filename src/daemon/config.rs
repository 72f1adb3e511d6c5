//! The daemon's configuration file (`toolgate.toml`) and its defaults.
//!
//! Relative paths in the file are resolved against the file's own directory, so an example
//! config can run from a checkout wherever it is. Unknown keys are errors with line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::command::Position;
use crate::gate::RequestLimits;
use crate::policy::{self, Vars};

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
        }
    }
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

        std::fs::write(&path, "socket = \"a\"\nsockett = \"b\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("toolgate.toml:2:1: unknown field `sockett`"),
            "{err}"
        );
    }
}
