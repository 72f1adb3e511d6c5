//! The pipeline of one invocation: policy → command → sandbox → supervise → audit.
//!
//! [`Gate::execute`] takes a transport-free [`Invocation`] (the API layer has already converted
//! the protobuf request and identified the caller) and either refuses it, with an error that
//! names the rule, or runs it. A refused request has one audit record (`refusal`); an allowed
//! one has a `start` record, durable before the tool runs, and an `end` record with its outcome.
//! The checks themselves are the pure function [`check`], which `toolgate policy explain` uses
//! too, so an explanation is never out of step with what the gate does.
//!
//! Admission control ([`crate::admission`]) comes after the request is understood and before
//! the sandbox: its permit moves into the run task, so its concurrency slots are released and
//! its quota settled when the run ends, even when the caller has gone away.
//!
//! A run happens in its own task, tracked for shutdown: if the caller goes away (cancelled RPC,
//! expired deadline) the request future is dropped, which cancels the run's token; the task
//! then kills the tool's process tree, reaps it and writes the end record. The start record is
//! written by that task too, so a caller going away can never leave a start without an end.
//! The daemon's stop token is the parent of every run's token, so stopping the daemon kills
//! every run the same way.
//!
//! The policy set is swapped whole on reload; a run holds the `Arc<Tool>` it was admitted
//! with, so it finishes under the policy it started with. Everything logged during an
//! invocation is inside an `invocation` span carrying its `request_id`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{Admission, Permit};
use crate::audit::redact::{Redactor, Secrets};
use crate::audit::{self, AuditLog, Decision, Kind, OutcomeRecord, Record};
use crate::auth::{self, Caller};
use crate::command::{self, Argv};
use crate::error::Error;
use crate::policy::{PolicySet, Tool};
use crate::sandbox::{self, ExitStatus, Host, Plan};
use crate::supervise::{self, Event, Outcome, Supervision};
use crate::telemetry::Metrics;

/// Size limits on requests, from the daemon's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest `command`, or all `args` together, in bytes.
    pub max_command_bytes: usize,
    /// Largest `stdin`, in bytes.
    pub max_stdin_bytes: usize,
}

/// What to run: the arguments as given, or one command line to split.
#[derive(Clone, Debug)]
pub enum Input {
    /// Arguments after the program, taken as given.
    Args(Vec<String>),
    /// A command line whose first word names the program.
    Command(String),
}

/// One request, as the API layer hands it over.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// Who is asking.
    pub caller: Caller,
    /// The tool named.
    pub tool: String,
    /// What to run.
    pub input: Input,
    /// Bytes for stdin.
    pub stdin: Vec<u8>,
    /// Environment the request asks to set.
    pub env: BTreeMap<String, String>,
    /// Requested time limit.
    pub timeout: Option<Duration>,
    /// The caller's id for the request; empty to have one made.
    pub request_id: String,
    /// Why the connection's identity was refused, if it was (the request is then refused and
    /// audited like any other refusal).
    pub identity_error: Option<auth::Error>,
}

/// A run that happened.
#[derive(Debug)]
pub struct Execution {
    /// The request's id.
    pub request_id: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// A request that was refused or failed, with its id.
#[derive(Debug)]
pub struct Refusal {
    /// The request's id.
    pub request_id: String,
    /// Why.
    pub error: Error,
}

/// What the checks decided for a request that passes them: what would run, and how.
#[derive(Debug)]
pub struct Checked {
    /// The tool, as the policy in force defines it.
    pub tool: Arc<Tool>,
    /// The full argument vector: program, fixed arguments, then the caller's.
    pub argv: Vec<String>,
    /// The environment the tool gets: the policy's fixed values and the allowed request ones.
    pub env: Vec<(String, String)>,
    /// The time limit that applies.
    pub timeout: Duration,
}

/// A request that passed every check, owning all a run needs.
struct Admitted {
    request_id: String,
    checked: Checked,
    stdin: Vec<u8>,
}

/// The invocation pipeline shared by all connections.
pub struct Gate {
    host: Arc<Host>,
    policy: ArcSwap<PolicySet>,
    audit: Arc<AuditLog>,
    limits: RequestLimits,
    redact: Redactor,
    metrics: Metrics,
    draining: AtomicBool,
    stop: CancellationToken,
    runs: TaskTracker,
    admission: Admission,
}

impl Gate {
    /// A gate over `policy` writing to `audit`, admitting calls through `admission` and running
    /// sandboxes on `host`.
    pub fn new(
        host: Host,
        policy: PolicySet,
        audit: AuditLog,
        limits: RequestLimits,
        admission: Admission,
    ) -> Self {
        Self {
            host: Arc::new(host),
            admission,
            policy: ArcSwap::from_pointee(policy),
            audit: Arc::new(audit),
            limits,
            redact: Redactor::default(),
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            stop: CancellationToken::new(),
            runs: TaskTracker::new(),
        }
    }

    /// Counts into `metrics` (by default into a registry nobody reads).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Redacts arguments matching these daemon-wide patterns (on top of each tool's own).
    pub fn with_redaction(mut self, redact: Redactor) -> Self {
        self.redact = redact;
        self
    }

    /// The policy set in force now.
    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy.load_full()
    }

    /// Puts `policy` in force for invocations admitted from now on; runs in progress keep
    /// the tool they were admitted with.
    pub fn replace_policy(&self, policy: PolicySet) {
        self.policy.store(Arc::new(policy));
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The metrics it counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The admission stage (for ListTools and GetUsage).
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Refuses new invocations from now on; runs in progress continue.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Kills every run in progress (each still writes its audit record).
    pub fn kill_all(&self) {
        self.stop.cancel();
    }

    /// Waits until every run has ended and written its record.
    pub async fn wait_idle(&self) {
        self.runs.close();
        self.runs.wait().await;
    }

    /// Runs `invocation` to its end, or refuses it. `events`, when given, receives `Started`
    /// and the output as it comes (the outcome then carries no output bytes).
    pub async fn execute(
        &self,
        invocation: Invocation,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Execution, Refusal> {
        let (request_id, valid_id) = resolve_request_id(&invocation.request_id);
        let span = tracing::info_span!("invocation", request_id = %request_id);
        self.execute_as(invocation, events, request_id, valid_id)
            .instrument(span)
            .await
    }

    async fn execute_as(
        &self,
        invocation: Invocation,
        events: Option<mpsc::Sender<Event>>,
        request_id: String,
        valid_id: Result<(), Error>,
    ) -> Result<Execution, Refusal> {
        let began = Instant::now();
        let policy = self.policy.load_full();
        let known = policy.tool(&invocation.tool).cloned();
        let redactor = match &known {
            Some(tool) if !tool.redact.is_empty() => self.redact.with(&tool.redact),
            _ => self.redact.clone(),
        };
        let (command, secrets) =
            redact_input(&redactor, &invocation.input, self.limits.max_command_bytes);
        let mut record = Record {
            time: String::new(),
            event: audit::Event::Refusal,
            request_id: request_id.clone(),
            caller: invocation.caller.clone(),
            tool: invocation.tool.clone(),
            argv: None,
            command,
            decision: Decision::Refused,
            rule: String::new(),
            message: None,
            outcome: None,
        };
        // Admission time, from the request to its refusal or its permit.
        let admission_done = || {
            self.metrics
                .admission_seconds
                .observe(began.elapsed().as_secs_f64())
        };
        let identified = match invocation.identity_error.clone() {
            Some(error) => Err(Error::Auth(error)),
            None => Ok(()),
        };
        let caller = invocation.caller.clone();
        let admitted = identified
            .and(valid_id)
            .and_then(|()| self.admit(&policy, invocation, &request_id));
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                admission_done();
                let known = known.as_ref().map(|t| t.name.as_str());
                return Err(
                    refuse(&self.audit, &self.metrics, known, record, error, &secrets).await,
                );
            }
        };
        let (argv, more) = redactor.arguments(&admitted.checked.argv);
        let secrets = secrets.merge(more);
        record.argv = Some(argv);
        // Awaited in the request future: a caller that goes away while queued for a slot
        // simply leaves the queue.
        let permit: Permit = match self
            .admission
            .admit(&caller, &admitted.checked.tool, admitted.checked.timeout)
            .await
        {
            Ok(permit) => permit,
            Err(error) => {
                admission_done();
                let tool = admitted.checked.tool.name.clone();
                return Err(refuse(
                    &self.audit,
                    &self.metrics,
                    Some(&tool),
                    record,
                    error.into(),
                    &secrets,
                )
                .await);
            }
        };
        admission_done();
        record.decision = Decision::Allowed;
        record.rule = "policy".to_owned();

        let cancel = self.stop.child_token();
        // Dropping this request future (the caller went away) cancels the run; the run's task
        // still kills, reaps and writes the record, because it does not depend on this future.
        let guard = cancel.clone().drop_guard();
        let audit = Arc::clone(&self.audit);
        let metrics = self.metrics.clone();
        let host = Arc::clone(&self.host);
        let run = self.runs.spawn(
            async move {
                let mut start = record.clone();
                start.time = audit::now();
                start.event = audit::Event::Start;
                if let Err(e) = audit.append(&start, Kind::Start).await {
                    // Nothing ran, and the log that would say so cannot be written.
                    tracing::error!(error = %e, "start record not written: the tool does not run");
                    metrics.refused(Some(&record.tool), "audit.write");
                    // Nothing ran: settled as a run that failed before starting.
                    permit
                        .settle(&Err(Error::Audit(audit::Error::Unavailable)))
                        .await;
                    return Err(Refusal {
                        request_id: record.request_id,
                        error: e.into(),
                    });
                }
                metrics.in_flight.inc();
                let result = run(&host, admitted, cancel, events, &metrics).await;
                metrics.in_flight.dec();
                permit.settle(&result).await;
                finish(&audit, &metrics, record, result, &secrets).await
            }
            .in_current_span(),
        );
        let result = run.await.unwrap_or_else(|join| {
            Err(Refusal {
                request_id: request_id.clone(),
                error: Error::Supervise(supervise::Error::Wait(std::io::Error::other(
                    join.to_string(),
                ))),
            })
        });
        guard.disarm();
        result
    }

    /// The checks of [`check`] plus the daemon's state: draining, audit log failing.
    fn admit(
        &self,
        policy: &PolicySet,
        invocation: Invocation,
        request_id: &str,
    ) -> Result<Admitted, Error> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Error::Draining);
        }
        if self.audit.refuses() {
            return Err(Error::Audit(audit::Error::Unavailable));
        }
        let checked = check(policy, &self.limits, &invocation)?;
        Ok(Admitted {
            request_id: request_id.to_owned(),
            checked,
            stdin: invocation.stdin,
        })
    }
}

/// Every check on a request before anything runs: tool, command, arguments, environment,
/// limits. Pure: it reads the policy and the request and nothing else.
pub fn check(
    policy: &PolicySet,
    limits: &RequestLimits,
    invocation: &Invocation,
) -> Result<Checked, Error> {
    let tool = policy
        .tool(&invocation.tool)
        .ok_or_else(|| Error::UnknownTool {
            tool: invocation.tool.clone(),
        })?;
    let max = limits.max_command_bytes;
    // A shell-like tool (`programs` in its policy): the command's first word picks one of its
    // programs, which is then checked and run as a tool of its own (same name, so the same
    // callers, rates and quotas apply to all of them).
    let (tool, argv) = if tool.programs.is_empty() {
        (tool, None)
    } else {
        let words = || tool.programs.keys().cloned().collect::<Vec<_>>();
        let Input::Command(line) = &invocation.input else {
            return Err(Error::ProgramDenied {
                tool: tool.name.clone(),
                found: None,
                programs: words(),
            });
        };
        let line = command::split_command(line, max)?;
        let Some(picked) = tool.select(&line.program) else {
            return Err(Error::ProgramDenied {
                tool: tool.name.clone(),
                found: Some(line.program),
                programs: words(),
            });
        };
        (picked, Some(line.argv))
    };
    let argv = match (&invocation.input, argv) {
        (_, Some(argv)) => argv,
        (Input::Args(args), None) => Argv::from_args(args.clone(), max)?,
        (Input::Command(line), None) => {
            let line = command::split_command(line, max)?;
            if line.program != tool.name && line.program != tool.program_name() {
                return Err(Error::WrongProgram {
                    found: line.program,
                    tool: tool.name.clone(),
                    program: tool.program_name().to_owned(),
                });
            }
            line.argv
        }
    };
    tool.rules
        .check(&argv)
        .map_err(|denied| Error::ArgumentDenied {
            tool: tool.name.clone(),
            denied,
        })?;

    let mut env: BTreeMap<String, String> = tool.env_set.clone();
    for (name, value) in &invocation.env {
        if !tool.env_allow.contains(name) {
            return Err(Error::EnvDenied {
                tool: tool.name.clone(),
                name: name.clone(),
                allowed: if tool.env_allow.is_empty() {
                    "none".to_owned()
                } else {
                    tool.env_allow
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        if value.contains('\0') {
            return Err(Error::BadRequest(format!(
                "environment variable `{name}` contains a NUL byte"
            )));
        }
        env.insert(name.clone(), value.clone());
    }

    let timeout = match invocation.timeout {
        Some(t) if t.is_zero() => {
            return Err(Error::BadRequest(
                "timeout must be positive; leave it unset for the tool's limit".to_owned(),
            ));
        }
        Some(t) => t.min(tool.timeout),
        None => tool.timeout,
    };
    if invocation.stdin.len() > limits.max_stdin_bytes {
        return Err(Error::BadRequest(format!(
            "stdin is {} bytes; the limit is {} bytes",
            invocation.stdin.len(),
            limits.max_stdin_bytes
        )));
    }

    let mut full = Vec::with_capacity(1 + tool.fixed_args.len() + argv.as_slice().len());
    full.push(tool.program.to_string_lossy().into_owned());
    full.extend(tool.fixed_args.iter().cloned());
    full.extend(argv.into_vec());
    Ok(Checked {
        tool: Arc::clone(tool),
        argv: full,
        env: env.into_iter().collect(),
        timeout,
    })
}

/// The request's command line with secrets hidden, and the secrets found in its arguments.
fn redact_input(redactor: &Redactor, input: &Input, max: usize) -> (Option<String>, Secrets) {
    if redactor.is_empty() {
        return match input {
            Input::Command(line) => (Some(line.clone()), Secrets::default()),
            Input::Args(_) => (None, Secrets::default()),
        };
    }
    match input {
        Input::Args(args) => (None, redactor.arguments(args).1),
        Input::Command(line) => match command::split_command(line, max) {
            Ok(split) => {
                let mut words = vec![split.program];
                words.extend(split.argv.into_vec());
                let secrets = redactor.arguments(&words).1;
                (Some(secrets.scrub(line)), secrets)
            }
            Err(_) => {
                let mut secrets = Secrets::default();
                let line = redactor.text(line, &mut secrets);
                (Some(line), secrets)
            }
        },
    }
}

/// The metrics label for how a run ended.
fn outcome_label(outcome: &Outcome) -> &'static str {
    if outcome.timed_out {
        "timed_out"
    } else if outcome.cancelled {
        "cancelled"
    } else {
        match outcome.status {
            ExitStatus::Code(0) => "success",
            ExitStatus::Code(_) => "failure",
            ExitStatus::Signal(_) => "signaled",
        }
    }
}

/// Writes the end record of a run that ended (or failed to start) and gives the caller's
/// answer, which waits until that record is durable.
async fn finish(
    audit: &AuditLog,
    metrics: &Metrics,
    mut record: Record,
    result: Result<Outcome, Error>,
    secrets: &Secrets,
) -> Result<Execution, Refusal> {
    record.time = audit::now();
    record.event = audit::Event::End;
    let result = match result {
        Ok(outcome) => {
            record.outcome = Some(OutcomeRecord::from(&outcome));
            metrics.ran(&record.tool, outcome_label(&outcome));
            metrics.run_seconds.observe(outcome.wall_time.as_secs_f64());
            tracing::info!(
                tool = record.tool,
                status = ?outcome.status,
                timed_out = outcome.timed_out,
                cancelled = outcome.cancelled,
                wall_ms = outcome.wall_time.as_millis() as u64,
                "invocation finished"
            );
            Ok(outcome)
        }
        Err(error) => {
            // Allowed, but it could not run: the end record says why.
            record.rule = error.rule();
            let message = secrets.scrub(&error.to_string());
            metrics.ran(&record.tool, "error");
            tracing::error!(
                tool = record.tool,
                rule = record.rule,
                error = message,
                "invocation failed"
            );
            record.message = Some(message);
            Err(error)
        }
    };
    let request_id = record.request_id.clone();
    let written = audit.append(&record, Kind::End).await;
    match (result, written) {
        (Ok(outcome), Ok(())) => Ok(Execution {
            request_id,
            outcome,
        }),
        (Err(error), _) => Err(Refusal { request_id, error }),
        (Ok(_), Err(e)) => {
            tracing::error!(error = %e, "end record not written yet: the caller is told the run is unaccounted for");
            Err(Refusal {
                request_id,
                error: e.into(),
            })
        }
    }
}

/// Records, counts and logs a refusal.
async fn refuse(
    audit: &AuditLog,
    metrics: &Metrics,
    known_tool: Option<&str>,
    mut record: Record,
    error: Error,
    secrets: &Secrets,
) -> Refusal {
    record.time = audit::now();
    record.rule = error.rule();
    let message = secrets.scrub(&error.to_string());
    metrics.refused(known_tool, &record.rule);
    tracing::warn!(
        tool = record.tool,
        caller = %record.caller,
        rule = record.rule,
        error = message,
        "invocation refused"
    );
    record.message = Some(message);
    if let Err(e) = audit.append(&record, Kind::Refusal).await {
        tracing::error!(error = %e, "refusal record not written");
    }
    Refusal {
        request_id: record.request_id,
        error,
    }
}

/// Spawns and supervises an admitted request.
async fn run(
    host: &Host,
    admitted: Admitted,
    cancel: CancellationToken,
    events: Option<mpsc::Sender<Event>>,
    metrics: &Metrics,
) -> Result<Outcome, Error> {
    let checked = &admitted.checked;
    let tool = &checked.tool;
    let spawning = Instant::now();
    let plan = Plan::new(
        &tool.program,
        &checked.argv,
        &checked.env,
        &tool.cwd,
        &tool.sandbox,
        host,
    )?;
    let deadline = Instant::now() + checked.timeout;
    let child = sandbox::spawn(&plan, host).await?;
    metrics
        .sandbox_start_seconds
        .observe(spawning.elapsed().as_secs_f64());
    if let Some(events) = &events {
        // A caller that is already gone is noticed by the cancellation token.
        let _ = events
            .send(Event::Started(admitted.request_id.clone()))
            .await;
    }
    Ok(supervise::supervise(
        child,
        Supervision {
            stdin: admitted.stdin,
            deadline,
            cancel,
            max_output: tool.max_output,
            events,
        },
    )
    .await?)
}

/// The caller's request id when valid, else a fresh one and the reason it was not taken.
fn resolve_request_id(given: &str) -> (String, Result<(), Error>) {
    if given.is_empty() {
        return (uuid::Uuid::new_v4().to_string(), Ok(()));
    }
    let valid = given.len() <= 128
        && given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if valid {
        (given.to_owned(), Ok(()))
    } else {
        (
            uuid::Uuid::new_v4().to_string(),
            Err(Error::BadRequest(
                "request_id must be 1-128 characters of A-Z, a-z, 0-9, `.`, `_`, `:`, `-`"
                    .to_owned(),
            )),
        )
    }
}
