//! Command-line interface: `serve`, `call`, `tools`, `policy check|explain`, `audit verify`,
//! `mcp`.
//!
//! Exit codes of `call`: the tool's own exit code; 128+N when a signal N killed it; 124 when it
//! timed out (as timeout(1)); 125 when toolgate itself refused or failed (as env(1)), with the
//! status and message on stderr.
//!
//! `policy check` and `audit verify` exit 1 when they find a problem; `policy explain` exits 0
//! when the request would be allowed and 1 when it would be refused.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use tonic::Code;

use toolgate::api::pb;
use toolgate::auth::Caller;
use toolgate::daemon::{self, Config};
use toolgate::gate::{self, Input, Invocation};
use toolgate::policy::{self, PolicySet};

/// Exit code for toolgate's own refusals and failures.
const EXIT_REFUSED: u8 = 125;
/// Exit code when the tool timed out.
const EXIT_TIMED_OUT: u8 = 124;

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "Run AI agents' tools without a shell, in a sandbox, under policy, with an audit log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Run one tool through the daemon and print its output.
    Call(CallArgs),
    /// List the tools you may call.
    Tools(ToolsArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show your rate limits and quotas: the limit, what is used, what is left, when it resets.
    Usage(UsageArgs),
    /// Print the SHA-256 of a bearer token (read from stdin) for the daemon config's [tokens].
    TokenHash,
    /// Show which isolation this kernel and privilege level give, and prove it by running
    /// `/bin/true` in a full sandbox.
    Doctor(DoctorArgs),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the Model Context Protocol on stdin/stdout, forwarding tool calls to the daemon.
    Mcp(McpArgs),
}

// `toolgate mcp` and `toolgate tools --schema` (issue 6: agents adopting toolgate).

#[derive(clap::Args)]
struct McpArgs {
    #[command(flatten)]
    connection: Connection,
}

/// The model-API format of `toolgate tools --schema`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SchemaFormat {
    /// OpenAI function tools.
    Openai,
    /// Anthropic tools.
    Anthropic,
}

async fn mcp(args: McpArgs) -> Result<ExitCode> {
    // stdout carries the protocol: nothing else may be printed there.
    toolgate::mcp::Bridge::new(args.connection.socket)
        .serve_stdio()
        .await?;
    Ok(ExitCode::SUCCESS)
}

fn print_schema(tools: &[pb::ToolInfo], format: SchemaFormat) -> Result<ExitCode> {
    use toolgate::tool_schema::{Format, definitions};
    let format = match format {
        SchemaFormat::Openai => Format::OpenAi,
        SchemaFormat::Anthropic => Format::Anthropic,
    };
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&definitions(tools, format))?
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// Daemon configuration file, for its run_as user (defaults apply when absent).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct UsageArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this tool's limits (and those across all tools).
    #[arg(long)]
    tool: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files (any order; rotated files included) and report
    /// the first modified, deleted, inserted or reordered record.
    Verify {
        /// The files, e.g. /var/log/toolgate/audit.jsonl*.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Daemon configuration file (TOML).
    #[arg(long, default_value = "/etc/toolgate/toolgate.toml")]
    config: PathBuf,
    /// Unix socket to listen on (overrides the config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Also listen on this TCP address, e.g. 127.0.0.1:7700 (overrides the config).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory of policy files (overrides the config).
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Audit log file (overrides the config).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Log one JSON object per line.
    #[arg(long)]
    log_json: bool,
}

#[derive(clap::Args)]
struct Connection {
    /// The daemon's Unix socket.
    #[arg(long, env = "TOOLGATE_SOCKET", default_value_os_t = daemon::default_socket())]
    socket: PathBuf,
}

#[derive(clap::Args)]
struct CallArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print the whole result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Print output as it comes (ExecuteStream).
    #[arg(long, conflicts_with = "json")]
    stream: bool,
    /// Time limit, e.g. 10s (the tool's policy limit applies when shorter).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Environment variable for the tool, NAME=VALUE (the policy must allow NAME).
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Request id to record in the audit log.
    #[arg(long)]
    request_id: Option<String>,
    /// Do not send standard input (by default it is sent unless it is a terminal).
    #[arg(long)]
    no_stdin: bool,
    /// One command line, split without a shell; its first word is the tool or its program.
    #[arg(long, conflicts_with = "args")]
    command: Option<String>,
    /// The tool to run.
    tool: String,
    /// Arguments for the tool, after `--`, passed exactly as given.
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct ToolsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
    /// Print the tools as JSON-schema function definitions for a model API.
    #[arg(long, value_enum, conflicts_with = "json")]
    schema: Option<SchemaFormat>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a directory of policy files; print every error with file:line:column.
    Check {
        /// The directory.
        dir: PathBuf,
        /// Daemon config whose [policy_vars] the policies use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Tell whether a request would be allowed, and by which rule, without running anything.
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Daemon config: its policy directory, [policy_vars] and request limits.
    #[arg(long, default_value = "/etc/toolgate/toolgate.toml")]
    config: PathBuf,
    /// Directory of policy files (overrides the config's; without a readable config, the
    /// policies may use no ${placeholders}).
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// Who asks: `unix:UID[:GID]` or `tcp:ADDRESS:PORT` (default: you, on the Unix socket).
    #[arg(long)]
    caller: Option<String>,
    /// One command line, split without a shell, instead of arguments.
    #[arg(long, conflicts_with = "args")]
    command: Option<String>,
    /// Environment variable the request would set, NAME=VALUE.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Requested time limit.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Print the explanation as JSON.
    #[arg(long)]
    json: bool,
    /// The tool.
    tool: String,
    /// Arguments, after `--`, exactly as a caller would pass them.
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    policy::parse_duration(text)
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

/// Runs the command line; errors print to stderr with exit code 125.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        // Before the runtime's threads exist: this clears LISTEN_FDS from the environment.
        daemon::systemd::capture_passed_socket();
    } else {
        // A client whose reader went away (`| head`) ends quietly, like other command-line tools.
        toolgate::sandbox::default_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("toolgate: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Call(args) => call(args).await,
            Command::Tools(args) => tools(args).await,
            Command::Policy(PolicyCommand::Check { dir, config }) => policy_check(dir, config),
            Command::Usage(args) => usage(args).await,
            Command::TokenHash => token_hash(),
            Command::Doctor(args) => doctor(args).await,
            Command::Policy(PolicyCommand::Explain(args)) => policy_explain(args),
            Command::Audit(AuditCommand::Verify { files }) => audit_verify(&files),
            Command::Mcp(args) => mcp(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("toolgate: {e:#}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    toolgate::telemetry::init(args.log_json);
    let mut config = Config::load(&args.config)?;
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    if let Some(listen) = args.listen {
        config.listen = Some(listen);
    }
    if let Some(dir) = args.policy_dir {
        config.policy_dir = dir;
    }
    if let Some(log) = args.audit_log {
        config.audit_log = log;
    }
    daemon::serve(config).await?;
    Ok(ExitCode::SUCCESS)
}

async fn connect(
    connection: &Connection,
) -> Result<pb::tool_gate_client::ToolGateClient<tonic::transport::Channel>> {
    toolgate::client::connect_unix(&connection.socket)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the daemon at {} (is `toolgate serve` running? set --socket or TOOLGATE_SOCKET)",
                connection.socket.display()
            )
        })
}

/// Prints a refusal and gives the exit code for it.
fn refused(status: &tonic::Status) -> ExitCode {
    eprintln!("toolgate: {:?}: {}", status.code(), status.message());
    ExitCode::from(EXIT_REFUSED)
}

async fn call(args: CallArgs) -> Result<ExitCode> {
    let mut stdin = Vec::new();
    if !args.no_stdin && !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut stdin)
            .context("cannot read standard input")?;
    }
    let invocation = match args.command {
        Some(line) => pb::execute_request::Invocation::Command(line),
        None => pb::execute_request::Invocation::Args(pb::ArgumentList { values: args.args }),
    };
    let request = pb::ExecuteRequest {
        tool: args.tool,
        invocation: Some(invocation),
        stdin,
        env: args
            .env
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
        timeout: args.timeout.map(|t| prost_types::Duration {
            seconds: t.as_secs() as i64,
            nanos: t.subsec_nanos() as i32,
        }),
        request_id: args.request_id.unwrap_or_default(),
    };
    let mut client = connect(&args.connection).await?;
    if args.stream {
        return call_streaming(&mut client, request).await;
    }
    let result = match client.execute(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    if args.json {
        println!("{}", result_json(&result));
    } else {
        std::io::stdout().write_all(&result.stdout)?;
        std::io::stderr().write_all(&result.stderr)?;
        report_end(&result);
    }
    Ok(exit_code(&result))
}

async fn call_streaming(
    client: &mut pb::tool_gate_client::ToolGateClient<tonic::transport::Channel>,
    request: pb::ExecuteRequest,
) -> Result<ExitCode> {
    let mut stream = match client.execute_stream(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the daemon ended the stream without a result"),
            Err(status) => return Ok(refused(&status)),
        };
        match event.event {
            Some(pb::execute_event::Event::Stdout(bytes)) => {
                let mut out = std::io::stdout();
                out.write_all(&bytes)?;
                out.flush()?;
            }
            Some(pb::execute_event::Event::Stderr(bytes)) => std::io::stderr().write_all(&bytes)?,
            Some(pb::execute_event::Event::Exited(result)) => {
                report_end(&result);
                return Ok(exit_code(&result));
            }
            Some(pb::execute_event::Event::Started(_)) | None => {}
        }
    }
}

/// Notes on stderr what the tool's own output cannot say: truncation and timeouts.
fn report_end(result: &pb::ExecuteResult) {
    if result.stdout_truncated {
        eprintln!("toolgate: stdout was truncated at the policy's output cap");
    }
    if result.stderr_truncated {
        eprintln!("toolgate: stderr was truncated at the policy's output cap");
    }
    if result.timed_out {
        eprintln!("toolgate: the tool ran past its time limit and was killed");
    }
}

fn exit_code(result: &pb::ExecuteResult) -> ExitCode {
    use pb::execute_result::Termination;
    if result.timed_out {
        return ExitCode::from(EXIT_TIMED_OUT);
    }
    match result.termination {
        Some(Termination::ExitCode(code)) => ExitCode::from(code.clamp(0, 255) as u8),
        Some(Termination::Signal(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
        None => ExitCode::from(EXIT_REFUSED),
    }
}

fn result_json(result: &pb::ExecuteResult) -> serde_json::Value {
    use pb::execute_result::Termination;
    let seconds = |d: &Option<prost_types::Duration>| {
        d.as_ref()
            .map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
    };
    let (exit_code, signal) = match result.termination {
        Some(Termination::ExitCode(code)) => (Some(code), None),
        Some(Termination::Signal(signal)) => (None, Some(signal)),
        None => (None, None),
    };
    json!({
        "request_id": result.request_id,
        "exit_code": exit_code,
        "signal": signal,
        "timed_out": result.timed_out,
        "stdout": String::from_utf8_lossy(&result.stdout),
        "stderr": String::from_utf8_lossy(&result.stderr),
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "wall_time_seconds": seconds(&result.wall_time),
        "user_cpu_seconds": seconds(&result.user_cpu),
        "system_cpu_seconds": seconds(&result.system_cpu),
        "max_rss_bytes": result.max_rss_bytes,
    })
}

async fn tools(args: ToolsArgs) -> Result<ExitCode> {
    let mut client = connect(&args.connection).await?;
    let tools = match client.list_tools(pb::ListToolsRequest {}).await {
        Ok(response) => response.into_inner().tools,
        Err(status) if status.code() == Code::Unavailable => return Ok(refused(&status)),
        Err(status) => return Ok(refused(&status)),
    };
    if let Some(format) = args.schema {
        return print_schema(&tools, format);
    }
    if args.json {
        let list: Vec<_> = tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "program": t.program,
                    "argument_rules": t.argument_rules,
                    "timeout_seconds": t.timeout.as_ref().map_or(0, |d| d.seconds),
                    "max_output_bytes": t.max_output_bytes,
                    "env_allowed": t.env_allowed,
                    "programs": t.programs,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    for tool in &tools {
        println!("{:<16} {}", tool.name, tool.description);
        for rule in &tool.argument_rules {
            println!("{:<16}   {rule}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_check(dir: PathBuf, config: Option<PathBuf>) -> Result<ExitCode> {
    let vars = match config {
        Some(path) => Config::load(&path)?.policy_vars,
        None => Default::default(),
    };
    match PolicySet::load_dir(&dir, &vars) {
        Ok(set) => {
            let names: Vec<&str> = set.tools().map(|t| t.name.as_str()).collect();
            println!("ok: {} tools ({})", names.len(), names.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Err(policy::Error::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics.0 {
                eprintln!("{diagnostic}");
            }
            eprintln!("{} error(s)", diagnostics.0.len());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

async fn usage(args: UsageArgs) -> Result<ExitCode> {
    let mut client = connect(&args.connection).await?;
    let request = pb::GetUsageRequest {
        tool: args.tool.unwrap_or_default(),
    };
    let usage = match client.get_usage(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(refused(&status)),
    };
    let resets = |l: &pb::LimitUsage| l.resets_in.as_ref().map_or(0, |d| d.seconds);
    if args.json {
        let limits: Vec<_> = usage
            .limits
            .iter()
            .map(|l| {
                json!({
                    "rule": l.rule,
                    "tool": l.tool,
                    "limit": l.limit,
                    "limit_value": l.limit_value,
                    "used": l.used,
                    "remaining": l.remaining,
                    "unit": l.unit,
                    "resets_in_seconds": resets(l),
                })
            })
            .collect();
        let out = json!({
            "caller": usage.caller,
            "limits": limits,
            "store_fallbacks": usage.store_fallbacks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("caller: {}", usage.caller);
    if usage.limits.is_empty() {
        println!("no rate limits or quotas apply");
    }
    for l in &usage.limits {
        let tool = if l.tool.is_empty() {
            "(all tools)"
        } else {
            &l.tool
        };
        println!(
            "{:<16} {:<34} {} left of {} {} ({}), resets in {}s",
            tool,
            l.rule,
            l.remaining,
            l.limit_value,
            l.unit,
            l.limit,
            resets(l)
        );
    }
    if usage.store_fallbacks > 0 {
        println!(
            "note: {} calls used this daemon's local limits because the shared store failed",
            usage.store_fallbacks
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn token_hash() -> Result<ExitCode> {
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .context("cannot read the token from standard input")?;
    let token = token.trim();
    if token.is_empty() {
        bail!("give the token on standard input");
    }
    println!("{}", toolgate::auth::token_digest(token));
    Ok(ExitCode::SUCCESS)
}

/// Prints the host's isolation features, then runs `/bin/true` through the daemon's own spawn
/// path with every feature on; exit 1 when that fails.
async fn doctor(args: DoctorArgs) -> Result<ExitCode> {
    use toolgate::sandbox::{
        self, DenyAction, Host, Limits, Network, Plan, Profile, SeccompSpec, Spec,
    };
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let run_as = policy::lookup_user(&config.run_as).map_err(anyhow::Error::msg)?;
    let staging = tempfile_dir()?;
    let host = Host::prepare(&staging.join("sandbox-root"), run_as)?;
    for (feature, state) in host.features() {
        println!("{feature:<20} {state}");
    }
    let spec = Spec {
        read: Vec::new(),
        write: Vec::new(),
        system_paths: true,
        network: Network::None,
        limits: Limits {
            memory: Some(64 << 20),
            processes: Some(8),
            cpu_time: Some(Duration::from_secs(2)),
            cpus: Some(1.0),
            open_files: 64,
            file_size: Some(0),
            tmp_size: 1 << 20,
        },
        run_as: None,
        min_landlock_abi: None,
        seccomp: SeccompSpec {
            profile: "default".to_owned(),
            allow: Vec::new(),
            deny_action: DenyAction::Errno,
            network: Network::None,
        },
    };
    let program = std::path::Path::new("/bin/true");
    let profile = Profile::compile(&spec, program, std::path::Path::new("/"))?;
    let plan = Plan::new(
        program,
        &["/bin/true".to_owned()],
        &[],
        std::path::Path::new("/"),
        &profile,
        &host,
    )?;
    let started = std::time::Instant::now();
    let result = match sandbox::spawn(&plan, &host).await {
        Ok(child) => toolgate::supervise::supervise(
            child,
            toolgate::supervise::Supervision {
                stdin: Vec::new(),
                deadline: tokio::time::Instant::now() + Duration::from_secs(10),
                cancel: tokio_util::sync::CancellationToken::new(),
                max_output: 4096,
                events: None,
            },
        )
        .await
        .map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    let _ = std::fs::remove_dir_all(&staging);
    match result {
        Ok(outcome) if outcome.status == sandbox::ExitStatus::Code(0) => {
            println!(
                "{:<20} ok: /bin/true ran in a full sandbox in {:.1} ms",
                "sandbox test",
                started.elapsed().as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(outcome) => {
            println!(
                "{:<20} FAILED: /bin/true ended with {:?}",
                "sandbox test", outcome.status
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("{:<20} FAILED: {e:#}", "sandbox test");
            Ok(ExitCode::from(1))
        }
    }
}

/// A fresh private directory under the system's temporary directory.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("toolgate-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn parse_caller(text: &str) -> Result<Caller> {
    if let Some(addr) = text.strip_prefix("tcp:") {
        let addr = addr
            .parse()
            .with_context(|| format!("`{addr}` is not ADDRESS:PORT"))?;
        return Ok(Caller::Tcp {
            addr,
            cert: None,
            token: None,
        });
    }
    let ids = text.strip_prefix("unix:").with_context(|| {
        format!("caller `{text}` is neither unix:UID[:GID] nor tcp:ADDRESS:PORT")
    })?;
    let (uid, gid) = match ids.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (ids, None),
    };
    let uid: u32 = uid
        .parse()
        .with_context(|| format!("`{uid}` is not a uid"))?;
    let gid: u32 = match gid {
        Some(gid) => gid
            .parse()
            .with_context(|| format!("`{gid}` is not a gid"))?,
        None => uid,
    };
    Ok(Caller::Unix {
        uid,
        gid,
        pid: None,
        user: None,
        groups: Vec::new(),
    })
}

/// The caller this process would be on the daemon's socket.
fn current_caller() -> Caller {
    use std::os::unix::fs::MetadataExt;
    // /proc/self is owned by the process's effective ids: no unsafe getuid needed.
    match std::fs::metadata("/proc/self") {
        Ok(meta) => Caller::Unix {
            uid: meta.uid(),
            gid: meta.gid(),
            pid: None,
            user: None,
            groups: Vec::new(),
        },
        Err(_) => Caller::Unknown,
    }
}

fn policy_explain(args: ExplainArgs) -> Result<ExitCode> {
    let config = match (Config::load(&args.config), &args.policy_dir) {
        (Ok(config), _) => config,
        // Only a policy directory given: the defaults, with no placeholders.
        (Err(_), Some(_)) => Config::default(),
        (Err(e), None) => return Err(e.into()),
    };
    let dir = args.policy_dir.clone().unwrap_or(config.policy_dir.clone());
    let set = match PolicySet::load_dir(&dir, &config.policy_vars) {
        Ok(set) => set,
        Err(policy::Error::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics.0 {
                eprintln!("{diagnostic}");
            }
            bail!(
                "the policies in {} are invalid ({} error(s)); `toolgate policy check` lists them",
                dir.display(),
                diagnostics.0.len()
            );
        }
        Err(e) => return Err(e.into()),
    };
    let caller = match &args.caller {
        Some(text) => parse_caller(text)?,
        None => current_caller(),
    };
    let input = match args.command {
        Some(line) => Input::Command(line),
        None => Input::Args(args.args),
    };
    let invocation = Invocation {
        caller: caller.clone(),
        tool: args.tool.clone(),
        input,
        stdin: Vec::new(),
        env: args.env.into_iter().collect(),
        timeout: args.timeout,
        request_id: String::new(),
        identity_error: None,
    };
    // The policy's checks, then whether this caller may call the tool at all.
    let decision = gate::check(&set, &config.limits, &invocation).and_then(|checked| {
        if toolgate::admission::may_call(&config.admission.default_callers, &caller, &checked.tool)
        {
            Ok(checked)
        } else {
            Err(toolgate::admission::Error::NotAllowed {
                tool: checked.tool.name.clone(),
                caller: caller.to_string(),
            }
            .into())
        }
    });
    let source = set.tool(&args.tool).map(|t| t.source.display().to_string());
    let (allowed, rule) = match &decision {
        Ok(_) => (true, "policy".to_owned()),
        Err(e) => (false, e.rule()),
    };
    if args.json {
        let mut out = json!({
            "tool": args.tool,
            "caller": caller,
            "decision": if allowed { "allowed" } else { "refused" },
            "rule": rule,
            "policy_file": source,
        });
        match &decision {
            Ok(checked) => {
                out["argv"] = json!(checked.argv);
                out["env"] = json!(
                    checked
                        .env
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                );
                out["timeout_seconds"] = json!(checked.timeout.as_secs_f64());
            }
            Err(e) => out["message"] = json!(e.to_string()),
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("tool:     {}", args.tool);
        if let Some(source) = &source {
            println!("policy:   {source}");
        }
        println!("caller:   {caller}");
        println!("decision: {}", if allowed { "allowed" } else { "refused" });
        println!("rule:     {rule}");
        match &decision {
            Ok(checked) => {
                let shown = shlex::try_join(checked.argv.iter().map(String::as_str))
                    .unwrap_or_else(|_| format!("{:?}", checked.argv));
                println!("would run: {shown}");
                for (name, value) in &checked.env {
                    println!("env:      {name}={value}");
                }
                println!("timeout:  {}", humantime::format_duration(checked.timeout));
            }
            Err(e) => println!("reason:   {e}"),
        }
        println!(
            "note:     this checks the policy only; a running daemon may still refuse for its state (draining, audit log unwritable)"
        );
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn audit_verify(files: &[PathBuf]) -> Result<ExitCode> {
    match toolgate::audit::verify::verify(files) {
        Ok(summary) => {
            println!(
                "ok: {} records, seq {} to {}, in {} file(s); head {}",
                summary.records,
                summary.first_seq,
                summary.last_seq,
                files.len(),
                summary.head
            );
            if let Some(previous) = &summary.continues_from {
                println!(
                    "note: the chain continues from {previous}, which was not given (rotated away?): records before seq {} are not checked",
                    summary.first_seq
                );
            }
            if summary.torn_tail > 0 {
                println!(
                    "note: the newest file ends with {} bytes of an incomplete record (a crash during a write); it was never acknowledged",
                    summary.torn_tail
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problem) => {
            eprintln!("{problem}");
            eprintln!("audit chain broken: records from there on cannot be trusted");
            Ok(ExitCode::from(1))
        }
    }
}
