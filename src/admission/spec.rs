//! Admission settings as written: the policy keys of a tool and the daemon's `[admission]`
//! table, with their compilation into checked values.
//!
//! Policy keys of `[tool.NAME]`:
//! ```toml
//! callers = ["user:alice", "group:agents", "uid:1000", "cert:agent-1.example", "token:ci-bot"]
//! rate_limit = { per_caller = "30/minute", per_tool = "600/minute", burst = 10 }
//! max_concurrent = 4
//! quota = { period = "day", invocations = 1000, cpu_seconds = 600, wall_seconds = 3600, output_bytes = "100MiB" }
//! breaker = { failures = 5, cooldown = "30s" }
//! ```

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Selector;
use super::breaker;
use super::quota::{Period, Quota};
use super::rate::Rate;

/// `rate_limit` of a tool: `per_caller` is each caller on this tool, `per_tool` all callers of
/// it together; `burst` (default: the rate's count) applies to both.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Each caller on this tool, e.g. `"30/minute"`.
    pub per_caller: Option<Spanned<String>>,
    /// All callers of this tool together.
    pub per_tool: Option<Spanned<String>>,
    /// Calls allowed at once after a quiet spell.
    pub burst: Option<u32>,
}

/// A quota table: a period and limits per metric.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// `"hour"` or `"day"`.
    pub period: Spanned<String>,
    /// Calls per period.
    pub invocations: Option<u64>,
    /// CPU-seconds (user + system) per period.
    pub cpu_seconds: Option<u64>,
    /// Wall-clock seconds per period.
    pub wall_seconds: Option<u64>,
    /// Output bytes per period: a number or `"100MiB"`.
    pub output_bytes: Option<Spanned<toml::Value>>,
}

/// `breaker` of a tool.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Consecutive infrastructure failures that open it.
    pub failures: u32,
    /// How long it stays open, e.g. `"30s"`.
    pub cooldown: Spanned<String>,
}

/// A tool's admission keys, compiled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolAdmission {
    /// Who may call; `None` means the daemon's `default_callers`.
    pub callers: Option<Vec<Selector>>,
    /// Each caller on this tool.
    pub per_caller: Option<Rate>,
    /// All callers of this tool together.
    pub per_tool: Option<Rate>,
    /// Most invocations in flight.
    pub max_concurrent: Option<u32>,
    /// Per caller, on this tool.
    pub quota: Option<Quota>,
    /// Circuit breaker.
    pub breaker: Option<breaker::Settings>,
}

/// Problems with their spans, as the policy compiler reports them.
pub type Problems = Vec<(Range<usize>, String)>;

/// The raw keys of one tool.
#[derive(Debug, Default)]
pub struct ToolKeys {
    /// `callers`.
    pub callers: Option<Vec<Spanned<String>>>,
    /// `rate_limit`.
    pub rate_limit: Option<Spanned<RateLimitSpec>>,
    /// `max_concurrent`.
    pub max_concurrent: Option<Spanned<u32>>,
    /// `quota`.
    pub quota: Option<Spanned<QuotaSpec>>,
    /// `breaker`.
    pub breaker: Option<Spanned<BreakerSpec>>,
}

/// Compiles a tool's admission keys, collecting every problem with its span.
pub fn compile_tool(keys: ToolKeys, problems: &mut Problems) -> ToolAdmission {
    let mut out = ToolAdmission::default();
    if let Some(list) = keys.callers {
        let mut selectors = Vec::new();
        for s in list {
            match Selector::parse(s.get_ref()) {
                Ok(sel) => selectors.push(sel),
                Err(m) => problems.push((s.span(), m)),
            }
        }
        out.callers = Some(selectors);
    }
    if let Some(spec) = keys.rate_limit {
        let span = spec.span();
        let spec = spec.into_inner();
        let mut rate = |r: &Option<Spanned<String>>| {
            r.as_ref().and_then(|r| {
                Rate::parse(r.get_ref(), spec.burst)
                    .map_err(|m| problems.push((r.span(), m)))
                    .ok()
            })
        };
        out.per_caller = rate(&spec.per_caller);
        out.per_tool = rate(&spec.per_tool);
        if spec.per_caller.is_none() && spec.per_tool.is_none() {
            problems.push((span, "rate_limit needs per_caller or per_tool".to_owned()));
        }
    }
    if let Some(n) = keys.max_concurrent {
        if *n.get_ref() == 0 {
            problems.push((
                n.span(),
                "max_concurrent must be at least 1; remove the tool instead".to_owned(),
            ));
        }
        out.max_concurrent = Some(n.into_inner());
    }
    if let Some(q) = keys.quota {
        let span = q.span();
        match compile_quota(q.into_inner()) {
            Ok(q) => out.quota = Some(q),
            Err((inner, m)) => problems.push((inner.unwrap_or(span), m)),
        }
    }
    if let Some(b) = keys.breaker {
        let span = b.span();
        let b = b.into_inner();
        match crate::policy::parse_duration(b.cooldown.get_ref()) {
            Ok(cooldown) if b.failures > 0 => {
                out.breaker = Some(breaker::Settings {
                    failures: b.failures,
                    cooldown,
                });
            }
            Ok(_) => problems.push((span, "breaker failures must be at least 1".to_owned())),
            Err(m) => problems.push((b.cooldown.span(), m)),
        }
    }
    out
}

/// Compiles a quota table; the error carries the span of the bad value when known.
pub fn compile_quota(spec: QuotaSpec) -> Result<Quota, (Option<Range<usize>>, String)> {
    let period = Period::parse(spec.period.get_ref()).map_err(|m| (Some(spec.period.span()), m))?;
    let output = match &spec.output_bytes {
        None => None,
        Some(v) => Some(match v.get_ref() {
            toml::Value::Integer(n) if *n >= 0 => u64::try_from(*n).unwrap_or(0),
            toml::Value::String(s) => {
                crate::policy::parse_byte_size(s).map_err(|m| (Some(v.span()), m))?
            }
            _ => {
                return Err((
                    Some(v.span()),
                    "output_bytes must be a number of bytes or a size like \"100MiB\"".to_owned(),
                ));
            }
        }),
    };
    let ms = |s: Option<u64>| s.map(|s| s.saturating_mul(1000));
    let limits = [
        spec.invocations,
        ms(spec.cpu_seconds),
        ms(spec.wall_seconds),
        output,
    ];
    if limits.iter().all(Option::is_none) {
        return Err((
            None,
            "a quota needs at least one of invocations, cpu_seconds, wall_seconds, output_bytes"
                .to_owned(),
        ));
    }
    Ok(Quota { period, limits })
}

/// Parses a duration written in the config, with the key for the message.
pub fn duration(key: &str, text: &str) -> Result<Duration, String> {
    crate::policy::parse_duration(text).map_err(|m| format!("{key}: {m}"))
}
