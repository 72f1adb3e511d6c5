//! The sandbox an invocation runs in: prepared in the parent, applied by the children.
//!
//! Three layers of preparation keep the per-call work small:
//! - [`Host`], once per daemon: what the kernel offers, whether the daemon is root, the pool of
//!   empty network namespaces, the cgroup subtree and its pool of slots, the staging directory.
//! - [`Profile`], once per tool at policy load: the mount plan of its filesystem view, its
//!   landlock ruleset plan, its seccomp program, rlimits, cgroup limits and `run_as` identity.
//! - [`Plan`], per call: program, arguments, environment and paths as C strings.
//!
//! [`spawn`] then leases a network namespace and a cgroup slot and clones the sandbox (see
//! `sys.rs`, the only `unsafe` code of the crate, for what the children do). Isolation per call:
//! new pid, mount, network (unless the policy allows the network), ipc, uts, cgroup and user
//! namespaces; a minimal root of read-only binds with a private `/tmp` and `/proc`; the tool as
//! an unprivileged user with no capabilities and locked securebits; `no_new_privs`; landlock;
//! seccomp; rlimits; cgroup limits. When its init ends, every process of the sandbox is gone.
//!
//! Security assumptions: the kernel enforces what is asked or the invocation is refused, never
//! run weaker — no landlock, a landlock ABI below the policy's `min_landlock_abi`, or a policy
//! asking for a `run_as` user an unprivileged daemon cannot switch to are all refusals
//! ([`Error::Unsupported`]).

mod bpf;
pub mod cgroup;
mod mounts;
mod ruleset;
mod seccomp;
mod sys;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use seccompiler::BpfProgram;

pub use cgroup::{CgroupLimits, Cgroups};
pub use ruleset::TcpPorts;
pub use seccomp::{DenyAction, SeccompSpec, profiles as seccomp_profiles};
pub use sys::{Child, ExitStatus, Usage, default_sigpipe, ensure_standard_fds, landlock_abi};

use sys::{Identity, MountKind, MountOp};

/// Whether a tool may use the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Its own network namespace with only loopback, and no TCP (landlock) nor non-Unix
    /// sockets (seccomp) even there.
    None,
    /// The host's network, TCP optionally limited to the listed ports.
    Allow(TcpPorts),
}

/// Resource limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Memory in bytes: the cgroup's limit and RLIMIT_AS.
    pub memory: Option<u64>,
    /// Processes: the cgroup's pids.max and RLIMIT_NPROC.
    pub processes: Option<u64>,
    /// CPU time (RLIMIT_CPU, whole seconds rounded up).
    pub cpu_time: Option<Duration>,
    /// CPU bandwidth in cores (cgroup).
    pub cpus: Option<f64>,
    /// Open files (RLIMIT_NOFILE).
    pub open_files: u64,
    /// Largest file written (RLIMIT_FSIZE).
    pub file_size: Option<u64>,
    /// Size of the private `/tmp`.
    pub tmp_size: u64,
}

/// The sandbox a tool's policy asks for, with paths already checked to exist.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Readable beneath (canonical host paths).
    pub read: Vec<PathBuf>,
    /// Readable and writable beneath (canonical host paths).
    pub write: Vec<PathBuf>,
    /// Whether the system's library and program directories are visible.
    pub system_paths: bool,
    /// Network access.
    pub network: Network,
    /// Resource limits.
    pub limits: Limits,
    /// The user and group the tool runs as when the daemon is root.
    pub run_as: Option<(u32, u32)>,
    /// The lowest landlock ABI the tool may run under.
    pub min_landlock_abi: Option<i32>,
    /// The syscall filter (its `network` is taken from [`Spec::network`]).
    pub seccomp: SeccompSpec,
}

/// A tool's sandbox compiled once at policy load and shared by all its invocations.
#[derive(Debug)]
pub struct Profile {
    /// Why the tool cannot run on this kernel, if it cannot.
    unsupported: Option<String>,
    mounts: Vec<mounts::Step>,
    ruleset: ruleset::RulesetPlan,
    seccomp: BpfProgram,
    rlimits: Vec<(u32, u64)>,
    cgroup: CgroupLimits,
    network_namespace: bool,
    run_as: Option<(u32, u32)>,
    /// The tool's root, built once in a mount namespace that each invocation copies (root
    /// daemons only). Made at the first invocation; None when it could not be made.
    template: OnceLock<Option<OwnedFd>>,
}

impl Profile {
    /// Compiles `spec` for a tool running `program` in `cwd`.
    pub fn compile(spec: &Spec, program: &Path, cwd: &Path) -> Result<Self, Error> {
        let abi = landlock_abi().unwrap_or(0);
        let unsupported = match spec.min_landlock_abi {
            _ if abi < 1 => {
                Some("this kernel does not offer landlock (or it is disabled at boot)".to_owned())
            }
            Some(min) if abi < min => Some(format!(
                "the policy requires landlock ABI {min}, this kernel offers {abi}"
            )),
            _ => None,
        };
        let tcp = match &spec.network {
            Network::None => None,
            Network::Allow(ports) => Some(ports),
        };
        let seccomp = seccomp::compile(&SeccompSpec {
            network: spec.network.clone(),
            ..spec.seccomp.clone()
        })
        .map_err(Error::Seccomp)?;
        Ok(Self {
            unsupported,
            mounts: mounts::plan(&mounts::ViewSpec {
                read: &spec.read,
                write: &spec.write,
                system_paths: spec.system_paths,
                program,
                cwd,
                tmp_bytes: spec.limits.tmp_size,
            }),
            ruleset: ruleset::plan(abi, &spec.write, tcp),
            seccomp,
            rlimits: rlimits(&spec.limits),
            cgroup: CgroupLimits {
                memory: spec.limits.memory,
                pids: spec.limits.processes,
                cpus: spec.limits.cpus,
            },
            network_namespace: spec.network == Network::None,
            run_as: spec.run_as,
            template: OnceLock::new(),
        })
    }

    /// The template mount namespace for this tool on `host`, made on first use.
    ///
    /// Copying a prepared namespace replaces, per invocation, ~25 mount calls, a pivot and
    /// the lazy unmount of the copied host mount table with one setns and one unshare. An
    /// unprivileged daemon cannot join a namespace it made outside the tool's user namespace,
    /// so it builds each root from scratch.
    fn template(&self, host: &Host) -> Option<&OwnedFd> {
        if !host.root {
            return None;
        }
        self.template
            .get_or_init(|| {
                let binds_in_tmp = self
                    .mounts
                    .iter()
                    .filter(|s| matches!(s, mounts::Step::Bind { target, .. } if in_tmp(target)))
                    .count();
                if binds_in_tmp > sys::MAX_TREES {
                    return None;
                }
                let ops: Result<Vec<MountOp>, Error> = self
                    .mounts
                    .iter()
                    .filter(|s| !per_call(s))
                    .map(|s| mount_op(s, host.staging.as_bytes()))
                    .collect();
                match ops.map(|ops| sys::mount_template(&host.staging, &ops)) {
                    Ok(Ok(fd)) => Some(fd),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot make a template mount namespace: building each root from scratch");
                        None
                    }
                    Err(_) => None,
                }
            })
            .as_ref()
    }
}

/// Strictly beneath `/tmp`, the per-invocation tmpfs.
fn in_tmp(path: &Path) -> bool {
    path.starts_with("/tmp") && path != Path::new("/tmp")
}

/// Steps done per invocation even with a template: `/proc` belongs to the invocation's pid
/// namespace and `/tmp` must start empty.
fn per_call(step: &mounts::Step) -> bool {
    match step {
        mounts::Step::Proc(_) => true,
        mounts::Step::Tmpfs { target, .. } => target == Path::new("/tmp"),
        _ => false,
    }
}

/// The C form of a step; `prefix` (the staging directory, or nothing) goes before its path.
fn mount_op(step: &mounts::Step, prefix: &[u8]) -> Result<MountOp, Error> {
    let staged = |inside: &Path| {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(inside.as_os_str().as_bytes());
        c_string(&bytes)
    };
    let (kind, path, arg, flags) = match step {
        mounts::Step::Dir(p) => (MountKind::Dir, p, CString::default(), 0),
        mounts::Step::File(p) => (MountKind::File, p, CString::default(), 0),
        mounts::Step::Symlink { path, target } => (
            MountKind::Symlink,
            path,
            c_string(target.as_os_str().as_bytes())?,
            0,
        ),
        mounts::Step::Bind {
            source,
            target,
            writable,
            devices,
            keep_flags,
        } => (
            match (devices, writable) {
                (true, _) => MountKind::BindDevice,
                (false, true) => MountKind::BindWritable,
                (false, false) => MountKind::BindReadOnly,
            },
            target,
            c_string(source.as_os_str().as_bytes())?,
            *keep_flags,
        ),
        mounts::Step::Tmpfs { target, options } => {
            (MountKind::Tmpfs, target, c_string(options.as_bytes())?, 0)
        }
        mounts::Step::Proc(p) => (MountKind::Proc, p, CString::default(), 0),
    };
    Ok(MountOp {
        kind,
        path: staged(path)?,
        arg,
        flags,
    })
}

/// The steps an invocation does on its copy of the template: keep the binds under `/tmp`,
/// mount the fresh `/tmp`, put them back, mount `/proc`.
fn per_call_ops(steps: &[mounts::Step]) -> Result<Vec<MountOp>, Error> {
    let mut ops = Vec::new();
    let tmp_binds: Vec<&mounts::Step> = steps
        .iter()
        .filter(|s| matches!(s, mounts::Step::Bind { target, .. } if in_tmp(target)))
        .collect();
    for (slot, step) in tmp_binds.iter().enumerate() {
        if let mounts::Step::Bind { target, .. } = step {
            ops.push(MountOp {
                kind: MountKind::CloneTree,
                path: c_string(target.as_os_str().as_bytes())?,
                arg: CString::default(),
                flags: slot as u64,
            });
        }
    }
    for step in steps
        .iter()
        .filter(|s| per_call(s) && !matches!(s, mounts::Step::Proc(_)))
    {
        ops.push(mount_op(step, b"")?);
    }
    let mut slot = 0u64;
    for step in steps {
        match step {
            mounts::Step::Bind { target, .. } if in_tmp(target) => {
                ops.push(MountOp {
                    kind: MountKind::MoveTree,
                    path: c_string(target.as_os_str().as_bytes())?,
                    arg: CString::default(),
                    flags: slot,
                });
                slot += 1;
            }
            mounts::Step::Dir(p) | mounts::Step::File(p) if in_tmp(p) => {
                ops.push(mount_op(step, b"")?)
            }
            mounts::Step::Symlink { path, .. } if in_tmp(path) => ops.push(mount_op(step, b"")?),
            _ => {}
        }
    }
    for step in steps.iter().filter(|s| matches!(s, mounts::Step::Proc(_))) {
        ops.push(mount_op(step, b"")?);
    }
    Ok(ops)
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

/// What the daemon's host offers, and the pools shared by all invocations.
#[derive(Debug)]
pub struct Host {
    root: bool,
    ids: (u32, u32),
    default_run_as: (u32, u32),
    staging: CString,
    cap_last: u32,
    landlock_abi: Option<i32>,
    cgroups: Option<Arc<Cgroups>>,
    networks: Option<Arc<NetworkPool>>,
}

impl Host {
    /// Detects the kernel's features and prepares the pools. `staging` is an empty directory
    /// the daemon owns (each sandbox mounts its root there, in its own mount namespace);
    /// `default_run_as` is the user tools run as when the daemon is root and the policy names
    /// none.
    pub fn prepare(staging: &Path, default_run_as: (u32, u32)) -> Result<Self, Error> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| Error::Host(format!("{what}: {e}"))
        };
        std::fs::create_dir_all(staging).map_err(setup("create the staging directory"))?;
        let ids = sys::effective_ids();
        let root = ids.0 == 0;
        let cap_last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        // Root manages the subtree below its own cgroup; an unprivileged daemon can when its
        // cgroup was delegated to it (systemd's Delegate=yes on cgroup v2).
        let cgroups = match Cgroups::discover(Path::new("/"), std::process::id()) {
            Some(layout) => match Cgroups::create(layout) {
                Ok(cgroups) => Some(cgroups),
                Err(e) => {
                    tracing::warn!(error = %e, "cgroups unavailable: limits are rlimits only");
                    None
                }
            },
            None => None,
        };
        let networks = if root {
            Some(NetworkPool::new(2).map_err(setup("create network namespaces"))?)
        } else {
            None
        };
        Ok(Self {
            root,
            ids,
            default_run_as,
            staging: CString::new(staging.as_os_str().as_bytes())
                .map_err(|_| Error::Host("the staging path has a NUL byte".to_owned()))?,
            cap_last,
            landlock_abi: landlock_abi(),
            cgroups,
            networks,
        })
    }

    /// What isolation this host gives, one line per feature, for logs and `toolgate doctor`.
    pub fn features(&self) -> Vec<(String, String)> {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        vec![
            (
                "privilege".into(),
                if self.root {
                    format!(
                        "root: tools run as uid {} gid {} unless their policy names a run_as user",
                        self.default_run_as.0, self.default_run_as.1
                    )
                } else {
                    format!(
                        "unprivileged (uid {}): tools run as this uid in a user namespace",
                        self.ids.0
                    )
                },
            ),
            (
                "landlock".into(),
                self.landlock_abi.map_or(
                    "unavailable: every invocation is refused".to_owned(),
                    |abi| format!("ABI {abi}"),
                ),
            ),
            ("seccomp".into(), yes_no(sys::seccomp_available())),
            (
                "namespaces".into(),
                "user, mount, pid, network, ipc, uts, cgroup (per invocation)".to_owned(),
            ),
            (
                "network namespaces".into(),
                if self.networks.is_some() {
                    "pooled (reused one invocation at a time)".to_owned()
                } else {
                    "one per invocation".to_owned()
                },
            ),
            (
                "cgroups".into(),
                self.cgroups.as_ref().map_or(
                    "unavailable: memory and process limits are rlimits only".to_owned(),
                    |c| c.describe(),
                ),
            ),
        ]
    }
}

/// Empty network namespaces with loopback up, each leased to one invocation at a time.
///
/// Creating a network namespace is the one expensive namespace (about 0.5 ms); sharing one
/// between concurrent invocations would let them see each other's sockets and collide on
/// ports. A namespace returns to the pool only when every process of the invocation that used
/// it is gone, so no socket of it remains.
#[derive(Debug)]
struct NetworkPool {
    free: Mutex<Vec<OwnedFd>>,
}

struct NetworkLease {
    pool: Arc<NetworkPool>,
    fd: Option<OwnedFd>,
}

impl NetworkPool {
    fn new(prefill: usize) -> std::io::Result<Arc<Self>> {
        let free = (0..prefill)
            .map(|_| sys::new_network_namespace())
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Self {
            free: Mutex::new(free),
        }))
    }

    fn lease(self: &Arc<Self>) -> std::io::Result<NetworkLease> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let fd = match reused {
            Some(fd) => fd,
            None => sys::new_network_namespace()?,
        };
        Ok(NetworkLease {
            pool: Arc::clone(self),
            fd: Some(fd),
        })
    }
}

impl Drop for NetworkLease {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fd);
        }
    }
}

/// One invocation ready to spawn: every string already a C string.
#[derive(Debug)]
pub struct Plan<'a> {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    mounts: Vec<MountOp>,
    template: RawFd,
    profile: &'a Profile,
}

impl std::fmt::Debug for MountOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.path)
    }
}

fn c_string(bytes: &[u8]) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::NulByte)
}

impl<'a> Plan<'a> {
    /// Prepares `program` with `argv` (its first element is argv\[0\]) and `env`, in `cwd`,
    /// for a sandbox built under `host`'s staging directory.
    pub fn new(
        program: &Path,
        argv: &[String],
        env: &[(String, String)],
        cwd: &Path,
        profile: &'a Profile,
        host: &Host,
    ) -> Result<Self, Error> {
        let template = profile.template(host).map(AsRawFd::as_raw_fd);
        let mounts = match template {
            Some(_) => per_call_ops(&profile.mounts)?,
            None => profile
                .mounts
                .iter()
                .map(|step| mount_op(step, host.staging.as_bytes()))
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            program: c_string(program.as_os_str().as_bytes())?,
            argv: argv
                .iter()
                .map(|a| c_string(a.as_bytes()))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| c_string(format!("{k}={v}").as_bytes()))
                .collect::<Result<_, _>>()?,
            cwd: c_string(cwd.as_os_str().as_bytes())?,
            mounts,
            template: template.unwrap_or(-1),
            profile,
        })
    }
}

/// Starts `plan` in a fresh sandbox; waits only until the program is executing.
pub async fn spawn(plan: &Plan<'_>, host: &Host) -> Result<Child, Error> {
    let profile = plan.profile;
    if let Some(reason) = &profile.unsupported {
        return Err(Error::Unsupported(reason.clone()));
    }
    let (uid, gid) = profile.run_as.unwrap_or(host.default_run_as);
    let (uid_map, gid_map) = (format!("{uid} {uid} 1\n"), format!("{gid} {gid} 1\n"));
    let identity = if host.root {
        Identity::Mapped {
            uid,
            gid,
            uid_map: uid_map.as_bytes(),
            gid_map: gid_map.as_bytes(),
        }
    } else {
        if profile.run_as.is_some_and(|ids| ids != host.ids) {
            return Err(Error::Unsupported(
                "the policy names a run_as user, which only a daemon running as root can switch to"
                    .to_owned(),
            ));
        }
        Identity::Inherited
    };
    let network = match (&host.networks, profile.network_namespace) {
        (Some(pool), true) => Some(pool.lease().map_err(Error::Clone)?),
        _ => None,
    };
    let cgroup = match &host.cgroups {
        Some(cgroups) => Some(cgroups.lease(profile.cgroup).map_err(Error::Cgroup)?),
        None => None,
    };
    let rootless_maps = (!host.root).then(|| {
        (
            format!("{} {} 1\n", host.ids.0, host.ids.0),
            format!("{} {} 1\n", host.ids.1, host.ids.1),
        )
    });
    let setup = sys::ChildSetup {
        program: &plan.program,
        argv: &plan.argv,
        env: &plan.env,
        cwd: &plan.cwd,
        rlimits: &profile.rlimits,
        staging: &host.staging,
        mounts: &plan.mounts,
        hostname: c"toolgate",
        ruleset: &profile.ruleset,
        seccomp: &profile.seccomp,
        identity,
        netns: network
            .as_ref()
            .and_then(|lease| lease.fd.as_ref())
            .map_or(-1, |fd| fd.as_raw_fd()),
        template: plan.template,
        rootless: !host.root,
        new_network: profile.network_namespace && network.is_none(),
        wait_for_parent: cgroup.is_some() || !host.root,
        cap_last: host.cap_last,
    };
    let spawned = sys::spawn(&setup, |pid| {
        if let Some((uid_map, gid_map)) = &rootless_maps {
            // An unprivileged daemon maps only its own ids, and must give up setgroups first.
            std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
            std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
            std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        }
        if let Some(cgroup) = &cgroup {
            cgroup.enter(pid).map_err(|e| e.source)?;
        }
        Ok(())
    })
    .map_err(Error::Clone)?;
    let mut child = spawned.started().await?;
    child.hold(Box::new((network, cgroup)));
    Ok(child)
}

/// What can go wrong preparing or starting a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel or the daemon's privilege cannot give the isolation the policy requires.
    #[error("the sandbox cannot be built here: {0}")]
    Unsupported(String),
    /// The host-wide preparation failed.
    #[error("cannot prepare the sandbox host: {0}")]
    Host(String),
    /// The seccomp filter could not be compiled.
    #[error("seccomp: {0}")]
    Seccomp(seccomp::Error),
    /// A cgroup could not be prepared.
    #[error("cannot prepare the invocation's cgroup: {0}")]
    Cgroup(cgroup::Error),
    /// A string for execve held a NUL byte.
    #[error("an argument or environment value contains a NUL byte")]
    NulByte,
    /// clone3 or pipe creation failed.
    #[error("cannot create the sandbox: {0}")]
    Clone(std::io::Error),
    /// A child failed before executing the program.
    #[error("the sandbox failed to {stage}: {source}")]
    ChildSetup {
        /// The step that failed, e.g. "execute the program".
        stage: &'static str,
        /// The errno it got.
        source: std::io::Error,
    },
}
