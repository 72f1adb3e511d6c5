//! The gRPC service `toolgate.v1.ToolGate`: protobuf in, domain types to the gate, protobuf out.
//!
//! Generated protobuf types stop here; everything behind speaks [`gate`](crate::gate) types.
//! Refusals become statuses through [`Error::status`](crate::Error::status), the one table.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Caller};
use crate::gate::{Execution, Gate, Input, Invocation, Refusal};
use crate::sandbox::ExitStatus;
use crate::supervise::{Event, Outcome};

/// The generated protobuf messages, server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("toolgate.v1");
}

/// The encoded descriptors of `toolgate.v1`, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/toolgate_descriptor.bin"));

/// The service, over a shared gate.
#[derive(Clone)]
pub struct Service {
    gate: Arc<Gate>,
    auth: Arc<Authenticator>,
}

impl Service {
    /// A service that identifies callers with `auth` and runs requests through `gate`.
    pub fn new(gate: Arc<Gate>, auth: Arc<Authenticator>) -> Self {
        Self { gate, auth }
    }

    /// The caller, or the anonymous caller of this connection and why it was refused.
    fn identify<T>(&self, request: &Request<T>) -> (Caller, Option<crate::auth::Error>) {
        match self.auth.identify(request) {
            Ok(caller) => (caller, None),
            Err(error) => {
                let caller = match request.remote_addr() {
                    Some(addr) => Caller::Tcp {
                        addr,
                        cert: None,
                        token: None,
                    },
                    None => Caller::Unknown,
                };
                (caller, Some(error))
            }
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::tool_gate_server::ToolGateServer<Self> {
        pb::tool_gate_server::ToolGateServer::new(self)
    }
}

fn invocation(
    (caller, identity_error): (Caller, Option<crate::auth::Error>),
    request: pb::ExecuteRequest,
) -> Invocation {
    let input = match request.invocation {
        Some(pb::execute_request::Invocation::Args(list)) => Input::Args(list.values),
        Some(pb::execute_request::Invocation::Command(line)) => Input::Command(line),
        None => Input::Args(Vec::new()),
    };
    Invocation {
        caller,
        tool: request.tool,
        input,
        stdin: request.stdin,
        env: request.env.into_iter().collect(),
        // A negative duration becomes zero, which the gate refuses with a clear message.
        timeout: request
            .timeout
            .map(|t| Duration::try_from(t).unwrap_or(Duration::ZERO)),
        request_id: request.request_id,
        identity_error,
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn result(request_id: String, outcome: Outcome) -> pb::ExecuteResult {
    let termination = match outcome.status {
        ExitStatus::Code(code) => pb::execute_result::Termination::ExitCode(code),
        ExitStatus::Signal(signal) => pb::execute_result::Termination::Signal(signal),
    };
    pb::ExecuteResult {
        request_id,
        termination: Some(termination),
        timed_out: outcome.timed_out,
        stdout: outcome.stdout.bytes,
        stderr: outcome.stderr.bytes,
        stdout_truncated: outcome.stdout.truncated,
        stderr_truncated: outcome.stderr.truncated,
        wall_time: Some(duration(outcome.wall_time)),
        user_cpu: Some(duration(outcome.usage.user_cpu)),
        system_cpu: Some(duration(outcome.usage.system_cpu)),
        max_rss_bytes: outcome.usage.max_rss_bytes,
    }
}

fn status(refusal: &Refusal) -> Status {
    refusal.error.status(&refusal.request_id)
}

#[tonic::async_trait]
impl pb::tool_gate_server::ToolGate for Service {
    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResult>, Status> {
        let caller = self.identify(&request);
        let invocation = invocation(caller, request.into_inner());
        match self.gate.execute(invocation, None).await {
            Ok(Execution {
                request_id,
                outcome,
            }) => Ok(Response::new(result(request_id, outcome))),
            Err(refusal) => Err(status(&refusal)),
        }
    }

    type ExecuteStreamStream = ReceiverStream<Result<pb::ExecuteEvent, Status>>;

    async fn execute_stream(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let caller = self.identify(&request);
        let invocation = invocation(caller, request.into_inner());
        let (tx, rx) = mpsc::channel(32);
        let gate = Arc::clone(&self.gate);
        tokio::spawn(drive_stream(gate, invocation, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        let caller = self.caller(&request)?;
        let admission = self.gate.admission();
        let tools = self
            .gate
            .policy()
            .tools()
            .filter(|tool| admission.may_call(&caller, tool))
            .map(|tool| pb::ToolInfo {
                name: tool.name.clone(),
                description: tool.description.clone(),
                // A shell-like tool has no single program: `programs` lists its words.
                program: if tool.programs.is_empty() {
                    tool.program_name().to_owned()
                } else {
                    String::new()
                },
                programs: tool.programs.keys().cloned().collect(),
                argument_rules: tool.describe_rules(),
                timeout: Some(duration(tool.timeout)),
                max_output_bytes: tool.max_output,
                env_allowed: tool.env_allow.iter().cloned().collect(),
            })
            .collect();
        Ok(Response::new(pb::ListToolsResponse { tools }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let caller = self.caller(&request)?;
        let only = request.into_inner().tool;
        let only = (!only.is_empty()).then_some(only.as_str());
        let gate = &self.gate;
        if let Some(name) = only
            && !gate
                .policy()
                .tool(name)
                .is_some_and(|tool| gate.admission().may_call(&caller, tool))
        {
            // The same answer for "does not exist" and "not yours": no probing for tool names.
            return Err(crate::Error::UnknownTool {
                tool: name.to_owned(),
            }
            .status("usage"));
        }
        let limits = gate
            .admission()
            .usage(&caller, &gate.policy(), only)
            .await
            .map_err(|e| crate::Error::from(e).status("usage"))?;
        Ok(Response::new(pb::Usage {
            caller: caller.principal().unwrap_or_default(),
            limits: limits
                .into_iter()
                .map(|l| pb::LimitUsage {
                    rule: l.rule,
                    tool: l.tool.unwrap_or_default(),
                    limit: l.limit,
                    limit_value: l.limit_value,
                    used: l.used,
                    remaining: l.remaining,
                    unit: l.unit.to_owned(),
                    resets_in: Some(duration(l.resets_in)),
                })
                .collect(),
            store_fallbacks: gate.admission().store_fallbacks(),
        }))
    }
}

impl Service {
    /// The identified caller, or the refusal status (for the read-only RPCs, not audited).
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.auth
            .identify(request)
            .map_err(|e| crate::Error::from(e).status("-"))
    }
}

/// Runs one streamed invocation, forwarding its events; stops (and so cancels the run) when the
/// caller drops the stream.
async fn drive_stream(
    gate: Arc<Gate>,
    invocation: Invocation,
    tx: mpsc::Sender<Result<pb::ExecuteEvent, Status>>,
) {
    let (events_tx, mut events) = mpsc::channel(32);
    let execution = gate.execute(invocation, Some(events_tx));
    tokio::pin!(execution);
    let forward = |event: Event| {
        use pb::execute_event::Event as E;
        let event = match event {
            Event::Started(request_id) => E::Started(pb::Started { request_id }),
            Event::Stdout(bytes) => E::Stdout(bytes),
            Event::Stderr(bytes) => E::Stderr(bytes),
        };
        Ok(pb::ExecuteEvent { event: Some(event) })
    };
    let finished = loop {
        tokio::select! {
            finished = &mut execution => break finished,
            Some(event) = events.recv() => {
                if tx.send(forward(event)).await.is_err() {
                    return; // dropping `execution` cancels the run
                }
            }
            () = tx.closed() => return,
        }
    };
    while let Ok(event) = events.try_recv() {
        if tx.send(forward(event)).await.is_err() {
            return;
        }
    }
    let last = match finished {
        Ok(Execution {
            request_id,
            outcome,
        }) => Ok(pb::ExecuteEvent {
            event: Some(pb::execute_event::Event::Exited(result(
                request_id, outcome,
            ))),
        }),
        Err(refusal) => Err(status(&refusal)),
    };
    let _ = tx.send(last).await;
}
