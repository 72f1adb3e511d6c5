//! Policies: which tools exist and the rules each runs under, loaded from a directory of TOML.
//!
//! Default deny: a tool no policy file defines cannot run. A set is loaded whole: every file is
//! parsed and every tool compiled (paths checked, patterns compiled, sandbox profile built,
//! examples checked against the rules) and all errors are reported together, each with its
//! file, line and column. An invalid set is never partly used.
//!
//! Paths in a policy may use `${name}` placeholders whose values come from the daemon's
//! `[policy_vars]` (so a policy can name "the workspace" without knowing where it is).

mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::audit::redact::Redactor;
use crate::command::rules::{ArgRules, Pattern};
use crate::command::{self, Position};
use crate::sandbox::{self, DenyAction, Limits, Network, Profile, SeccompSpec, TcpPorts};

pub use schema::parse_byte_size;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
const DEFAULT_OPEN_FILES: u64 = 1024;
const DEFAULT_TMP_SIZE: u64 = 64 << 20;

/// Values for `${name}` placeholders in policy paths.
pub type Vars = BTreeMap<String, String>;

/// One tool, compiled and ready to run.
#[derive(Debug)]
pub struct Tool {
    /// Its name, as requests give it.
    pub name: String,
    /// What it does, for callers.
    pub description: String,
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Arguments placed before the caller's.
    pub fixed_args: Vec<String>,
    /// Rules on the caller's arguments.
    pub rules: ArgRules,
    /// Environment names a request may set.
    pub env_allow: BTreeSet<String>,
    /// Environment always set.
    pub env_set: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Time limit.
    pub timeout: Duration,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output: u64,
    /// The compiled sandbox.
    pub sandbox: Profile,
    /// The policy file that defines it.
    pub source: PathBuf,
    /// Who may call it and its limits.
    pub admission: crate::admission::ToolAdmission,
    /// Secret arguments to hide in audit records (`audit.redact`).
    pub redact: Redactor,
    /// A shell-like tool's programs by the word that picks them (the first word of a
    /// `command`); empty for a tool with one program. Each is a whole tool named like this one,
    /// with the shared settings and its own program and argument rules; this tool's own
    /// `program` and `rules` are those of the first and are never used to run anything.
    pub programs: BTreeMap<String, Arc<Tool>>,
}

impl Tool {
    /// The program's file name: besides the tool's name, what a `command` may start with.
    pub fn program_name(&self) -> &str {
        self.program
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    /// For a shell-like tool, the program picked by `word` (the first word of a command).
    pub fn select(&self, word: &str) -> Option<&Arc<Tool>> {
        self.programs.get(word)
    }

    /// The argument rules in words; for a shell-like tool, which words pick a program and each
    /// program's rules.
    pub fn describe_rules(&self) -> Vec<String> {
        if self.programs.is_empty() {
            return self.rules.describe();
        }
        let words: Vec<&str> = self.programs.keys().map(String::as_str).collect();
        let mut out = vec![format!(
            "give a `command` whose first word picks the program: {}.",
            words.join(", ")
        )];
        for (word, tool) in &self.programs {
            let rules = tool.rules.describe();
            if rules.is_empty() {
                out.push(format!("`{word}`: any arguments"));
            }
            out.extend(rules.into_iter().map(|rule| format!("`{word}`: {rule}")));
        }
        out
    }
}

/// Every tool the loaded policy files define.
#[derive(Debug, Default)]
pub struct PolicySet {
    tools: BTreeMap<String, Arc<Tool>>,
}

impl PolicySet {
    /// Loads every `*.toml` file of `dir`.
    pub fn load_dir(dir: &Path, vars: &Vars) -> Result<Self, Error> {
        let read_dir = |source| Error::ReadDir {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_dir)?;
        files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            sources.push((path, text));
        }
        Self::from_sources(&sources, vars)
    }

    /// Compiles policy texts, each named by its path (used in error messages).
    pub fn from_sources(sources: &[(PathBuf, String)], vars: &Vars) -> Result<Self, Error> {
        let mut tools: BTreeMap<String, Arc<Tool>> = BTreeMap::new();
        let mut errors = Vec::new();
        for (path, text) in sources {
            let mut report = |span: Range<usize>, message: String| {
                errors.push(Diagnostic::new(path, text, span, message));
            };
            let file: schema::PolicyFile = match toml::from_str(text) {
                Ok(file) => file,
                Err(e) => {
                    report(e.span().unwrap_or(0..0), e.message().to_owned());
                    continue;
                }
            };
            for (name, spec) in file.tool {
                let span = name.span();
                let name = name.into_inner();
                if !valid_tool_name(&name) {
                    report(
                        span,
                        format!(
                            "tool name `{name}` must be 1-64 characters of a-z, A-Z, 0-9, `_`, `-`, `.`"
                        ),
                    );
                    continue;
                }
                if let Some(existing) = tools.get(&name) {
                    report(
                        span,
                        format!(
                            "tool `{name}` is already defined in {}",
                            existing.source.display()
                        ),
                    );
                    continue;
                }
                match compile(&name, span.clone(), spec, path, vars) {
                    Ok(tool) => {
                        tools.insert(name, Arc::new(tool));
                    }
                    Err(problems) => {
                        for (span, message) in problems {
                            report(span, format!("tool `{name}`: {message}"));
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(Self { tools })
        } else {
            Err(Error::Invalid(Diagnostics(errors)))
        }
    }

    /// The tool named `name`.
    pub fn tool(&self, name: &str) -> Option<&Arc<Tool>> {
        self.tools.get(name)
    }

    /// All tools, sorted by name.
    pub fn tools(&self) -> impl Iterator<Item = &Arc<Tool>> {
        self.tools.values()
    }
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

type Problems = Vec<(Range<usize>, String)>;

/// Compiles one tool, collecting every problem with its span.
fn compile(
    name: &str,
    name_span: Range<usize>,
    mut spec: schema::ToolSpec,
    source: &Path,
    vars: &Vars,
) -> Result<Tool, Problems> {
    if !spec.programs.is_empty() {
        return compile_several(name, spec, source, vars);
    }
    match spec.program.take() {
        Some(program) => compile_one(name, program, spec, source, vars),
        None => Err(vec![(
            name_span,
            "`program` is required (or `programs`, for a tool that runs several)".to_owned(),
        )]),
    }
}

/// Compiles a shell-like tool (`[tool.NAME.programs.WORD]`): each program is compiled as a
/// whole tool with the shared settings, so picking one yields exactly what a single-program
/// tool would be. The tool's own examples are command lines whose first word picks a program.
fn compile_several(
    name: &str,
    mut spec: schema::ToolSpec,
    source: &Path,
    vars: &Vars,
) -> Result<Tool, Problems> {
    let mut problems: Problems = Vec::new();
    if let Some(program) = &spec.program {
        problems.push((
            program.span(),
            "a tool with `programs` names each program under [tool.NAME.programs.WORD]; remove `program`".to_owned(),
        ));
    }
    if !spec.args.is_empty() || !spec.arguments.is_empty() {
        let span = spec.programs.keys().next().map_or(0..0, Spanned::span);
        problems.push((
            span,
            "a tool with `programs` takes `args` and `[arguments]` per program, under [tool.NAME.programs.WORD]".to_owned(),
        ));
    }
    let examples = std::mem::take(&mut spec.examples);
    let programs = std::mem::take(&mut spec.programs);
    let mut compiled: BTreeMap<String, Arc<Tool>> = BTreeMap::new();
    let mut first = None;
    for (word, program) in programs {
        if !valid_tool_name(word.get_ref()) {
            problems.push((
                word.span(),
                format!(
                    "program word `{}` must be 1-64 characters of a-z, A-Z, 0-9, `_`, `-`, `.`",
                    word.get_ref()
                ),
            ));
            continue;
        }
        let mut one = spec.clone();
        one.args = program.args.clone();
        one.arguments = program.arguments.clone();
        one.examples = program.examples.clone();
        first.get_or_insert_with(|| (program.program.clone(), one.clone()));
        match compile_one(name, program.program, one, source, vars) {
            Ok(tool) => {
                compiled.insert(word.into_inner(), Arc::new(tool));
            }
            // The shared settings' problems come once per program: report each once.
            Err(found) => {
                for problem in found {
                    if !problems.contains(&problem) {
                        problems.push(problem);
                    }
                }
            }
        }
    }
    check_command_examples(&compiled, &examples, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let (program, mut one) = first.ok_or_else(Vec::new)?;
    one.examples = schema::ExamplesSpec::default();
    let mut tool = compile_one(name, program, one, source, vars)?;
    tool.programs = compiled;
    Ok(tool)
}

/// A shell-like tool's examples: whole command lines, the first word picking the program.
fn check_command_examples(
    programs: &BTreeMap<String, Arc<Tool>>,
    examples: &schema::ExamplesSpec,
    problems: &mut Problems,
) {
    run_examples(examples, problems, |line| {
        let line = command::split_command(line, usize::MAX)?;
        Ok(match programs.get(&line.program) {
            None => Err(format!("`{}` is not one of the programs", line.program)),
            Some(tool) => tool.rules.check(&line.argv).map_err(|d| d.to_string()),
        })
    });
}

/// Runs every example through `verdict` (which splits it, or fails to) and records each one
/// whose verdict is not what the policy says it should be.
fn run_examples(
    examples: &schema::ExamplesSpec,
    problems: &mut Problems,
    verdict: impl Fn(&str) -> Result<Result<(), String>, command::Error>,
) {
    let cases = examples
        .allow
        .iter()
        .map(|e| (e, true))
        .chain(examples.deny.iter().map(|e| (e, false)));
    for (example, should_pass) in cases {
        let text = example.get_ref();
        match (verdict(text), should_pass) {
            (Err(e), _) => {
                problems.push((example.span(), format!("example cannot be split: {e}")));
            }
            (Ok(Ok(())), true) | (Ok(Err(_)), false) => {}
            (Ok(Err(denied)), true) => problems.push((
                example.span(),
                format!("example `{text}` should be allowed but is refused: {denied}"),
            )),
            (Ok(Ok(())), false) => problems.push((
                example.span(),
                format!("example `{text}` should be refused but the rules allow it"),
            )),
        }
    }
}

/// Compiles a tool running `program`, collecting every problem with its span.
fn compile_one(
    name: &str,
    program_spec: Spanned<String>,
    spec: schema::ToolSpec,
    source: &Path,
    vars: &Vars,
) -> Result<Tool, Problems> {
    let mut problems: Problems = Vec::new();
    let program = expand(&program_spec, vars).and_then(|path| check_program(&path).map(|()| path));
    let program = record(&mut problems, program_spec.span(), program);
    let cwd = match &spec.cwd {
        Some(cwd) => {
            let path = expand(cwd, vars).and_then(|path| check_dir(&path).map(|()| path));
            record(&mut problems, cwd.span(), path)
        }
        None => Some(PathBuf::from("/")),
    };
    let timeout = spec
        .timeout
        .as_ref()
        .map(|t| record(&mut problems, t.span(), parse_duration(t.get_ref())))
        .unwrap_or(Some(DEFAULT_TIMEOUT));
    let max_output = spec
        .max_output
        .as_ref()
        .map_or(DEFAULT_MAX_OUTPUT, |m| m.get_ref().0);

    let rules = compile_rules(spec.arguments, &mut problems);
    let (env_allow, env_set) = compile_env(spec.env, &mut problems);
    let seccomp_span = spec.sandbox.seccomp.as_ref().map(Spanned::span);
    let sandbox_spec = compile_sandbox(spec.sandbox, vars, &mut problems);
    let admission = crate::admission::spec::compile_tool(
        crate::admission::spec::ToolKeys {
            callers: spec.callers,
            rate_limit: spec.rate_limit,
            max_concurrent: spec.max_concurrent,
            quota: spec.quota,
            breaker: spec.breaker,
        },
        &mut problems,
    );
    let redact = compile_redact(&spec.audit.redact, &mut problems);

    if let Some(rules) = &rules {
        check_examples(rules, &spec.examples, &mut problems);
    }
    let (Some(program), Some(cwd), Some(timeout), Some(rules), Some(sandbox_spec)) =
        (program, cwd, timeout, rules, sandbox_spec)
    else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let sandbox = Profile::compile(&sandbox_spec, &program, &cwd).map_err(|e| {
        let span = match (&e, seccomp_span) {
            (sandbox::Error::Seccomp(_), Some(span)) => span,
            _ => program_spec.span(),
        };
        vec![(span, format!("sandbox: {e}"))]
    })?;
    Ok(Tool {
        name: name.to_owned(),
        description: spec.description,
        program,
        fixed_args: spec.args,
        rules,
        env_allow,
        env_set,
        cwd,
        timeout,
        max_output,
        sandbox,
        source: source.to_owned(),
        admission,
        redact,
        programs: BTreeMap::new(),
    })
}

/// Compiles `audit.redact`, reporting each pattern that does not compile at its place.
fn compile_redact(patterns: &[Spanned<String>], problems: &mut Problems) -> Redactor {
    for pattern in patterns {
        if let Err(e) = Redactor::new(&[pattern.get_ref()]) {
            problems.push((pattern.span(), e));
        }
    }
    let sources: Vec<&String> = patterns.iter().map(Spanned::get_ref).collect();
    Redactor::new(&sources).unwrap_or_default()
}

/// Keeps the value, or records the problem at `span` and gives None.
fn record<T>(problems: &mut Problems, span: Range<usize>, value: Result<T, String>) -> Option<T> {
    value.map_err(|message| problems.push((span, message))).ok()
}

fn compile_rules(spec: schema::ArgumentsSpec, problems: &mut Problems) -> Option<ArgRules> {
    let mut compile_patterns = |list: Vec<Spanned<String>>| -> Option<Vec<Pattern>> {
        let compiled: Vec<Option<Pattern>> = list
            .iter()
            .map(|p| {
                record(
                    problems,
                    p.span(),
                    Pattern::new(p.get_ref()).map_err(|e| format!("invalid pattern: {e}")),
                )
            })
            .collect();
        compiled.into_iter().collect()
    };
    let deny_patterns = compile_patterns(spec.deny_patterns)?;
    let positional = match spec.positional {
        Some(list) => Some(compile_patterns(list)?),
        None => None,
    };
    Some(ArgRules {
        max_count: spec.max_count,
        max_length: spec.max_length,
        allow_flags: spec.allow_flags,
        deny_flags: spec.deny_flags,
        flags_with_value: spec.flags_with_value,
        deny_patterns,
        positional,
        positional_help: spec.positional_help,
        end_of_options: spec.end_of_options.unwrap_or(true),
        subcommands: spec.subcommands,
    })
}

fn compile_env(
    spec: schema::EnvSpec,
    problems: &mut Problems,
) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut allow = BTreeSet::new();
    for name in spec.allow {
        let text = name.get_ref();
        if !valid_env_name(text) {
            problems.push((
                name.span(),
                format!("`{text}` is not a valid variable name"),
            ));
        } else if text.starts_with("LD_") {
            problems.push((
                name.span(),
                format!("`{text}` cannot be allowed: LD_ variables let a caller load code into the program"),
            ));
        } else if spec.set.contains_key(text) {
            problems.push((
                name.span(),
                format!("`{text}` is both allowed and fixed in env.set; keep one"),
            ));
        } else {
            allow.insert(text.clone());
        }
    }
    (allow, spec.set)
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn compile_sandbox(
    spec: schema::SandboxSpec,
    vars: &Vars,
    problems: &mut Problems,
) -> Option<sandbox::Spec> {
    let mut paths = |list: &[Spanned<String>]| -> Vec<PathBuf> {
        list.iter()
            .filter_map(|p| {
                let path = expand(p, vars).and_then(|path| {
                    let real = path
                        .canonicalize()
                        .map_err(|e| format!("`{}` cannot be used: {e}", path.display()))?;
                    if real == Path::new("/") {
                        return Err("`/` would hide the sandbox's own /proc, /dev and /tmp: name the directories the tool needs".to_owned());
                    }
                    if real.starts_with("/proc") || real.starts_with("/dev") {
                        return Err(format!(
                            "`{}`: the sandbox has its own /proc (of the tool's processes) and /dev (null, zero, full, random, urandom); host ones cannot be added",
                            real.display()
                        ));
                    }
                    Ok(real)
                });
                record(problems, p.span(), path)
            })
            .collect()
    };
    let read = paths(&spec.read);
    let write = paths(&spec.write);
    let ports = TcpPorts {
        connect: spec.tcp_connect.as_ref().map(|p| p.get_ref().clone()),
        bind: spec.tcp_bind.as_ref().map(|p| p.get_ref().clone()),
    };
    let network = match spec
        .network
        .as_ref()
        .map(|n| (n.get_ref().as_str(), n.span()))
    {
        None | Some(("none", _)) => {
            if let Some(span) = spec
                .tcp_connect
                .as_ref()
                .map(Spanned::span)
                .or_else(|| spec.tcp_bind.as_ref().map(Spanned::span))
            {
                problems.push((
                    span,
                    "TCP port lists need network = \"allow\" (with \"none\" the tool has no network)".to_owned(),
                ));
            }
            Network::None
        }
        Some(("allow", _)) => Network::Allow(ports),
        Some((other, span)) => {
            problems.push((
                span,
                format!("network must be \"none\" or \"allow\", not \"{other}\""),
            ));
            return None;
        }
    };
    let cpu_time = match &spec.limits.cpu_time {
        Some(t) => Some(record(problems, t.span(), parse_duration(t.get_ref()))?),
        None => None,
    };
    let cpus = match &spec.limits.cpus {
        Some(c) if !(*c.get_ref() > 0.0 && c.get_ref().is_finite()) => {
            problems.push((
                c.span(),
                "cpus must be a positive number of cores, like 0.5 or 2".to_owned(),
            ));
            return None;
        }
        Some(c) => Some(*c.get_ref()),
        None => None,
    };
    let run_as = match &spec.run_as {
        Some(user) => Some(record(problems, user.span(), lookup_user(user.get_ref()))?),
        None => None,
    };
    let min_landlock_abi = spec.min_landlock_abi.as_ref().map(|a| *a.get_ref());
    let seccomp = match &spec.seccomp {
        None => SeccompSpec {
            profile: "default".to_owned(),
            allow: Vec::new(),
            deny_action: DenyAction::Errno,
            network: Network::None,
        },
        Some(table) => {
            let deny_action = match table.get_ref().action.as_deref() {
                None | Some("errno") => DenyAction::Errno,
                Some("kill") => DenyAction::Kill,
                Some(other) => {
                    problems.push((
                        table.span(),
                        format!("seccomp.action must be \"errno\" or \"kill\", not \"{other}\""),
                    ));
                    return None;
                }
            };
            SeccompSpec {
                profile: table
                    .get_ref()
                    .profile
                    .clone()
                    .unwrap_or_else(|| "default".to_owned()),
                allow: table.get_ref().allow.clone(),
                deny_action,
                network: Network::None,
            }
        }
    };
    Some(sandbox::Spec {
        read,
        write,
        system_paths: spec.system_paths.unwrap_or(true),
        network,
        limits: Limits {
            memory: spec.limits.memory.map(|b| b.0),
            processes: spec.limits.processes,
            cpu_time,
            cpus,
            open_files: spec.limits.open_files.unwrap_or(DEFAULT_OPEN_FILES),
            file_size: spec.limits.file_size.map(|b| b.0),
            tmp_size: spec.limits.tmp_size.map_or(DEFAULT_TMP_SIZE, |b| b.0),
        },
        run_as,
        min_landlock_abi,
        seccomp,
    })
}

/// Resolves a user name (or numeric uid) to its uid and primary gid from `/etc/passwd`.
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd to resolve `{name}`: {e}"))?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 {
            continue;
        }
        if fields[0] == name || fields[2] == name {
            let uid = fields[2]
                .parse()
                .map_err(|_| format!("bad uid for `{name}` in /etc/passwd"))?;
            let gid = fields[3]
                .parse()
                .map_err(|_| format!("bad gid for `{name}` in /etc/passwd"))?;
            if uid == 0 {
                return Err(format!(
                    "`{name}` is root: tools never run as root; name an unprivileged user"
                ));
            }
            return Ok((uid, gid));
        }
    }
    Err(format!("no user `{name}` in /etc/passwd"))
}

/// Every `allow` example must pass the rules and every `deny` example must be refused.
fn check_examples(rules: &ArgRules, examples: &schema::ExamplesSpec, problems: &mut Problems) {
    run_examples(examples, problems, |line| {
        let argv = command::split_args(line, usize::MAX)?;
        Ok(rules.check(&argv).map_err(|d| d.to_string()))
    });
}

/// Replaces `${name}` with its value and requires an absolute path.
fn expand(text: &Spanned<String>, vars: &Vars) -> Result<PathBuf, String> {
    let mut out = String::new();
    let mut rest = text.get_ref().as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` placeholder".to_owned())?;
        let name = &after[..end];
        let value = vars.get(name).ok_or_else(|| {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            format!(
                "unknown placeholder `${{{name}}}`; define it under [policy_vars] in the daemon config (defined: {})",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let path = PathBuf::from(out);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("`{}` must be an absolute path", path.display()))
    }
}

fn check_program(path: &Path) -> Result<(), String> {
    let meta = path
        .metadata()
        .map_err(|e| format!("program `{}` cannot be used: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "program `{}` is not a regular file",
            path.display()
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("program `{}` is not executable", path.display()));
    }
    Ok(())
}

fn check_dir(path: &Path) -> Result<(), String> {
    match path.metadata() {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("`{}` is not a directory", path.display())),
        Err(e) => Err(format!("`{}` cannot be used: {e}", path.display())),
    }
}

/// Parses `"30s"`, `"2m"`, `"500ms"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}): write e.g. \"500ms\", \"30s\" or \"2m\"")
    })
}

/// One problem in a policy file, located for the person who edits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// Where in it.
    pub at: Position,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl Diagnostic {
    fn new(file: &Path, text: &str, span: Range<usize>, message: String) -> Self {
        let start = span.start.min(text.len());
        let start = (0..=start)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        Self {
            file: file.to_owned(),
            at: Position::of(text, start),
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.at.line,
            self.at.column,
            self.message.replace('\n', " ")
        )
    }
}

/// All problems of a policy set, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory could not be listed.
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Files were read but are not a valid set.
    #[error("invalid policy set:\n{0}")]
    Invalid(Diagnostics),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<PolicySet, Error> {
        let vars = Vars::from([("workspace".to_owned(), "/tmp".to_owned())]);
        PolicySet::from_sources(&[(PathBuf::from("p.toml"), text.to_owned())], &vars)
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text) {
            Err(Error::Invalid(d)) => d.0.iter().map(ToString::to_string).collect(),
            other => panic!("expected diagnostics, got {other:?}"),
        }
    }

    #[test]
    fn loads_a_tool() {
        let set = load(
            r#"
[tool.echo]
description = "print"
program = "/bin/echo"
cwd = "${workspace}"
timeout = "5s"
max_output = "4KiB"
[tool.echo.arguments]
allow_flags = ["-n"]
[tool.echo.examples]
allow = ["-n hi", "'a; b'"]
deny = ["-e x"]
"#,
        )
        .unwrap();
        let tool = set.tool("echo").unwrap();
        assert_eq!(tool.program_name(), "echo");
        assert_eq!(tool.cwd, Path::new("/tmp"));
        assert_eq!(tool.timeout, Duration::from_secs(5));
        assert_eq!(tool.max_output, 4096);
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let e = errors("[tool.echo]\nprogram = \"/bin/echo\"\ntimeotu = \"5s\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("p.toml:3:1: unknown field `timeotu`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let e = errors(
            r#"[tool.a]
program = "/no/such/program"
timeout = "soon"
[tool.a.arguments]
positional = ["(unclosed"]
[tool.a.sandbox]
read = ["relative/path", "${nope}/x"]
network = "some"
"#,
        );
        let joined = e.join("\n");
        assert!(
            joined.contains("p.toml:2:11: tool `a`: program `/no/such/program` cannot be used"),
            "{joined}"
        );
        assert!(
            joined.contains("p.toml:3:11: tool `a`: `soon` is not a duration"),
            "{joined}"
        );
        assert!(
            joined.contains("p.toml:5:15: tool `a`: invalid pattern"),
            "{joined}"
        );
        assert!(
            joined.contains("p.toml:7:9: tool `a`: `relative/path` must be an absolute path"),
            "{joined}"
        );
        assert!(joined.contains("unknown placeholder `${nope}`"), "{joined}");
        assert!(
            joined.contains("p.toml:8:11: tool `a`: network must be"),
            "{joined}"
        );
    }

    #[test]
    fn examples_are_checked_at_load() {
        let e = errors(
            r#"[tool.cat]
program = "/bin/cat"
[tool.cat.arguments]
positional = ['[^/].*']
[tool.cat.examples]
allow = ["/etc/passwd"]
deny = ["notes.txt"]
"#,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("p.toml:6:10") && e[0].contains("should be allowed"),
            "{}",
            e[0]
        );
        assert!(
            e[1].contains("p.toml:7:9") && e[1].contains("should be refused"),
            "{}",
            e[1]
        );
    }

    #[test]
    fn duplicate_tools_across_files_are_refused() {
        let text = "[tool.echo]\nprogram = \"/bin/echo\"\n".to_owned();
        let err = PolicySet::from_sources(
            &[
                (PathBuf::from("a.toml"), text.clone()),
                (PathBuf::from("b.toml"), text),
            ],
            &Vars::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("b.toml:1:7: tool `echo` is already defined in a.toml"),
            "{err}"
        );
    }

    #[test]
    fn redaction_patterns_are_checked_at_load() {
        let e = errors("[tool.e]\nprogram = \"/bin/echo\"\n[tool.e.audit]\nredact = [\"(open\"]\n");
        assert!(
            e[0].starts_with("p.toml:4:11: tool `e`: invalid redaction pattern `(open`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn a_shell_like_tool_compiles_each_program_and_checks_command_examples() {
        let set = load(
            r#"
[tool.sh]
cwd = "${workspace}"
rate_limit = { per_caller = "30/minute" }
[tool.sh.examples]
allow = ["echo hi", "true"]
deny = ["rm x", "echo -e x"]
[tool.sh.programs.echo]
program = "/bin/echo"
[tool.sh.programs.echo.arguments]
allow_flags = ["-n"]
[tool.sh.programs.true]
program = "/bin/true"
"#,
        )
        .unwrap();
        let tool = set.tool("sh").unwrap();
        assert_eq!(tool.programs.len(), 2);
        let echo = tool.select("echo").unwrap();
        assert_eq!(echo.name, "sh", "a program runs under its tool's name");
        assert_eq!(echo.cwd, Path::new("/tmp"));
        assert!(echo.admission.per_caller.is_some());
        assert!(tool.select("rm").is_none());
        assert!(tool.describe_rules()[0].contains("echo, true"));

        let e = errors(
            "[tool.sh]\nprogram = \"/bin/echo\"\n[tool.sh.examples]\ndeny = [\"echo x\"]\n[tool.sh.programs.echo]\nprogram = \"/bin/echo\"\n",
        );
        let joined = e.join("\n");
        assert!(
            joined.contains("p.toml:2:11: tool `sh`: a tool with `programs`"),
            "{joined}"
        );
        assert!(joined.contains("should be refused"), "{joined}");
        let e = errors("[tool.none]\ndescription = \"x\"\n");
        assert!(
            e[0].contains("p.toml:1:7: tool `none`: `program` is required"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn dangerous_env_cannot_be_allowed() {
        let e =
            errors("[tool.e]\nprogram = \"/bin/echo\"\n[tool.e.env]\nallow = [\"LD_PRELOAD\"]\n");
        assert!(e[0].contains("LD_ variables"), "{}", e[0]);
    }
}
