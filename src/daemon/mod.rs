//! The daemon: configuration, listeners, signals, reload, systemd integration and drain.
//!
//! [`serve`] loads the policies and opens the audit log first (refusing to start when either
//! fails: fail closed), then listens on the Unix socket systemd passed (socket activation) or
//! binds its own, and on TCP and the metrics port when configured. It tells systemd it is ready
//! and pings its watchdog. Every gRPC listener also serves the standard health service
//! (`grpc.health.v1`: NOT_SERVING while the audit log cannot be written or while draining) and
//! server reflection, so generic tools (grpcurl, grpc_health_probe) need no proto file.
//!
//! SIGHUP, or a change in the policy directory, reloads the policies ([`reload`]). SIGTERM or
//! SIGINT starts a drain: systemd is told STOPPING, listeners stop accepting, new invocations
//! are refused, invocations in flight may finish within `drain_timeout`, after which they are
//! killed (and still audited); the audit log is closed last, once every record is written.

mod access;
pub mod config;
pub mod reload;
pub mod systemd;

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use config::Config;

use crate::api::{self, Service};
use crate::audit::redact::Redactor;
use crate::audit::{self, AuditLog};
use crate::gate::Gate;
use crate::policy::PolicySet;
use crate::sandbox::{self, Host};
use crate::telemetry::{Metrics, metrics_server};
use reload::Trigger;

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
    /// The policy directory cannot be watched.
    #[error("cannot watch the policy directory {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
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
    // Before anything slow: a SIGHUP from now on reloads instead of killing the daemon.
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(16);
    spawn_signal_handler(shutdown.clone(), reload_tx.clone())?;

    let policy = PolicySet::load_dir(&config.policy_dir, &config.policy_vars)?;
    let tools: Vec<&str> = policy.tools().map(|t| t.name.as_str()).collect();
    tracing::info!(dir = %config.policy_dir.display(), ?tools, "policies loaded");
    if tools.is_empty() {
        tracing::warn!("no tool is defined: every invocation will be refused");
    }
    let metrics = Metrics::new();
    let audit = AuditLog::open(audit::Settings {
        path: config.audit_log.clone(),
        durability: config.audit.durability,
        batch_delay: config.audit.batch_delay,
        max_bytes: config.audit.max_bytes,
        keep: config.audit.keep,
        on_failure: config.audit.on_failure,
        metrics: metrics.audit.clone(),
    })?;
    tracing::info!(path = %config.audit_log.display(), durability = ?config.audit.durability, "audit log open");
    let host = prepare_host(&config)?;

    let access = access::prepare(&config, &policy)?;

    let (unix, activated) = match systemd::passed_unix_listener() {
        Ok(Some(listener)) => {
            let listener = UnixListener::from_std(listener).map_err(|source| Error::Listen {
                address: "the socket passed by systemd".to_owned(),
                source,
            })?;
            tracing::info!("listening on the socket passed by systemd");
            (listener, true)
        }
        Ok(None) => (bind_unix(&config.socket)?, false),
        Err(source) => {
            return Err(Error::Listen {
                address: "the socket passed by systemd (LISTEN_FDS)".to_owned(),
                source,
            });
        }
    };
    let tcp = match config.listen {
        Some(addr) => {
            let listener = bind_tcp(addr).await?;
            access::announce_tcp(&config, addr);
            Some(listener)
        }
        None => None,
    };
    // Metrics and watchdog pings go on through the drain (which may be long, and is worth
    // watching) and stop only when the process is about to exit.
    let exiting = CancellationToken::new();
    let _exiting = exiting.clone().drop_guard();
    if let Some(addr) = config.metrics_listen {
        let listener = bind_tcp(addr).await?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(metrics_server::serve(
            listener,
            metrics.clone(),
            exiting.clone(),
        ));
    }

    let redact = Redactor::new(&config.audit.redact).map_err(|m| {
        Error::Config(config::Error::Invalid {
            path: PathBuf::from("audit_redact"),
            line: 0,
            column: 0,
            message: m,
        })
    })?;
    let gate = Arc::new(
        Gate::new(host, policy, audit, config.limits, access.admission)
            .with_metrics(metrics)
            .with_redaction(redact),
    );
    let _watcher = if config.watch_policy_dir {
        let watcher =
            reload::watch(&config.policy_dir, reload_tx).map_err(|source| Error::Watch {
                path: config.policy_dir.clone(),
                source,
            })?;
        Some(watcher)
    } else {
        None
    };
    tokio::spawn(reload::run(
        Arc::clone(&gate),
        config.policy_dir.clone(),
        config.policy_vars.clone(),
        reload_rx,
        shutdown.clone(),
    ));
    systemd::spawn_watchdog(exiting.clone());

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
    // Every run has ended (or been given up on): write what is left and close the log.
    let audit_closed = Arc::clone(&gate);
    let _ = tokio::task::spawn_blocking(move || audit_closed.audit().close()).await;
    if !activated {
        let _ = std::fs::remove_file(&config.socket);
    }
    result
}

async fn bind_tcp(addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            address: addr.to_string(),
            source,
        })
}

/// The gRPC service name clients ask the health service about.
fn service_name() -> &'static str {
    <api::pb::tool_gate_server::ToolGateServer<Service> as NamedService>::NAME
}

async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    // "" is the whole server, as grpc_health_probe asks by default.
    reporter.set_service_status("", status).await;
    reporter.set_service_status(service_name(), status).await;
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
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, !gate.audit().is_failing()).await;
    // The audit log's health is the service's: a daemon that cannot audit runs nothing.
    let health_follower = {
        let reporter = reporter.clone();
        let mut audit_health = gate.audit().health();
        tokio::spawn(async move {
            loop {
                let writable = *audit_health.borrow_and_update();
                set_health(&reporter, writable).await;
                if audit_health.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // The same services on every listener; TCP may add TLS.
    let routes = |mut builder: Server| {
        builder
            .add_service(health.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(service.clone().into_server())
    };
    let unix_server =
        routes(Server::builder()).serve_with_incoming_shutdown(UnixListenerStream::new(unix), {
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
                routes(builder)
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
    let tools = gate.policy().tools().count();
    systemd::ready(&format!("serving {tools} tools"));
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
    health_follower.abort();
    set_health(&reporter, false).await;
    tracing::info!(timeout = ?drain_timeout, "draining: no new invocations, waiting for those in flight");
    // One bound for the whole drain: connections closing and runs ending.
    let deadline = tokio::time::Instant::now() + drain_timeout;
    let drained = async {
        let result = (&mut servers).await;
        gate.wait_idle().await;
        result
    };
    match tokio::time::timeout_at(deadline, drained).await {
        Ok(result) => {
            result?;
        }
        Err(_) => {
            tracing::warn!("drain timeout passed: killing the invocations still running");
            gate.kill_all();
            // Killed runs write their end records; give them, and their callers, a moment.
            if tokio::time::timeout(KILL_GRACE, gate.wait_idle())
                .await
                .is_err()
            {
                tracing::error!("some invocations did not finish their audit records before exit");
            }
            if tokio::time::timeout(KILL_GRACE, &mut servers)
                .await
                .is_err()
            {
                tracing::warn!("connections still open after the kill grace period; closing");
            }
        }
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

fn spawn_signal_handler(
    shutdown: CancellationToken,
    reload: mpsc::Sender<Trigger>,
) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signals)?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "policy reload requested");
                    // A full channel already holds a pending reload.
                    let _ = reload.try_send(Trigger::Signal);
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                continue;
            }
            tracing::info!(signal = name, "stop requested");
            systemd::stopping();
            shutdown.cancel();
        }
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
