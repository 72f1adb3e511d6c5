//! The crate's error and its one mapping to gRPC status codes.
//!
//! Each module has its own error enum; this gathers them. [`Error::status`] is the only place
//! that decides which gRPC code a failure becomes, and what the caller is told. Callers are often
//! language models: messages say what to change. Host details (paths, errno text) that only ops
//! need stay in the daemon's log and the audit record, never in a client message.

use tonic::{Code, Status};

use crate::{admission, audit, auth, command, policy, sandbox, supervise};

/// Everything that can stop an invocation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names a tool no policy defines.
    #[error(
        "unknown tool `{tool}`: no policy defines it; call ListTools (toolgate tools) for the tools you may use"
    )]
    UnknownTool {
        /// The name given.
        tool: String,
    },
    /// The command line or arguments cannot be parsed.
    #[error(transparent)]
    Command(#[from] command::Error),
    /// The command line's first word is neither the tool nor its program.
    #[error("{}", wrong_program(.found, .tool, .program))]
    WrongProgram {
        /// The first word given.
        found: String,
        /// The tool.
        tool: String,
        /// The tool's program name.
        program: String,
    },
    /// A shell-like tool was asked for a program it does not offer (or for no program).
    #[error("tool `{tool}` runs one of {}; {} (rule command.program)", programs.join(", "), match found {
        Some(found) => format!("`{found}` is not one of them"),
        None => "give a command whose first word names one".to_owned(),
    })]
    ProgramDenied {
        /// The tool.
        tool: String,
        /// The first word given, if a command was.
        found: Option<String>,
        /// The words that pick its programs.
        programs: Vec<String>,
    },
    /// An argument rule refused the arguments.
    #[error("tool `{tool}`: {denied}")]
    ArgumentDenied {
        /// The tool.
        tool: String,
        /// Which rule and why.
        denied: command::rules::Denied,
    },
    /// The request sets an environment variable the policy does not allow.
    #[error("tool `{tool}` does not allow setting `{name}` (allowed: {allowed}) (rule env.allow)")]
    EnvDenied {
        /// The tool.
        tool: String,
        /// The variable.
        name: String,
        /// What may be set.
        allowed: String,
    },
    /// A request field is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The daemon is shutting down.
    #[error(
        "the daemon is shutting down and takes no new invocations; retry on another instance or after it restarts"
    )]
    Draining,
    /// The policies failed to load.
    #[error(transparent)]
    Policy(#[from] policy::Error),
    /// The sandbox could not be prepared or started.
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    /// Supervising the running tool failed.
    #[error(transparent)]
    Supervise(#[from] supervise::Error),
    /// The audit log could not be written.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// Admission control refused the call (callers, rate, concurrency, quota, breaker, store).
    #[error(transparent)]
    Admission(#[from] admission::Error),
    /// The connection's identity was refused.
    #[error(transparent)]
    Auth(#[from] auth::Error),
}

/// What to start a command with, naming the program once when it is also the tool's name.
fn wrong_program(found: &str, tool: &str, program: &str) -> String {
    let expected = if tool == program {
        format!("`{tool}`")
    } else {
        format!("`{tool}` or `{program}`")
    };
    format!(
        "the command starts with `{found}`, but tool `{tool}` runs `{program}`: start the command with {expected}"
    )
}

impl Error {
    /// The audit record's `rule` for this refusal: the policy key or stage that refused.
    pub fn rule(&self) -> String {
        match self {
            Self::UnknownTool { .. } => "policy.unknown_tool".into(),
            Self::Command(_) => "command.parse".into(),
            Self::WrongProgram { .. } | Self::ProgramDenied { .. } => "command.program".into(),
            Self::ArgumentDenied { denied, .. } => format!("arguments.{}", denied.rule),
            Self::EnvDenied { .. } => "env.allow".into(),
            Self::BadRequest(_) => "request".into(),
            Self::Draining => "daemon.draining".into(),
            Self::Policy(_) => "policy.load".into(),
            Self::Sandbox(sandbox::Error::Unsupported(_)) => "sandbox.unsupported".into(),
            Self::Sandbox(_) => "sandbox.spawn".into(),
            Self::Supervise(_) => "supervise".into(),
            Self::Audit(_) => "audit.write".into(),
            Self::Admission(e) => e.rule(),
            Self::Auth(e) => e.rule().into(),
        }
    }

    /// The gRPC status a caller gets; `request_id` is appended for correlation with the logs.
    pub fn status(&self, request_id: &str) -> Status {
        let (code, message) = match self {
            Self::UnknownTool { .. } => (Code::NotFound, self.to_string()),
            Self::Command(_) | Self::WrongProgram { .. } | Self::BadRequest(_) => {
                (Code::InvalidArgument, self.to_string())
            }
            Self::ArgumentDenied { .. } | Self::EnvDenied { .. } | Self::ProgramDenied { .. } => {
                (Code::PermissionDenied, self.to_string())
            }
            Self::Draining => (Code::Unavailable, self.to_string()),
            Self::Sandbox(sandbox::Error::Unsupported(reason)) => (
                Code::FailedPrecondition,
                format!("this host cannot give the isolation the tool's policy requires ({reason}); the tool cannot run here"),
            ),
            Self::Audit(_) => (
                Code::Unavailable,
                "the daemon cannot write its audit log, so it runs nothing; retry later".to_owned(),
            ),
            Self::Admission(admission::Error::UnknownCaller | admission::Error::NotAllowed { .. }) => {
                (Code::PermissionDenied, self.to_string())
            }
            Self::Admission(
                admission::Error::RateLimited { .. }
                | admission::Error::Busy { .. }
                | admission::Error::QuotaExceeded { .. },
            ) => (Code::ResourceExhausted, self.to_string()),
            Self::Admission(admission::Error::CircuitOpen { .. }) => {
                (Code::Unavailable, self.to_string())
            }
            Self::Admission(admission::Error::Store(_)) => (
                Code::Unavailable,
                "the daemon cannot reach its rate-limit and quota store, so it runs nothing; retry later (rule admission.store)".to_owned(),
            ),
            Self::Auth(_) => (Code::Unauthenticated, self.to_string()),
            Self::Policy(_) | Self::Sandbox(_) | Self::Supervise(_) => (
                Code::Internal,
                "the tool could not be run because of a problem on the daemon's host; its log has the details".to_owned(),
            ),
        };
        let message = format!("{message} [request {request_id}]");
        match self.retry_after() {
            Some(delay) => retry_status(code, message, delay),
            None => Status::new(code, message),
        }
    }

    /// How long to wait before retrying, for refusals where waiting helps.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Admission(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// A status telling the client when to retry, both ways clients look for it: a google.rpc
/// RetryInfo detail (exact) and `retry-after` metadata (whole seconds, rounded up, as HTTP).
fn retry_status(code: Code, message: String, delay: std::time::Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut status =
        Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)));
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    if let Ok(value) = seconds.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}
