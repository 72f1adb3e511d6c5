//! The pipeline of one invocation: policy → command → sandbox → supervise → audit.
//!
//! [`Gate::execute`] takes a transport-free [`Invocation`] (the API layer has already converted
//! the protobuf request and identified the caller) and either refuses it, with an error that
//! names the rule, or runs it. Every request ends in exactly one audit record.
//!
//! Admission control ([`crate::admission`]) comes after the request is understood and before
//! the sandbox: its permit moves into the run task, so its concurrency slots are released and
//! its quota settled when the run ends, even when the caller has gone away.
//!
//! A run happens in its own task, tracked for shutdown: if the caller goes away (cancelled RPC,
//! expired deadline) the request future is dropped, which cancels the run's token; the task
//! then kills the tool's process tree, reaps it and writes the record. The daemon's stop token
//! is the parent of every run's token, so stopping the daemon kills every run the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Permit};
use crate::audit::{self, AuditLog, Decision, OutcomeRecord, Record};
use crate::auth::{self, Caller};
use crate::command::{self, Argv};
use crate::error::Error;
use crate::policy::{PolicySet, Tool};
use crate::sandbox::{self, Host, Plan};
use crate::supervise::{self, Event, Outcome, Supervision};

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

/// A request that passed every check, owning all a run needs.
struct Admitted {
    request_id: String,
    tool: Arc<Tool>,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
    stdin: Vec<u8>,
}

/// The invocation pipeline shared by all connections.
pub struct Gate {
    host: Arc<Host>,
    policy: Arc<PolicySet>,
    audit: Arc<AuditLog>,
    limits: RequestLimits,
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
            policy: Arc::new(policy),
            audit: Arc::new(audit),
            limits,
            draining: AtomicBool::new(false),
            stop: CancellationToken::new(),
            runs: TaskTracker::new(),
        }
    }

    /// The policy set in force.
    pub fn policy(&self) -> &PolicySet {
        &self.policy
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
        let mut record = Record {
            time: String::new(),
            request_id: request_id.clone(),
            caller: invocation.caller.clone(),
            tool: invocation.tool.clone(),
            argv: None,
            command: match &invocation.input {
                Input::Command(line) => Some(line.clone()),
                Input::Args(_) => None,
            },
            decision: Decision::Refused,
            rule: String::new(),
            message: None,
            outcome: None,
        };
        let identified = match invocation.identity_error.clone() {
            Some(error) => Err(Error::Auth(error)),
            None => Ok(()),
        };
        let caller = invocation.caller.clone();
        let admitted = identified
            .and(valid_id)
            .and_then(|()| self.admit(invocation, &request_id));
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(error) => return Err(self.refuse(record, error)),
        };
        record.argv = Some(admitted.argv.clone());
        // Awaited in the request future: a caller that goes away while queued for a slot
        // simply leaves the queue.
        let permit: Permit = match self
            .admission
            .admit(&caller, &admitted.tool, admitted.timeout)
            .await
        {
            Ok(permit) => permit,
            Err(error) => return Err(self.refuse(record, error.into())),
        };

        let cancel = self.stop.child_token();
        // Dropping this request future (the caller went away) cancels the run; the run's task
        // still kills, reaps and writes the record, because it does not depend on this future.
        let guard = cancel.clone().drop_guard();
        let audit = Arc::clone(&self.audit);
        let host = Arc::clone(&self.host);
        let run = self.runs.spawn(async move {
            let result = run(&host, admitted, cancel, events).await;
            permit.settle(&result).await;
            finish(&audit, record, result)
        });
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

    fn refuse(&self, record: Record, error: Error) -> Refusal {
        refuse(&self.audit, record, error)
    }

    /// Every check before anything runs: tool, command, arguments, environment, limits.
    fn admit(&self, invocation: Invocation, request_id: &str) -> Result<Admitted, Error> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Error::Draining);
        }
        let tool = self
            .policy
            .tool(&invocation.tool)
            .ok_or_else(|| Error::UnknownTool {
                tool: invocation.tool.clone(),
            })?;
        let max = self.limits.max_command_bytes;
        let argv = match invocation.input {
            Input::Args(args) => Argv::from_args(args, max)?,
            Input::Command(line) => {
                let line = command::split_command(&line, max)?;
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
        for (name, value) in invocation.env {
            if !tool.env_allow.contains(&name) {
                return Err(Error::EnvDenied {
                    tool: tool.name.clone(),
                    name,
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
            env.insert(name, value);
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
        if invocation.stdin.len() > self.limits.max_stdin_bytes {
            return Err(Error::BadRequest(format!(
                "stdin is {} bytes; the limit is {} bytes",
                invocation.stdin.len(),
                self.limits.max_stdin_bytes
            )));
        }

        let mut full = Vec::with_capacity(1 + tool.fixed_args.len() + argv.as_slice().len());
        full.push(tool.program.to_string_lossy().into_owned());
        full.extend(tool.fixed_args.iter().cloned());
        full.extend(argv.into_vec());
        Ok(Admitted {
            request_id: request_id.to_owned(),
            tool: Arc::clone(tool),
            argv: full,
            env: env.into_iter().collect(),
            timeout,
            stdin: invocation.stdin,
        })
    }
}

/// Writes the record of a run that ended (or failed to start) and gives the caller's answer.
fn finish(
    audit: &AuditLog,
    mut record: Record,
    result: Result<Outcome, Error>,
) -> Result<Execution, Refusal> {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => return Err(refuse(audit, record, error)),
    };
    record.time = audit::now();
    record.decision = Decision::Allowed;
    record.rule = "policy".to_owned();
    record.outcome = Some(OutcomeRecord::from(&outcome));
    tracing::info!(
        request_id = record.request_id,
        tool = record.tool,
        status = ?outcome.status,
        timed_out = outcome.timed_out,
        cancelled = outcome.cancelled,
        wall_ms = outcome.wall_time.as_millis() as u64,
        "invocation finished"
    );
    let request_id = record.request_id.clone();
    match audit.append(&record) {
        Ok(()) => Ok(Execution {
            request_id,
            outcome,
        }),
        Err(e) => {
            tracing::error!(request_id, error = %e, "audit record lost");
            Err(Refusal {
                request_id,
                error: e.into(),
            })
        }
    }
}

/// Records and logs a refusal.
fn refuse(audit: &AuditLog, mut record: Record, error: Error) -> Refusal {
    record.time = audit::now();
    record.rule = error.rule();
    record.message = Some(error.to_string());
    tracing::warn!(
        request_id = record.request_id,
        tool = record.tool,
        caller = %record.caller,
        rule = record.rule,
        error = %error,
        "invocation refused"
    );
    if let Err(e) = audit.append(&record) {
        tracing::error!(request_id = record.request_id, error = %e, "audit record lost");
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
) -> Result<Outcome, Error> {
    let tool = &admitted.tool;
    let plan = Plan::new(
        &tool.program,
        &admitted.argv,
        &admitted.env,
        &tool.cwd,
        &tool.sandbox,
        host,
    )?;
    let deadline = Instant::now() + admitted.timeout;
    let child = sandbox::spawn(&plan, host).await?;
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
