//! Admission control: who may call what, how often, how many at once and how much.
//!
//! [`Admission::admit`] runs after the request is understood (tool found, arguments and
//! environment allowed) and before anything is spawned. In order: the caller must be known and
//! listed in the tool's `callers` (default deny; the daemon's `default_callers` apply to tools
//! that do not say); the tool's circuit breaker must be closed; a concurrency slot (global and
//! per tool) is taken, waiting in a bounded queue at most; one call is taken from the rate
//! buckets (per caller, per tool, per caller on the tool; all or none); and the quotas are
//! charged a reservation (all or none, committed before the run).
//!
//! It gives a [`Permit`]. Invariants: the permit's slots are released when it is dropped, on
//! every path (success, refusal, panic, cancellation); [`Permit::settle`] replaces the quota
//! reservation by the measured usage and tells the breaker how the run went; a permit dropped
//! without settling leaves its reservation counted (over-count, never under-count).
//!
//! Security assumptions: the caller's identity comes from [`crate::auth`], never from the
//! request; an unidentifiable caller is refused; a store failure refuses unless the operator
//! chose `on_store_failure = "local"`.

pub mod breaker;
pub mod concurrency;
pub mod config;
pub mod quota;
pub mod rate;
pub mod spec;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Caller;
use crate::policy::{PolicySet, Tool};
use crate::supervise::Outcome;
use breaker::{Breaker, Ticket, Verdict};
use concurrency::Limiter;
use quota::{Amounts, Metric, Period, Quota};
use rate::Rate;
use store::{Bucket, Charge, Store};

pub use spec::ToolAdmission;

/// Who a tool's `callers` entry admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every identified caller.
    Any,
    /// A Unix-socket caller whose uid has this user name.
    User(String),
    /// A Unix-socket caller whose gid, or whose user's groups, include this group name.
    Group(String),
    /// A Unix-socket caller with this uid.
    Uid(u32),
    /// A TLS client whose certificate's CN or one of its SANs is this name.
    Cert(String),
    /// A TCP caller that presented the bearer token configured under this name.
    Token(String),
}

impl Selector {
    /// Parses `any`, `user:NAME`, `group:NAME`, `uid:N`, `cert:NAME`, `token:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "any" {
            return Ok(Self::Any);
        }
        let bad = || {
            format!(
                "`{text}` is not a caller: use any, user:NAME, group:NAME, uid:N, cert:NAME or token:NAME"
            )
        };
        let (kind, value) = text.split_once(':').ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        Ok(match kind {
            "user" => Self::User(value.to_owned()),
            "group" => Self::Group(value.to_owned()),
            "uid" => Self::Uid(value.parse().map_err(|_| bad())?),
            "cert" => Self::Cert(value.to_owned()),
            "token" => Self::Token(value.to_owned()),
            _ => return Err(bad()),
        })
    }

    /// Whether this selector admits `caller`.
    pub fn matches(&self, caller: &Caller) -> bool {
        match (self, caller) {
            (_, Caller::Unknown) => false,
            (Self::Any, _) => true,
            (Self::Uid(want), Caller::Unix { uid, .. }) => want == uid,
            (Self::User(want), Caller::Unix { user, .. }) => user.as_ref() == Some(want),
            (Self::Group(want), Caller::Unix { groups, .. }) => groups.contains(want),
            (Self::Cert(want), Caller::Tcp { cert: Some(c), .. }) => {
                c.cn.as_ref() == Some(want) || c.san.contains(want)
            }
            (Self::Token(want), Caller::Tcp { token: Some(t), .. }) => t == want,
            _ => false,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::User(v) => write!(f, "user:{v}"),
            Self::Group(v) => write!(f, "group:{v}"),
            Self::Uid(v) => write!(f, "uid:{v}"),
            Self::Cert(v) => write!(f, "cert:{v}"),
            Self::Token(v) => write!(f, "token:{v}"),
        }
    }
}

/// Daemon-wide admission settings (the config's `default_callers` and `[admission]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Callers of tools whose policy has no `callers` key. Empty: nobody.
    pub default_callers: Vec<Selector>,
    /// Most invocations in flight in all.
    pub max_concurrent: Option<usize>,
    /// Most invocations waiting for a slot (per limit); beyond, shed at once.
    pub max_queued: usize,
    /// How long a call may wait for a slot.
    pub queue_timeout: Duration,
    /// Each caller across all tools.
    pub per_caller_rate: Option<Rate>,
    /// Each caller across all tools.
    pub caller_quota: Option<Quota>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_callers: Vec::new(),
            max_concurrent: None,
            max_queued: 64,
            queue_timeout: Duration::from_secs(5),
            per_caller_rate: None,
            caller_quota: None,
        }
    }
}

/// Which bucket refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateScope {
    /// The caller across all tools.
    Caller,
    /// The tool, all callers together.
    Tool,
    /// The caller on this tool.
    CallerTool,
}

impl RateScope {
    fn key(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Tool => "tool",
            Self::CallerTool => "caller_tool",
        }
    }
}

/// Why admission refused a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection proved no identity admission can count.
    #[error("the caller could not be identified, so nothing may be called")]
    UnknownCaller,
    /// The tool's callers do not include this caller.
    #[error(
        "caller `{caller}` may not call tool `{tool}` (rule admission.callers); call ListTools for the tools you may use"
    )]
    NotAllowed {
        /// The tool.
        tool: String,
        /// The caller's principal.
        caller: String,
    },
    /// The tool's breaker is open.
    #[error(
        "tool `{tool}` is failing on this host and is paused; retry in {}s (rule admission.breaker)",
        retry_after.as_secs().max(1)
    )]
    CircuitOpen {
        /// The tool.
        tool: String,
        /// Until the next probe.
        retry_after: Duration,
    },
    /// A rate limit refused the call.
    #[error(
        "rate limit {rate} for {} reached; retry in {:.3}s (rule admission.rate.{})",
        match scope { RateScope::Caller => "you across all tools".to_owned(), RateScope::Tool => format!("tool `{tool}`"), RateScope::CallerTool => format!("you on tool `{tool}`") },
        retry_after.as_secs_f64(),
        scope.key()
    )]
    RateLimited {
        /// Which bucket.
        scope: RateScope,
        /// The tool.
        tool: String,
        /// The limit.
        rate: Rate,
        /// Until a call would be allowed.
        retry_after: Duration,
    },
    /// No concurrency slot within the queue bound and timeout.
    #[error(
        "too many invocations {} are in flight (limit {max}); retry in {}s (rule admission.concurrency.{})",
        if *global { "in all".to_owned() } else { format!("of tool `{tool}`") },
        retry_after.as_secs().max(1),
        if *global { "global" } else { "tool" }
    )]
    Busy {
        /// Whether the global limit refused (else the tool's).
        global: bool,
        /// The tool.
        tool: String,
        /// The limit.
        max: usize,
        /// A reasonable wait.
        retry_after: Duration,
    },
    /// A quota is used up.
    #[error(
        "quota of {} per {period} {} is used up ({} used); it resets in {}s (rule admission.quota.{})",
        metric.show(*limit),
        match tool { Some(t) => format!("for you on tool `{t}`"), None => "for you across all tools".to_owned() },
        metric.show(*used),
        resets_in.as_secs().max(1),
        metric.key()
    )]
    QuotaExceeded {
        /// Which metric.
        metric: Metric,
        /// The tool, for a tool's quota.
        tool: Option<String>,
        /// The quota's period.
        period: Period,
        /// Used so far, reservations included.
        used: u64,
        /// The limit.
        limit: u64,
        /// Until the window ends.
        resets_in: Duration,
    },
    /// The limits store failed and the config says to refuse.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Whether `caller` may call `tool`: the tool's `callers`, or `default_callers` when it names
/// none (default deny: an empty list allows nobody). The one authorization rule, shared by
/// the daemon and `toolgate policy explain`.
pub fn may_call(default_callers: &[Selector], caller: &Caller, tool: &Tool) -> bool {
    tool.admission
        .callers
        .as_deref()
        .unwrap_or(default_callers)
        .iter()
        .any(|s| s.matches(caller))
}

impl Error {
    /// The audit record's rule.
    pub fn rule(&self) -> String {
        match self {
            Self::UnknownCaller | Self::NotAllowed { .. } => "admission.callers".into(),
            Self::CircuitOpen { .. } => "admission.breaker".into(),
            Self::RateLimited { scope, .. } => format!("admission.rate.{}", scope.key()),
            Self::Busy { global: true, .. } => "admission.concurrency.global".into(),
            Self::Busy { .. } => "admission.concurrency.tool".into(),
            Self::QuotaExceeded { metric, .. } => format!("admission.quota.{}", metric.key()),
            Self::Store(_) => "admission.store".into(),
        }
    }

    /// How long the caller should wait before retrying, when waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. }
            | Self::RateLimited { retry_after, .. }
            | Self::Busy { retry_after, .. } => Some(*retry_after),
            Self::QuotaExceeded { resets_in, .. } => Some(*resets_in),
            _ => None,
        }
    }
}

/// One limit as a caller sees it in `GetUsage`.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitUsage {
    /// The rule that would refuse, e.g. `admission.quota.cpu_seconds`.
    pub rule: String,
    /// The tool, or `None` for limits across all tools.
    pub tool: Option<String>,
    /// The limit in words, e.g. `30/minute (burst 30)` or `100 invocations per day`.
    pub limit: String,
    /// The limit, in `unit`s (for rates: the burst).
    pub limit_value: u64,
    /// Used in the current window (reservations included), in `unit`s.
    pub used: u64,
    /// Left now, in `unit`s.
    pub remaining: u64,
    /// `calls`, `invocations`, `milliseconds` or `bytes`.
    pub unit: &'static str,
    /// Until it is whole again (rates) or resets (quotas).
    pub resets_in: Duration,
}

/// The admission stage: settings, the store, and per-tool slots and breakers.
pub struct Admission {
    settings: Settings,
    store: Arc<Store>,
    global: Option<Limiter>,
    tools: HashMap<String, Limiter>,
    breakers: HashMap<String, Arc<Breaker>>,
}

/// A call that passed admission. Dropping it releases its concurrency slots; see
/// [`Permit::settle`] for the rest.
#[must_use = "the permit holds the call's concurrency slots and quota reservation"]
pub struct Permit {
    store: Arc<Store>,
    breaker: Option<(Arc<Breaker>, Ticket)>,
    _slots: Vec<OwnedSemaphorePermit>,
    reserved: Vec<(String, Amounts)>,
    max_output: u64,
}

impl Permit {
    /// Records how the run ended: the breaker learns the verdict, and the quota reservation
    /// is replaced by the measured usage. A store failure here is logged; the reservation then
    /// stays counted.
    pub async fn settle(mut self, result: &Result<Outcome, crate::Error>) {
        let verdict = match result {
            Ok(o) if o.timed_out => Verdict::Failure,
            Ok(o) if o.cancelled => Verdict::None,
            Ok(_) => Verdict::Success,
            Err(crate::Error::Sandbox(_) | crate::Error::Supervise(_)) => Verdict::Failure,
            Err(_) => Verdict::None,
        };
        if let Some((breaker, ticket)) = self.breaker.take() {
            breaker.record(ticket, verdict);
        }
        let actual = match result {
            Ok(o) => {
                let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                // Output counted is what the caller got: at most the cap per stream.
                let delivered =
                    o.stdout.total.min(self.max_output) + o.stderr.total.min(self.max_output);
                [
                    1,
                    ms(o.usage.user_cpu + o.usage.system_cpu),
                    ms(o.wall_time),
                    delivered,
                ]
            }
            Err(_) => [1, 0, 0, 0],
        };
        let deltas: Vec<(String, [i64; 4])> = self
            .reserved
            .drain(..)
            .map(|(key, reserved)| (key, quota::settlement(&reserved, &actual)))
            .collect();
        if let Err(error) = self.store.settle(&deltas).await {
            tracing::error!(%error, "quota settlement failed: the reservation stays counted");
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Not settled: the run was abandoned (panic or cancellation); the breaker learns nothing.
        if let Some((breaker, ticket)) = self.breaker.take() {
            breaker.record(ticket, Verdict::None);
        }
    }
}

impl Admission {
    /// The admission stage for the tools of `policy`.
    pub fn new(settings: Settings, store: Store, policy: &PolicySet) -> Self {
        let limiter = |max: usize| Limiter::new(max, settings.max_queued, settings.queue_timeout);
        let global = settings.max_concurrent.map(limiter);
        let mut tools = HashMap::new();
        let mut breakers = HashMap::new();
        for tool in policy.tools() {
            if let Some(max) = tool.admission.max_concurrent {
                tools.insert(tool.name.clone(), limiter(max as usize));
            }
            if let Some(b) = tool.admission.breaker {
                breakers.insert(tool.name.clone(), Arc::new(Breaker::new(b)));
            }
        }
        Self {
            settings,
            store: Arc::new(store),
            global,
            tools,
            breakers,
        }
    }

    /// Whether `caller` may call `tool` at all (also what ListTools shows).
    pub fn may_call(&self, caller: &Caller, tool: &Tool) -> bool {
        may_call(&self.settings.default_callers, caller, tool)
    }

    /// Calls that fell back to local limits because Redis failed.
    pub fn store_fallbacks(&self) -> u64 {
        self.store.fallbacks()
    }

    /// Admits one call of `tool` by `caller`, which may run up to `timeout`.
    pub async fn admit(
        &self,
        caller: &Caller,
        tool: &Tool,
        timeout: Duration,
    ) -> Result<Permit, Error> {
        let principal = caller.principal().ok_or(Error::UnknownCaller)?;
        if !self.may_call(caller, tool) {
            return Err(Error::NotAllowed {
                tool: tool.name.clone(),
                caller: principal,
            });
        }
        let mut permit = Permit {
            store: Arc::clone(&self.store),
            breaker: None,
            _slots: Vec::new(),
            reserved: Vec::new(),
            max_output: tool.max_output,
        };
        if let Some(breaker) = self.breakers.get(&tool.name) {
            let ticket = breaker.admit().map_err(|retry_after| Error::CircuitOpen {
                tool: tool.name.clone(),
                retry_after,
            })?;
            permit.breaker = Some((Arc::clone(breaker), ticket));
        }
        // The tool's slot first, then the global one: one order everywhere, so no deadlock.
        if let Some(limiter) = self.tools.get(&tool.name) {
            let slot = limiter.acquire().await.map_err(|shed| Error::Busy {
                global: false,
                tool: tool.name.clone(),
                max: limiter.max(),
                retry_after: shed.retry_after,
            })?;
            permit._slots.push(slot);
        }
        if let Some(limiter) = &self.global {
            let slot = limiter.acquire().await.map_err(|shed| Error::Busy {
                global: true,
                tool: tool.name.clone(),
                max: limiter.max(),
                retry_after: shed.retry_after,
            })?;
            permit._slots.push(slot);
        }

        let buckets = self.buckets(&principal, tool);
        if let Err((i, retry_after)) = self
            .store
            .take_rate(
                &buckets
                    .iter()
                    .map(|(_, _, b)| b.clone())
                    .collect::<Vec<_>>(),
            )
            .await?
        {
            let (scope, rate, _) = &buckets[i];
            return Err(Error::RateLimited {
                scope: *scope,
                tool: tool.name.clone(),
                rate: *rate,
                retry_after,
            });
        }

        let now = SystemTime::now();
        let charges = self.charges(&principal, tool, timeout, now);
        let want: Vec<Charge> = charges.iter().map(|(_, c)| c.clone()).collect();
        match self.store.reserve(&want).await? {
            Ok(taken) => {
                permit.reserved = want.into_iter().map(|c| c.key).zip(taken).collect();
                Ok(permit)
            }
            Err((i, exceeded)) => {
                let (for_tool, q) = &charges[i];
                Err(Error::QuotaExceeded {
                    metric: exceeded.metric,
                    tool: for_tool.then(|| tool.name.clone()),
                    period: q.quota_period(),
                    used: exceeded.used,
                    limit: exceeded.limit,
                    resets_in: q.keep.saturating_sub(KEEP_SLACK),
                })
            }
        }
    }

    /// The rate buckets that apply to `principal` calling `tool`.
    fn buckets(&self, principal: &str, tool: &Tool) -> Vec<(RateScope, Rate, Bucket)> {
        let bucket = |key: String, rate: &Rate| Bucket {
            key,
            interval_us: rate.interval_us(),
            burst: u64::from(rate.burst),
        };
        let mut out = Vec::new();
        if let Some(r) = &self.settings.per_caller_rate {
            out.push((
                RateScope::Caller,
                *r,
                bucket(format!("rate:caller:{principal}"), r),
            ));
        }
        if let Some(r) = &tool.admission.per_tool {
            out.push((
                RateScope::Tool,
                *r,
                bucket(format!("rate:tool:{}", tool.name), r),
            ));
        }
        if let Some(r) = &tool.admission.per_caller {
            out.push((
                RateScope::CallerTool,
                *r,
                bucket(format!("rate:caller_tool:{principal}:{}", tool.name), r),
            ));
        }
        out
    }

    /// The quota counters that apply, each with whether it is the tool's (else caller-wide).
    fn charges(
        &self,
        principal: &str,
        tool: &Tool,
        timeout: Duration,
        now: SystemTime,
    ) -> Vec<(bool, Charge)> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let want = [1, ms, ms, tool.max_output.saturating_mul(2)];
        let charge = |scope: String, q: &Quota| {
            let (window, left) = q.period.window(now);
            Charge {
                key: format!("quota:{scope}:{}:{window}", q.period),
                limits: q.limits,
                want,
                keep: left + KEEP_SLACK,
            }
        };
        let mut out = Vec::new();
        if let Some(q) = &self.settings.caller_quota {
            out.push((false, charge(format!("caller:{principal}"), q)));
        }
        if let Some(q) = &tool.admission.quota {
            out.push((
                true,
                charge(format!("caller_tool:{principal}:{}", tool.name), q),
            ));
        }
        out
    }

    /// The limits that apply to `caller` on the tools it may call (or only `only`), with what
    /// is used and left.
    pub async fn usage(
        &self,
        caller: &Caller,
        policy: &PolicySet,
        only: Option<&str>,
    ) -> Result<Vec<LimitUsage>, Error> {
        let principal = caller.principal().ok_or(Error::UnknownCaller)?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        let tools: Vec<&Arc<Tool>> = policy
            .tools()
            .filter(|t| only.is_none_or(|name| t.name == name))
            .filter(|t| self.may_call(caller, t))
            .collect();
        let mut seen_caller_wide = false;
        for tool in tools {
            for (scope, rate, bucket) in self.buckets(&principal, tool) {
                if scope == RateScope::Caller && seen_caller_wide {
                    continue;
                }
                let (remaining, full_in) = self.store.peek_rate(&bucket).await?;
                out.push(LimitUsage {
                    rule: format!("admission.rate.{}", scope.key()),
                    tool: (scope != RateScope::Caller).then(|| tool.name.clone()),
                    limit: rate.to_string(),
                    limit_value: u64::from(rate.burst),
                    used: u64::from(rate.burst).saturating_sub(remaining),
                    remaining,
                    unit: "calls",
                    resets_in: full_in,
                });
            }
            for (for_tool, charge) in self.charges(&principal, tool, Duration::ZERO, now) {
                if !for_tool && seen_caller_wide {
                    continue;
                }
                let used = self.store.read(&charge.key).await?;
                for metric in quota::METRICS {
                    let Some(limit) = charge.limits[metric.index()] else {
                        continue;
                    };
                    let used = used[metric.index()];
                    out.push(LimitUsage {
                        rule: format!("admission.quota.{}", metric.key()),
                        tool: for_tool.then(|| tool.name.clone()),
                        limit: format!("{} per {}", metric.show(limit), charge.quota_period()),
                        limit_value: limit,
                        used,
                        remaining: limit.saturating_sub(used),
                        unit: match metric {
                            Metric::Invocations => "invocations",
                            Metric::CpuSeconds | Metric::WallSeconds => "milliseconds",
                            Metric::OutputBytes => "bytes",
                        },
                        resets_in: charge.keep.saturating_sub(KEEP_SLACK),
                    });
                }
            }
            seen_caller_wide = true;
        }
        Ok(out)
    }
}

/// Counters are kept this long past their window, so a settlement that comes just after the
/// window ended still finds its counter.
const KEEP_SLACK: Duration = Duration::from_secs(3600);

impl Charge {
    /// The period, read back from the key (the key names it).
    fn quota_period(&self) -> Period {
        if self.key.contains(":day:") {
            Period::Day
        } else {
            Period::Hour
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CertIdentity;

    #[test]
    fn selectors_parse_and_match_only_their_kind() {
        let unix = Caller::Unix {
            uid: 1000,
            gid: 100,
            pid: None,
            user: Some("alice".into()),
            groups: vec!["users".into(), "agents".into()],
        };
        let tls = Caller::Tcp {
            addr: "127.0.0.1:9".parse().unwrap(),
            cert: Some(CertIdentity {
                cn: Some("agent-1".into()),
                san: vec!["agent-1.example".into()],
            }),
            token: None,
        };
        let yes = |s: &str, c: &Caller| Selector::parse(s).unwrap().matches(c);
        assert!(yes("user:alice", &unix) && yes("group:agents", &unix) && yes("uid:1000", &unix));
        assert!(!yes("user:bob", &unix) && !yes("uid:0", &unix) && !yes("cert:alice", &unix));
        assert!(yes("cert:agent-1", &tls) && yes("cert:agent-1.example", &tls));
        assert!(!yes("uid:1000", &tls) && !yes("token:agent-1", &tls));
        assert!(yes("any", &tls) && !yes("any", &Caller::Unknown));
        for bad in ["uid:x", "user:", "root", "host:x"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
