//! The daemon config's `[admission]` table, and opening the store it names.
//!
//! ```toml
//! [admission]
//! max_concurrent = 64            # invocations in flight in all (default: no limit)
//! max_queued = 64                # waiting for a slot, per limit; beyond, shed at once
//! queue_timeout = "5s"           # longest wait for a slot
//! per_caller_rate = "600/minute" # each caller across all tools
//! burst = 20                     # burst of per_caller_rate (default: its count)
//! caller_quota = { period = "day", invocations = 10000, cpu_seconds = 3600 }
//! state_fsync = false            # flush the quota journal before admitting (survive power loss, not only kill -9)
//! redis = "redis://127.0.0.1:6379/"  # or rediss://, redis+sentinel://h:26379,h2:26379/master
//! redis_cluster = ["redis://a:7000", "redis://b:7001"]
//! redis_prefix = "toolgate"      # key prefix and Cluster hash tag
//! redis_timeout = "500ms"        # per operation
//! on_store_failure = "refuse"    # or "local": use this daemon's own limits while Redis fails
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::rate::Rate;
use super::spec::{self, QuotaSpec};
use super::store::{self, Embedded, OnFailure, Redis, Store, redis::Target};
use super::{Selector, Settings};

/// `[admission]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionFile {
    max_concurrent: Option<usize>,
    max_queued: Option<usize>,
    queue_timeout: Option<String>,
    per_caller_rate: Option<String>,
    burst: Option<u32>,
    caller_quota: Option<QuotaSpec>,
    state_fsync: Option<bool>,
    redis: Option<String>,
    redis_cluster: Option<Vec<String>>,
    redis_prefix: Option<String>,
    redis_timeout: Option<String>,
    on_store_failure: Option<String>,
}

/// Where the limits live.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Directory of the embedded database.
    pub state_dir: PathBuf,
    /// Whether quota journal records are flushed (group commit) before a call proceeds.
    pub fsync: bool,
    /// The shared store, when configured.
    pub redis: Option<Target>,
    /// Key prefix (and hash tag) in Redis.
    pub redis_prefix: String,
    /// Timeout of one Redis operation.
    pub redis_timeout: Duration,
    /// What to do when Redis fails.
    pub on_failure: OnFailure,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/toolgate"),
            fsync: false,
            redis: None,
            redis_prefix: "toolgate".to_owned(),
            redis_timeout: Duration::from_millis(500),
            on_failure: OnFailure::Refuse,
        }
    }
}

/// Compiles `default_callers` and `[admission]` over `settings` and `store`.
pub fn apply(
    default_callers: Option<Vec<String>>,
    file: AdmissionFile,
    settings: &mut Settings,
    store: &mut StoreConfig,
) -> Result<(), String> {
    if let Some(list) = default_callers {
        settings.default_callers = list
            .iter()
            .map(|s| Selector::parse(s).map_err(|m| format!("default_callers: {m}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(n) = file.max_concurrent {
        if n == 0 {
            return Err("admission.max_concurrent must be at least 1".to_owned());
        }
        settings.max_concurrent = Some(n);
    }
    if let Some(n) = file.max_queued {
        settings.max_queued = n;
    }
    if let Some(t) = file.queue_timeout {
        settings.queue_timeout = spec::duration("admission.queue_timeout", &t)?;
    }
    if let Some(r) = file.per_caller_rate {
        settings.per_caller_rate = Some(
            Rate::parse(&r, file.burst).map_err(|m| format!("admission.per_caller_rate: {m}"))?,
        );
    }
    if let Some(q) = file.caller_quota {
        settings.caller_quota =
            Some(spec::compile_quota(q).map_err(|(_, m)| format!("admission.caller_quota: {m}"))?);
    }
    if let Some(f) = file.state_fsync {
        store.fsync = f;
    }
    store.redis = match (file.redis, file.redis_cluster) {
        (Some(_), Some(_)) => {
            return Err("admission: set redis or redis_cluster, not both".to_owned());
        }
        (Some(url), None) => Some(Target::from_url(&url).map_err(|e| e.to_string())?),
        (None, Some(nodes)) if !nodes.is_empty() => Some(Target::Cluster(nodes)),
        (None, Some(_)) => return Err("admission.redis_cluster lists no node".to_owned()),
        (None, None) => None,
    };
    if let Some(p) = file.redis_prefix {
        if p.is_empty() || p.contains(['{', '}']) {
            return Err("admission.redis_prefix must be non-empty, without braces".to_owned());
        }
        store.redis_prefix = p;
    }
    if let Some(t) = file.redis_timeout {
        store.redis_timeout = spec::duration("admission.redis_timeout", &t)?;
    }
    store.on_failure = match file.on_store_failure.as_deref() {
        None | Some("refuse") => OnFailure::Refuse,
        Some("local") => OnFailure::Local,
        Some(other) => {
            return Err(format!(
                "admission.on_store_failure must be \"refuse\" or \"local\", not \"{other}\""
            ));
        }
    };
    Ok(())
}

/// Opens the store `config` names: always the embedded one; Redis in front of it when set.
pub fn open_store(config: &StoreConfig) -> Result<Store, store::Error> {
    let local = Embedded::open(&config.state_dir, config.fsync)?;
    Ok(match &config.redis {
        None => Store::Embedded(local),
        Some(target) => Store::Redis {
            redis: Box::new(Redis::new(
                target,
                &config.redis_prefix,
                config.redis_timeout,
            )?),
            local,
            on_failure: config.on_failure,
            fallbacks: Default::default(),
        },
    })
}
