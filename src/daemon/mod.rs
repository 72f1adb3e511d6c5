//! The daemon: configuration, listeners, signals and graceful drain.
//!
//! [`serve`] loads the policies and opens the audit log first (refusing to start when either
//! fails: fail closed), then listens on the Unix socket (and TCP when configured). SIGTERM or
//! SIGINT starts a drain: listeners stop accepting, new invocations are refused, invocations in
//! flight may finish within `drain_timeout`, after which they are killed (and still audited).

mod access;
pub mod config;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

pub use config::Config;

use crate::api::Service;
use crate::audit::AuditLog;
use crate::gate::Gate;
use crate::policy::PolicySet;
use crate::sandbox::{self, Host};

/// How long runs killed at the end of a drain get to write their records.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The policies failed to load.
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::Error),
    /// The sandbox host cannot be prepared.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::Error),
    /// The configured `run_as` user is unusable.
    #[error("run_as: {0}")]
    RunAs(String),
    /// A listener could not be set up.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// Socket path or TCP address.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    /// Identity or admission settings are unusable (TLS files, plain TCP, the limits store).
    #[error("{0}")]
    Access(String),
}

/// Starts the daemon with `config` and runs until SIGTERM or SIGINT has drained it.
pub async fn serve(config: Config) -> Result<(), Error> {
    sandbox::ensure_standard_fds().map_err(|source| Error::Listen {
        address: "standard descriptors".to_owned(),
        source,
    })?;
    let policy = PolicySet::load_dir(&config.policy_dir, &config.policy_vars)?;
    let tools: Vec<&str> = policy.tools().map(|t| t.name.as_str()).collect();
    tracing::info!(dir = %config.policy_dir.display(), ?tools, "policies loaded");
    if tools.is_empty() {
        tracing::warn!("no tool is defined: every invocation will be refused");
    }
    let audit = AuditLog::open(&config.audit_log)?;
    tracing::info!(path = %config.audit_log.display(), "audit log open");
    let host = prepare_host(&config)?;

    let access = access::prepare(&config, &policy)?;

    let unix = bind_unix(&config.socket)?;
    let tcp = match config.listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    address: addr.to_string(),
                    source,
                })?;
            access::announce_tcp(&config, addr);
            Some(listener)
        }
        None => None,
    };

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let gate = Arc::new(Gate::new(
        host,
        policy,
        audit,
        config.limits,
        access.admission,
    ));
    let result = run_with(
        unix,
        tcp,
        Arc::clone(&gate),
        access.auth,
        access.tls,
        shutdown,
        config.drain_timeout,
    )
    .await;
    let _ = std::fs::remove_file(&config.socket);
    result
}

/// Serves on the given listeners until `shutdown`, then drains within `drain_timeout`; callers
/// are identified by their peer credentials only, and TCP is plain (for tests).
pub async fn run(
    unix: UnixListener,
    tcp: Option<TcpListener>,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> Result<(), Error> {
    let auth = Arc::new(crate::auth::Authenticator::new(&Default::default(), true));
    run_with(unix, tcp, gate, auth, None, shutdown, drain_timeout).await
}

/// [`run`] with the authenticator and the TCP listener's TLS settings.
///
/// The same entry point serves tests and production.
pub async fn run_with(
    unix: UnixListener,
    tcp: Option<TcpListener>,
    gate: Arc<Gate>,
    auth: Arc<crate::auth::Authenticator>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> Result<(), Error> {
    let service = Service::new(Arc::clone(&gate), auth);
    let unix_server = Server::builder()
        .add_service(service.clone().into_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), {
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        });
    let tcp_server = async {
        match tcp {
            Some(listener) => {
                let mut builder = Server::builder();
                if let Some(tls) = tls {
                    builder = builder.tls_config(tls)?;
                }
                builder
                    .add_service(service.into_server())
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), {
                        let shutdown = shutdown.clone();
                        async move { shutdown.cancelled().await }
                    })
                    .await
            }
            None => Ok(()),
        }
    };
    tracing::info!("ready");
    let servers = async { tokio::try_join!(unix_server, tcp_server) };
    tokio::pin!(servers);

    tokio::select! {
        result = &mut servers => {
            result?;
            gate.wait_idle().await;
            return Ok(());
        }
        () = shutdown.cancelled() => {}
    }
    gate.begin_drain();
    tracing::info!(timeout = ?drain_timeout, "draining: no new invocations, waiting for those in flight");
    match tokio::time::timeout(drain_timeout, &mut servers).await {
        Ok(result) => {
            result?;
        }
        Err(_) => {
            tracing::warn!("drain timeout passed: killing the invocations still running");
            gate.kill_all();
            if tokio::time::timeout(KILL_GRACE, &mut servers)
                .await
                .is_err()
            {
                tracing::warn!("connections still open after the kill grace period; closing");
            }
        }
    }
    if tokio::time::timeout(KILL_GRACE, gate.wait_idle())
        .await
        .is_err()
    {
        tracing::error!("some invocations did not finish their audit records before exit");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Prepares the sandbox host next to the socket and logs what isolation it gives.
pub fn prepare_host(config: &Config) -> Result<Host, Error> {
    let run_as = crate::policy::lookup_user(&config.run_as).map_err(Error::RunAs)?;
    let staging = config
        .socket
        .parent()
        .unwrap_or(Path::new("."))
        .join("sandbox-root");
    let host = Host::prepare(&staging, run_as)?;
    for (feature, state) in host.features() {
        tracing::info!(feature, state, "sandbox");
    }
    Ok(host)
}

fn spawn_signal_handler(shutdown: CancellationToken) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stop requested");
        shutdown.cancel();
    });
    Ok(())
}

/// Binds the Unix socket, replacing a stale socket file but never a live daemon's.
fn bind_unix(path: &Path) -> Result<UnixListener, Error> {
    let listen_error = |source| Error::Listen {
        address: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen_error)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(listen_error(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(listen_error(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another daemon is listening on it",
            )));
        }
        std::fs::remove_file(path).map_err(listen_error)?;
    }
    let listener = UnixListener::bind(path).map_err(listen_error)?;
    // Owner and group may connect; grant callers by group membership.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen_error)?;
    tracing::info!(socket = %path.display(), "listening");
    Ok(listener)
}

/// The default socket path, also used by the client commands.
pub fn default_socket() -> PathBuf {
    Config::default().socket
}
