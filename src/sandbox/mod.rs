//! The sandbox an invocation runs in, prepared in the parent and applied by the child.
//!
//! A tool's policy compiles once, at policy load, into a [`Profile`]: a landlock ruleset (held
//! as a file descriptor, reused by every invocation), a seccomp BPF program and a list of
//! rlimits. Each invocation then builds a [`Plan`] (program, arguments, environment, working
//! directory as C strings) and [`spawn`]s it. The daemon is multi-threaded, so between clone and
//! exec the child only makes raw syscalls with what the parent prepared: it allocates nothing
//! and takes no lock. That code lives in `sys.rs`, the only `unsafe` code of the crate.
//!
//! The child, in order: starts its own session and process group (so the whole group can be
//! killed), resets the signal state it inherited, puts its pipes on stdin/stdout/stderr and
//! marks every other descriptor close-on-exec, changes directory, applies rlimits, sets
//! `no_new_privs`, restricts itself with landlock, installs the seccomp filter and executes the
//! program. Any failing step is reported to the parent through a close-on-exec pipe.
//!
//! Security assumptions: landlock is required; when the kernel lacks it the invocation is refused
//! ([`Error::LandlockUnavailable`]), never run weaker. The seccomp filter is a deny list here
//! (see `seccomp.rs`); namespaces, capability dropping and cgroups come on top of this later.

mod ruleset;
mod seccomp;
mod sys;

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use seccompiler::BpfProgram;

pub use sys::{Child, ExitStatus, Usage, ensure_standard_fds, landlock_abi};

/// Whether a tool may use the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// No TCP (landlock) and no internet-family sockets (seccomp); Unix sockets remain.
    None,
    /// Unrestricted.
    Allow,
}

/// Resource limits, applied as rlimits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Address space in bytes (RLIMIT_AS).
    pub memory: Option<u64>,
    /// Processes of the tool's user (RLIMIT_NPROC).
    pub processes: Option<u64>,
    /// CPU time (RLIMIT_CPU, whole seconds rounded up).
    pub cpu_time: Option<Duration>,
    /// Open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file written (RLIMIT_FSIZE).
    pub file_size: Option<u64>,
}

/// The sandbox a tool's policy asks for, with paths already checked to exist.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Readable and executable beneath.
    pub read: Vec<PathBuf>,
    /// Readable and writable beneath.
    pub write: Vec<PathBuf>,
    /// Whether the system's library and program directories are readable.
    pub system_paths: bool,
    /// Network access.
    pub network: Network,
    /// Resource limits.
    pub limits: Limits,
}

/// A tool's sandbox compiled once at policy load and shared by all its invocations.
#[derive(Debug)]
pub struct Profile {
    landlock: Result<OwnedFd, String>,
    seccomp: BpfProgram,
    rlimits: Vec<(u32, u64)>,
}

impl Profile {
    /// Builds the landlock ruleset and the seccomp program for `spec`.
    ///
    /// A kernel without landlock does not fail the load: the profile remembers why, and every
    /// invocation of the tool is refused with that reason.
    pub fn compile(spec: &Spec, program: &Path) -> Result<Self, Error> {
        let landlock = match sys::landlock_abi() {
            Some(abi) if abi >= 1 => Ok(ruleset::build(spec, program)?),
            _ => Err("this kernel does not offer landlock (or it is disabled at boot)".to_owned()),
        };
        let seccomp = seccomp::compile(spec.network).map_err(Error::Seccomp)?;
        Ok(Self {
            landlock,
            seccomp,
            rlimits: rlimits(&spec.limits),
        })
    }
}

fn rlimits(limits: &Limits) -> Vec<(u32, u64)> {
    // No core dumps: they would write the tool's memory outside any policy's paths.
    let mut list = vec![
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_NOFILE, limits.open_files),
    ];
    if let Some(bytes) = limits.memory {
        list.push((libc::RLIMIT_AS, bytes));
    }
    if let Some(count) = limits.processes {
        list.push((libc::RLIMIT_NPROC, count));
    }
    if let Some(cpu) = limits.cpu_time {
        list.push((
            libc::RLIMIT_CPU,
            cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0),
        ));
    }
    if let Some(bytes) = limits.file_size {
        list.push((libc::RLIMIT_FSIZE, bytes));
    }
    list
}

/// One invocation ready to spawn: every string already a C string.
#[derive(Debug)]
pub struct Plan<'a> {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    profile: &'a Profile,
}

impl<'a> Plan<'a> {
    /// Prepares `program` with `argv` (its first element is argv\[0\]) and `env`, in `cwd`.
    ///
    /// Fails only on NUL bytes, which earlier stages already refuse.
    pub fn new(
        program: &Path,
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        profile: &'a Profile,
    ) -> Result<Self, Error> {
        let c = |bytes: &[u8]| CString::new(bytes).map_err(|_| Error::NulByte);
        Ok(Self {
            program: c(program.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| c(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
                .collect::<Result<_, _>>()?,
            cwd: c(cwd.as_os_str().as_bytes())?,
            profile,
        })
    }
}

/// Starts `plan` in a fresh sandboxed child; waits only until the program is executing.
pub async fn spawn(plan: &Plan<'_>) -> Result<Child, Error> {
    let landlock = plan
        .profile
        .landlock
        .as_ref()
        .map_err(|reason| Error::LandlockUnavailable(reason.clone()))?;
    let spawned = sys::spawn(&sys::ChildSetup {
        program: &plan.program,
        argv: &plan.argv,
        env: &plan.env,
        cwd: &plan.cwd,
        rlimits: &plan.profile.rlimits,
        landlock,
        seccomp: &plan.profile.seccomp,
    })
    .map_err(Error::Clone)?;
    spawned.started().await
}

/// What can go wrong preparing or starting a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel cannot give the isolation the policy requires.
    #[error("landlock is unavailable: {0}")]
    LandlockUnavailable(String),
    /// A policy path could not be opened for a landlock rule.
    #[error("cannot add landlock rule for {path}: {reason}")]
    LandlockRule {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The landlock ruleset could not be created.
    #[error("cannot create landlock ruleset: {0}")]
    LandlockRuleset(String),
    /// The seccomp filter could not be compiled.
    #[error("cannot compile seccomp filter: {0}")]
    Seccomp(seccompiler::BackendError),
    /// A string for execve held a NUL byte.
    #[error("an argument or environment value contains a NUL byte")]
    NulByte,
    /// clone3 or pipe creation failed.
    #[error("cannot create the child process: {0}")]
    Clone(std::io::Error),
    /// The child failed before executing the program.
    #[error("the child failed to {stage}: {source}")]
    ChildSetup {
        /// The step that failed, e.g. "execute the program".
        stage: &'static str,
        /// The errno it got.
        source: std::io::Error,
    },
}
