//! Hot reload of the policy set, on SIGHUP and on changes in the policy directory.
//!
//! A reload loads and validates the whole directory (as at start) and, only if every file is
//! valid, swaps the new set in atomically. An invalid set is rejected with every problem at its
//! file:line:column; the set in force stays. Either way the reload is logged, counted
//! (`toolgate_policy_reloads_total`) and audited (`policy_reload`, `rule = "policy.reload"`).
//! Invocations in flight keep the tool they were admitted with.
//!
//! Directory changes are debounced: an editor's save is several events (write a temporary,
//! rename, change attributes), and a checkout touches many files; one reload follows once the
//! directory has been quiet for [`DEBOUNCE`]. Only events on `*.toml` files (and on `..`
//! entries, which is how Kubernetes swaps a mounted ConfigMap) count, so reading the files
//! during a reload does not trigger another one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::systemd;
use crate::audit::{self, Kind};
use crate::gate::Gate;
use crate::policy::{self, PolicySet, Vars};

/// Quiet time after the last directory event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// SIGHUP (`systemctl reload`).
    Signal,
    /// A change in the policy directory.
    Watch,
}

/// The audit record of a reload.
#[derive(Debug, Serialize)]
pub struct ReloadRecord {
    /// When.
    pub time: String,
    /// Always `policy_reload`.
    pub event: &'static str,
    /// Always `policy.reload`.
    pub rule: &'static str,
    /// `applied` or `rejected`.
    pub decision: &'static str,
    /// What asked for it.
    pub trigger: Trigger,
    /// The directory loaded.
    pub policy_dir: String,
    /// The tools now in force, when applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Why it was rejected: every problem, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Reloads whenever `triggers` says so, until `stop`.
pub async fn run(
    gate: Arc<Gate>,
    dir: PathBuf,
    vars: Vars,
    mut triggers: mpsc::Receiver<Trigger>,
    stop: CancellationToken,
) {
    loop {
        let mut trigger = tokio::select! {
            () = stop.cancelled() => return,
            t = triggers.recv() => match t { Some(t) => t, None => return },
        };
        if trigger == Trigger::Watch {
            // Wait for quiet; a signal meanwhile still means one reload.
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(DEBOUNCE) => break,
                    more = triggers.recv() => match more {
                        Some(Trigger::Signal) => trigger = Trigger::Signal,
                        Some(Trigger::Watch) => {}
                        None => return,
                    },
                }
            }
        }
        reload(&gate, &dir, &vars, trigger).await;
    }
}

/// Loads `dir` and puts it in force if valid.
pub async fn reload(gate: &Gate, dir: &Path, vars: &Vars, trigger: Trigger) {
    systemd::reloading();
    let (load_dir, load_vars) = (dir.to_owned(), vars.clone());
    let loaded = tokio::task::spawn_blocking(move || PolicySet::load_dir(&load_dir, &load_vars))
        .await
        .unwrap_or_else(|join| {
            Err(policy::Error::ReadDir {
                path: dir.to_owned(),
                source: std::io::Error::other(join.to_string()),
            })
        });
    let mut record = ReloadRecord {
        time: audit::now(),
        event: "policy_reload",
        rule: "policy.reload",
        decision: "applied",
        trigger,
        policy_dir: dir.display().to_string(),
        tools: None,
        message: None,
    };
    match loaded {
        Ok(set) => {
            let tools: Vec<String> = set.tools().map(|t| t.name.clone()).collect();
            gate.replace_policy(set);
            gate.metrics().reloaded(true);
            tracing::info!(?trigger, ?tools, "policies reloaded");
            record.tools = Some(tools);
        }
        Err(e) => {
            gate.metrics().reloaded(false);
            let message = match &e {
                policy::Error::Invalid(diagnostics) => diagnostics.to_string(),
                other => other.to_string(),
            };
            tracing::error!(
                ?trigger,
                errors = message,
                "policy reload rejected; the policies in force stay"
            );
            record.decision = "rejected";
            record.message = Some(message);
        }
    }
    if let Err(e) = gate.audit().append(&record, Kind::Reload).await {
        tracing::error!(error = %e, "policy reload record not written yet");
    }
    systemd::ready("serving");
}

/// Watches `dir` and sends [`Trigger::Watch`] on relevant changes. The watcher stops when the
/// returned value is dropped.
pub fn watch(
    dir: &Path,
    triggers: mpsc::Sender<Trigger>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            // An overflowed queue lost events: reload to be sure.
            let _ = triggers.try_send(Trigger::Watch);
            return;
        };
        let relevant_kind = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
        ) && !matches!(
            event.kind,
            EventKind::Modify(notify::event::ModifyKind::Metadata(
                notify::event::MetadataKind::AccessTime
            ))
        );
        let relevant_path = event.paths.iter().any(|p| {
            p.extension().is_some_and(|e| e == "toml")
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        });
        if relevant_kind && relevant_path {
            // A full channel already holds a pending reload.
            let _ = triggers.try_send(Trigger::Watch);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reload record is part of the audit log's contract, like the invocation record.
    #[test]
    fn reload_record_shape_is_stable() {
        let rejected = ReloadRecord {
            time: "2026-11-21T13:00:00.000Z".into(),
            event: "policy_reload",
            rule: "policy.reload",
            decision: "rejected",
            trigger: Trigger::Watch,
            policy_dir: "/etc/toolgate/policies.d".into(),
            tools: None,
            message: Some("/etc/toolgate/policies.d/x.toml:3:1: unknown field `timeuot`".into()),
        };
        insta::assert_json_snapshot!(rejected);
    }
}
