//! The daemon's Prometheus metrics, in one registry exposed as text by [`super::metrics_server`].
//!
//! Label values come from a closed set (decisions, outcomes, rules) or from the loaded policy
//! (tool names): never from what a caller sends, so a caller cannot grow the number of series.
//! Requests naming an unknown tool are counted under `tool=""`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of `toolgate_invocations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    /// The tool (empty when no policy defines the name asked for).
    pub tool: String,
    /// `allowed` or `refused`.
    pub decision: &'static str,
    /// `success`, `failure` (non-zero exit), `signaled`, `timed_out`, `cancelled`, `error`
    /// (could not start) or `refused`.
    pub outcome: &'static str,
}

/// Labels of `toolgate_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// The audit record's `rule`.
    pub rule: String,
}

/// Labels of `toolgate_policy_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Metrics of the audit log's writer.
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    /// Time to write (and fsync) one batch.
    pub write_seconds: Histogram,
    /// Failed writes or fsyncs.
    pub write_errors: Counter,
    /// Records written.
    pub records: Counter,
    /// 1 while the log cannot be written.
    pub failing: Gauge,
    /// `seq` of the newest record: the head to compare with a verified chain.
    pub head_seq: Gauge,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        Self {
            write_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            write_errors: Counter::default(),
            records: Counter::default(),
            failing: Gauge::default(),
            head_seq: Gauge::default(),
        }
    }
}

/// Every metric of the daemon. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Invocations by tool, decision and outcome.
    pub invocations: Family<InvocationLabels, Counter>,
    /// Refusals by the rule that refused.
    pub refusals: Family<RuleLabels, Counter>,
    /// Time from request to admission decision.
    pub admission_seconds: Histogram,
    /// Time to spawn the sandboxed tool.
    pub sandbox_start_seconds: Histogram,
    /// Wall time of runs.
    pub run_seconds: Histogram,
    /// Invocations running now.
    pub in_flight: Gauge,
    /// Policy reloads by result.
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// The audit log.
    pub audit: AuditMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("toolgate");
        let metrics = Self {
            registry: Arc::new(Registry::default()),
            invocations: Family::default(),
            refusals: Family::default(),
            admission_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 16)),
            sandbox_start_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            run_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            in_flight: Gauge::default(),
            policy_reloads: Family::default(),
            audit: AuditMetrics::default(),
        };
        registry.register(
            "invocations",
            "Invocations by tool, decision and outcome",
            metrics.invocations.clone(),
        );
        registry.register(
            "refusals",
            "Refused invocations by the rule that refused them",
            metrics.refusals.clone(),
        );
        registry.register(
            "admission_seconds",
            "Time from request to the admission decision",
            metrics.admission_seconds.clone(),
        );
        registry.register(
            "sandbox_start_seconds",
            "Time to prepare and spawn the sandboxed tool",
            metrics.sandbox_start_seconds.clone(),
        );
        registry.register(
            "run_seconds",
            "Wall time of tool runs",
            metrics.run_seconds.clone(),
        );
        registry.register(
            "in_flight",
            "Invocations running now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads by result",
            metrics.policy_reloads.clone(),
        );
        registry.register(
            "audit_write_seconds",
            "Time to write and make durable one batch of audit records",
            metrics.audit.write_seconds.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Failed audit log writes or fsyncs",
            metrics.audit.write_errors.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records written",
            metrics.audit.records.clone(),
        );
        registry.register(
            "audit_failing",
            "1 while the audit log cannot be written",
            metrics.audit.failing.clone(),
        );
        registry.register(
            "audit_head_seq",
            "seq of the newest audit record",
            metrics.audit.head_seq.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// The text exposition of every metric (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a refusal under its rule.
    pub fn refused(&self, tool: Option<&str>, rule: &str) {
        self.invocations
            .get_or_create(&InvocationLabels {
                tool: tool.unwrap_or_default().to_owned(),
                decision: "refused",
                outcome: "refused",
            })
            .inc();
        self.refusals
            .get_or_create(&RuleLabels {
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// Counts an allowed invocation by how it ended.
    pub fn ran(&self, tool: &str, outcome: &'static str) {
        self.invocations
            .get_or_create(&InvocationLabels {
                tool: tool.to_owned(),
                decision: "allowed",
                outcome,
            })
            .inc();
    }

    /// Counts a policy reload.
    pub fn reloaded(&self, ok: bool) {
        self.policy_reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.refused(None, "policy.unknown_tool");
        m.ran("echo", "success");
        m.reloaded(false);
        m.audit.records.inc();
        let text = m.encode();
        for needle in [
            "toolgate_invocations_total{tool=\"echo\",decision=\"allowed\",outcome=\"success\"} 1",
            "toolgate_refusals_total{rule=\"policy.unknown_tool\"} 1",
            "toolgate_policy_reloads_total{result=\"failed\"} 1",
            "toolgate_audit_records_total 1",
            "toolgate_build_info{version=",
            "# TYPE toolgate_run_seconds histogram",
            "toolgate_in_flight 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
