//! The systemd service protocol: readiness and state notifications, the watchdog, and
//! sockets passed by socket activation.
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` nothing is sent,
//! without `WATCHDOG_USEC` no ping, without `LISTEN_FDS` the daemon binds its own socket.
//! Notifications are best effort: a failure to notify is logged, never fatal (systemd then
//! times the service out, which is the right outcome for a manager that cannot be told).

use std::os::unix::net::UnixListener;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// READY=1: the listeners accept calls.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 with the monotonic time, which systemd ≥ 253 requires to match the reload.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the monotonic clock");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// STOPPING=1: draining has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// When systemd asked for watchdog pings (`WatchdogSec=`), pings at half the interval until
/// `stop`. The pings come from the async runtime, so a wedged runtime stops them and systemd
/// restarts the daemon.
pub fn spawn_watchdog(stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(1));
    tracing::info!(?interval, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}

/// The socket taken by [`capture_passed_socket`], until `serve` takes it.
static CAPTURED: OnceLock<Mutex<Option<std::io::Result<Option<UnixListener>>>>> = OnceLock::new();

/// Takes the socket systemd passed, if any, and clears `LISTEN_FDS`/`LISTEN_PID`. Call it
/// first thing in `main`, before any thread starts: clearing the environment is only sound
/// while the process has one thread.
pub fn capture_passed_socket() {
    let taken = take_passed_socket();
    let _ = CAPTURED.set(Mutex::new(Some(taken)));
}

/// The Unix listening socket systemd passed (`LISTEN_FDS`, for this process by
/// `LISTEN_PID`), if any: the one [`capture_passed_socket`] took, or else taken now.
pub fn passed_unix_listener() -> std::io::Result<Option<UnixListener>> {
    match CAPTURED.get() {
        Some(slot) => slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(Ok(None)),
        None => take_passed_socket(),
    }
}

fn take_passed_socket() -> std::io::Result<Option<UnixListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    if fds.len() > 1 {
        tracing::warn!(
            count = fds.len(),
            "systemd passed several sockets; only the first (a Unix stream socket) is used"
        );
    }
    let listener = fds.take_unix_listener(0)?;
    if let Some(listener) = &listener {
        listener.set_nonblocking(true)?;
    }
    Ok(listener)
}
