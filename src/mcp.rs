//! `toolgate mcp`: a Model Context Protocol server over stdio that forwards to the daemon.
//!
//! An MCP host (an IDE, a desktop assistant, an agent framework) starts `toolgate mcp` and
//! speaks MCP on its stdin and stdout. `tools/list` answers with the tools the daemon lets
//! *this process's user* call (the daemon identifies the bridge by its socket's peer
//! credentials, like any other client), each with the schema of [`crate::tool_schema`].
//! `tools/call` becomes one `Execute` on the daemon. The bridge holds no policy and decides
//! nothing: a refusal (unknown tool, argument rule, rate limit...) comes back as a tool result
//! with `isError: true` carrying the status and the rule's message, which a model can read and
//! act on, rather than as a protocol error.
//!
//! It connects to the daemon for every request, so a daemon restart does not break a host's
//! long-lived session.

use std::path::PathBuf;

use rmcp::ErrorData as McpError;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer, ServiceExt};
use serde_json::Value;

use crate::api::pb;
use crate::tool_schema;

/// The MCP server: a stateless bridge to the daemon on `socket`.
#[derive(Clone, Debug)]
pub struct Bridge {
    socket: PathBuf,
}

/// Why the bridge stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The MCP session could not start on stdio.
    #[error("cannot start the MCP session on stdio: {0}")]
    Start(String),
    /// The session's task failed.
    #[error("the MCP session failed: {0}")]
    Session(#[from] tokio::task::JoinError),
}

impl Bridge {
    /// A bridge to the daemon listening on `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// Serves MCP on stdin/stdout until the host closes them.
    pub async fn serve_stdio(self) -> Result<(), Error> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| Error::Start(e.to_string()))?;
        running.waiting().await?;
        Ok(())
    }

    async fn client(
        &self,
    ) -> Result<pb::tool_gate_client::ToolGateClient<tonic::transport::Channel>, String> {
        crate::client::connect_unix(&self.socket)
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the toolgate daemon at {}: {e}",
                    self.socket.display()
                )
            })
    }
}

/// An `Execute` request from MCP arguments: `args` (strings) or `command`, and `stdin`.
fn request(
    name: &str,
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<pb::ExecuteRequest, String> {
    let empty = serde_json::Map::new();
    let arguments = arguments.unwrap_or(&empty);
    if let Some(key) = arguments
        .keys()
        .find(|k| !matches!(k.as_str(), "args" | "command" | "stdin"))
    {
        return Err(format!(
            "unknown argument `{key}`: give `args`, `command` and/or `stdin`"
        ));
    }
    let invocation = match (arguments.get("args"), arguments.get("command")) {
        (Some(_), Some(_)) => return Err("give either `args` or `command`, not both".to_owned()),
        (Some(Value::Array(items)), None) => {
            let values = items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("`args` must be an array of strings")?;
            pb::execute_request::Invocation::Args(pb::ArgumentList { values })
        }
        (Some(_), None) => return Err("`args` must be an array of strings".to_owned()),
        (None, Some(Value::String(line))) => pb::execute_request::Invocation::Command(line.clone()),
        (None, Some(_)) => return Err("`command` must be a string".to_owned()),
        (None, None) => pb::execute_request::Invocation::Args(pb::ArgumentList::default()),
    };
    let stdin = match arguments.get("stdin") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(_) => return Err("`stdin` must be a string".to_owned()),
    };
    Ok(pb::ExecuteRequest {
        tool: name.to_owned(),
        invocation: Some(invocation),
        stdin,
        ..Default::default()
    })
}

/// A finished run as tool result text: stdout, then stderr and how it ended when that matters.
fn result(run: &pb::ExecuteResult) -> CallToolResult {
    use pb::execute_result::Termination;
    let mut text = String::from_utf8_lossy(&run.stdout).into_owned();
    if !run.stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("[stderr]\n");
        text.push_str(&String::from_utf8_lossy(&run.stderr));
    }
    let mut notes = Vec::new();
    if run.stdout_truncated || run.stderr_truncated {
        notes.push("output truncated at the policy's cap".to_owned());
    }
    let failed = match run.termination {
        _ if run.timed_out => {
            notes.push("killed: it ran past its time limit".to_owned());
            true
        }
        Some(Termination::ExitCode(0)) => false,
        Some(Termination::ExitCode(code)) => {
            notes.push(format!("exit code {code}"));
            true
        }
        Some(Termination::Signal(signal)) => {
            notes.push(format!("killed by signal {signal}"));
            true
        }
        None => true,
    };
    if !notes.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[{}]", notes.join("; ")));
    }
    let content = vec![ContentBlock::text(text)];
    if failed {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    }
}

/// A refusal as a tool error the model can read: the status and the rule's message.
fn refusal(status: &tonic::Status) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "toolgate refused: {:?}: {}",
        status.code(),
        status.message()
    ))])
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("toolgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools run through toolgate: without a shell, in a sandbox, under policy. Refusals name the rule to follow.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut client = self
            .client()
            .await
            .map_err(|m| McpError::internal_error(m, None))?;
        let tools = client
            .list_tools(pb::ListToolsRequest {})
            .await
            .map_err(|s| {
                McpError::internal_error(format!("{:?}: {}", s.code(), s.message()), None)
            })?
            .into_inner()
            .tools;
        let tools = tools
            .iter()
            .map(|t| {
                Tool::new(
                    t.name.clone(),
                    tool_schema::description(t),
                    tool_schema::input_schema(t),
                )
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let execute = match request_of(&request) {
            Ok(execute) => execute,
            Err(message) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
            }
        };
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(message) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
            }
        };
        Ok(match client.execute(execute).await {
            Ok(run) => result(&run.into_inner()),
            Err(status) => refusal(&status),
        }
        .into())
    }
}

fn request_of(request: &CallToolRequestParams) -> Result<pb::ExecuteRequest, String> {
    self::request(&request.name, request.arguments.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn requests_from_mcp_arguments() {
        let r = request(
            "cat",
            Some(&args(json!({"args": ["-n", "a; b"], "stdin": "x"}))),
        )
        .unwrap();
        assert_eq!(
            r.invocation,
            Some(pb::execute_request::Invocation::Args(pb::ArgumentList {
                values: vec!["-n".into(), "a; b".into()]
            }))
        );
        assert_eq!(r.stdin, b"x");
        let r = request("shell", Some(&args(json!({"command": "ls -la"})))).unwrap();
        assert_eq!(
            r.invocation,
            Some(pb::execute_request::Invocation::Command("ls -la".into()))
        );
        for bad in [
            json!({"args": "ls"}),
            json!({"args": [1]}),
            json!({"args": [], "command": "x"}),
            json!({"cmd": "x"}),
            json!({"stdin": 3}),
        ] {
            assert!(request("t", Some(&args(bad.clone()))).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_run_is_a_tool_error_with_its_exit_code() {
        let run = pb::ExecuteResult {
            termination: Some(pb::execute_result::Termination::ExitCode(2)),
            stdout: b"out".to_vec(),
            stderr: b"bad".to_vec(),
            ..Default::default()
        };
        let r = result(&run);
        assert_eq!(r.is_error, Some(true));
        let text = serde_json::to_string(&r.content).unwrap();
        assert!(
            text.contains("out\\n[stderr]\\nbad\\n[exit code 2]"),
            "{text}"
        );
    }
}
