//! Control groups for invocations: memory, process count and CPU limits enforced by the kernel.
//!
//! The daemon manages a subtree below its own cgroup: `toolgate-<pid>/` with one leaf per slot.
//! Slots are pooled (created once, limits rewritten only when they change) because creating a
//! cgroup per call costs about 0.25 ms here. An invocation's init process is moved into its slot
//! before it runs anything, so every process of the tool is counted; the slot returns to the pool
//! when the invocation's pid namespace is gone (and with it every process in the slot).
//!
//! cgroup v1 (these test machines: memory, pids and cpu on separate hierarchies) and v2 (hosts
//! under systemd with `Delegate=yes`) are both handled. On v2 the daemon first moves itself into
//! a `daemon` leaf, because a v2 cgroup with processes cannot enable controllers for children.
//! Filesystem roots are parameters, so the logic runs on a fake tree in unit tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Limits for one invocation; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CgroupLimits {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU bandwidth in cores (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
}

/// Which cgroup interface the daemon drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// v1: one directory per controller (memory, pids, cpu), each the daemon's subtree root.
    V1 {
        /// (controller, subtree directory).
        controllers: Vec<(String, PathBuf)>,
    },
    /// v2: the subtree directory of the unified hierarchy.
    V2 {
        /// Subtree directory.
        dir: PathBuf,
    },
}

/// The daemon's cgroup subtree and its pool of slots.
#[derive(Debug)]
pub struct Cgroups {
    layout: Layout,
    free: Mutex<Vec<Slot>>,
    next: Mutex<u64>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    limits: Option<CgroupLimits>,
}

/// One slot leased to one invocation.
#[derive(Debug)]
pub struct Lease {
    cgroups: Arc<Cgroups>,
    slot: Option<Slot>,
}

/// Why the subtree could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {source}")]
pub struct Error {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error {
        path: path.to_owned(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(at(path))
}

impl Cgroups {
    /// Finds the controllers for this process under `root` ("/" on a real host) and creates
    /// the daemon's subtree. None when no writable memory, pids and cpu controllers exist.
    pub fn discover(root: &Path, daemon_pid: u32) -> Option<Layout> {
        let mounts = fs::read_to_string(root.join("proc/self/mountinfo")).ok()?;
        let own = fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
        let mut v1: Vec<(String, PathBuf)> = Vec::new();
        let mut v2_mount = None;
        for line in mounts.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let super_options = right.nth(1).unwrap_or_default();
            let mount_point = root.join(mount_point.trim_start_matches('/'));
            match fstype {
                "cgroup" => {
                    for controller in ["memory", "pids", "cpu"] {
                        if super_options.split(',').any(|o| o == controller) {
                            v1.push((controller.to_owned(), mount_point.clone()));
                        }
                    }
                }
                "cgroup2" => v2_mount = Some(mount_point),
                _ => {}
            }
        }
        let name = format!("toolgate-{daemon_pid}");
        if v1.len() == 3 {
            let mut controllers = Vec::new();
            for (controller, mount) in v1 {
                let path = own.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
                    list.split(',')
                        .any(|c| c == controller)
                        .then(|| path.to_owned())
                })?;
                let dir = mount.join(path.trim_start_matches('/')).join(&name);
                controllers.push((controller, dir));
            }
            return Some(Layout::V1 { controllers });
        }
        let mount = v2_mount?;
        let available = fs::read_to_string(mount.join("cgroup.controllers")).ok()?;
        if !["memory", "pids", "cpu"]
            .iter()
            .all(|c| available.split_whitespace().any(|a| a == *c))
        {
            return None;
        }
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(Layout::V2 {
            dir: mount.join(path.trim_start_matches('/')),
        })
    }

    /// Creates the subtree for `layout`, after removing the empty subtrees that daemons which
    /// died without cleaning up (killed, crashed) left beside it.
    pub fn create(layout: Layout) -> Result<Arc<Self>, Error> {
        match &layout {
            Layout::V1 { controllers } => {
                for (_, dir) in controllers {
                    if let Some(parent) = dir.parent() {
                        remove_stale_subtrees(parent);
                    }
                    fs::create_dir_all(dir).map_err(at(dir))?;
                }
            }
            Layout::V2 { dir } => {
                // A v2 cgroup holding processes cannot give controllers to children: move the
                // daemon (all its threads) into a leaf of its own first.
                let leaf = dir.join("daemon");
                fs::create_dir_all(&leaf).map_err(at(&leaf))?;
                let procs = fs::read_to_string(dir.join("cgroup.procs")).map_err(at(dir))?;
                for pid in procs.split_whitespace() {
                    // A process that exited in between is fine to miss.
                    let _ = fs::write(leaf.join("cgroup.procs"), pid);
                }
                write(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            }
        }
        Ok(Arc::new(Self {
            layout,
            free: Mutex::new(Vec::new()),
            next: Mutex::new(0),
        }))
    }

    fn slot_dirs(&self, id: u64) -> Vec<(&str, PathBuf)> {
        let name = format!("slot-{id}");
        match &self.layout {
            Layout::V1 { controllers } => controllers
                .iter()
                .map(|(c, dir)| (c.as_str(), dir.join(&name)))
                .collect(),
            Layout::V2 { dir } => vec![("", dir.join(&name))],
        }
    }

    /// Leases a slot with `limits` applied.
    pub fn lease(self: &Arc<Self>, limits: CgroupLimits) -> Result<Lease, Error> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut slot = match reused {
            Some(slot) => slot,
            None => {
                let id = {
                    let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                    *next += 1;
                    *next
                };
                for (_, dir) in self.slot_dirs(id) {
                    fs::create_dir_all(&dir).map_err(at(&dir))?;
                }
                Slot { id, limits: None }
            }
        };
        if slot.limits != Some(limits) {
            self.apply(slot.id, &limits)?;
            slot.limits = Some(limits);
        }
        Ok(Lease {
            cgroups: Arc::clone(self),
            slot: Some(slot),
        })
    }

    fn apply(&self, id: u64, limits: &CgroupLimits) -> Result<(), Error> {
        const PERIOD: u64 = 100_000;
        let quota = limits.cpus.map(|c| ((c * PERIOD as f64) as u64).max(1000));
        for (controller, dir) in self.slot_dirs(id) {
            match (&self.layout, controller) {
                (Layout::V1 { .. }, "memory") => write(
                    &dir.join("memory.limit_in_bytes"),
                    &limits.memory.map_or("-1".to_owned(), |m| m.to_string()),
                )?,
                (Layout::V1 { .. }, "pids") => write(
                    &dir.join("pids.max"),
                    &limits.pids.map_or("max".to_owned(), |p| p.to_string()),
                )?,
                (Layout::V1 { .. }, "cpu") => {
                    write(&dir.join("cpu.cfs_period_us"), &PERIOD.to_string())?;
                    write(
                        &dir.join("cpu.cfs_quota_us"),
                        &quota.map_or("-1".to_owned(), |q| q.to_string()),
                    )?;
                }
                (Layout::V2 { .. }, _) => {
                    let max = |v: Option<u64>| v.map_or("max".to_owned(), |v| v.to_string());
                    write(&dir.join("memory.max"), &max(limits.memory))?;
                    // No swap: a memory limit the tool could escape into swap is no limit.
                    write(&dir.join("memory.swap.max"), "0").or_else(|e| {
                        if e.source.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
                    write(&dir.join("pids.max"), &max(limits.pids))?;
                    write(&dir.join("cpu.max"), &format!("{} {PERIOD}", max(quota)))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A short description for logs and `doctor`.
    pub fn describe(&self) -> String {
        match &self.layout {
            Layout::V1 { controllers } => format!(
                "cgroup v1 ({})",
                controllers
                    .iter()
                    .map(|(c, d)| format!("{c} at {}", d.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Layout::V2 { dir } => format!("cgroup v2 at {}", dir.display()),
        }
    }
}

/// Removes `toolgate-<pid>` subtrees under `parent` whose daemon is gone. A slot that still
/// holds processes cannot be removed (rmdir fails) and is left alone.
fn remove_stale_subtrees(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("toolgate-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(slots) = fs::read_dir(&dir) {
            for slot in slots.flatten().filter(|s| s.path().is_dir()) {
                let _ = fs::remove_dir(slot.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let free = std::mem::take(&mut *self.free.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in free {
            for (_, dir) in self.slot_dirs(slot.id) {
                let _ = fs::remove_dir(dir);
            }
        }
        let roots: Vec<PathBuf> = match &self.layout {
            Layout::V1 { controllers } => controllers.iter().map(|(_, d)| d.clone()).collect(),
            // The v2 subtree is the daemon's own cgroup; only the slots are ours to remove.
            Layout::V2 { .. } => Vec::new(),
        };
        for dir in roots {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Lease {
    /// Moves process `pid` (and so everything it will start) into the slot.
    pub fn enter(&self, pid: u32) -> Result<(), Error> {
        let Some(slot) = &self.slot else {
            return Ok(());
        };
        for (_, dir) in self.cgroups.slot_dirs(slot.id) {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.cgroups
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(mountinfo: &str, cgroup: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("proc/self")).unwrap();
        fs::write(root.path().join("proc/self/mountinfo"), mountinfo).unwrap();
        fs::write(root.path().join("proc/self/cgroup"), cgroup).unwrap();
        root
    }

    #[test]
    fn v1_hybrid_uses_each_controllers_hierarchy_and_pools_slots() {
        let host = fake_host(
            "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             32 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "4:memory:/agent/x\n8:pids:/\n1:cpu:/\n0::/\n",
        );
        let layout = Cgroups::discover(host.path(), 42).expect("v1 found");
        let memory = host.path().join("sys/fs/cgroup/memory/agent/x/toolgate-42");
        assert!(matches!(&layout, Layout::V1 { controllers } if controllers[0].1 == memory));
        let cgroups = Cgroups::create(layout).unwrap();
        let limits = CgroupLimits {
            memory: Some(1 << 20),
            pids: Some(8),
            cpus: Some(0.5),
        };
        let lease = cgroups.lease(limits).unwrap();
        let slot = memory.join("slot-1");
        assert_eq!(
            fs::read_to_string(slot.join("memory.limit_in_bytes")).unwrap(),
            "1048576"
        );
        let pids = host.path().join("sys/fs/cgroup/pids/toolgate-42/slot-1");
        assert_eq!(fs::read_to_string(pids.join("pids.max")).unwrap(), "8");
        let cpu = host.path().join("sys/fs/cgroup/cpu/toolgate-42/slot-1");
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        lease.enter(1234).unwrap();
        assert_eq!(
            fs::read_to_string(pids.join("cgroup.procs")).unwrap(),
            "1234"
        );
        drop(lease);
        // The slot is reused, not recreated; a second concurrent lease gets a new one.
        let a = cgroups.lease(limits).unwrap();
        let b = cgroups.lease(CgroupLimits::default()).unwrap();
        assert_eq!(a.slot.as_ref().unwrap().id, 1);
        assert_eq!(b.slot.as_ref().unwrap().id, 2);
        let slot2 = memory.join("slot-2");
        assert_eq!(
            fs::read_to_string(slot2.join("memory.limit_in_bytes")).unwrap(),
            "-1"
        );
    }

    #[test]
    fn v2_moves_the_daemon_to_a_leaf_and_enables_controllers() {
        let host = fake_host(
            "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/system.slice/toolgate.service\n",
        );
        let unified = host.path().join("sys/fs/cgroup");
        let service = unified.join("system.slice/toolgate.service");
        fs::create_dir_all(&service).unwrap();
        fs::write(
            unified.join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        fs::write(service.join("cgroup.procs"), "77\n78\n").unwrap();
        let layout = Cgroups::discover(host.path(), 77).expect("v2 found");
        assert_eq!(
            layout,
            Layout::V2 {
                dir: service.clone()
            }
        );
        let cgroups = Cgroups::create(layout).unwrap();
        assert_eq!(
            fs::read_to_string(service.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        assert!(service.join("daemon/cgroup.procs").exists());
        let _lease = cgroups
            .lease(CgroupLimits {
                memory: Some(4096),
                pids: None,
                cpus: Some(2.0),
            })
            .unwrap();
        let slot = service.join("slot-1");
        assert_eq!(fs::read_to_string(slot.join("memory.max")).unwrap(), "4096");
        assert_eq!(fs::read_to_string(slot.join("pids.max")).unwrap(), "max");
        assert_eq!(
            fs::read_to_string(slot.join("cpu.max")).unwrap(),
            "200000 100000"
        );
    }

    #[test]
    fn subtrees_of_dead_daemons_are_removed_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join("toolgate-4000000000");
        let live = parent
            .path()
            .join(format!("toolgate-{}", std::process::id()));
        for dir in [dead.join("slot-1"), live.join("slot-1")] {
            fs::create_dir_all(dir).unwrap();
        }
        remove_stale_subtrees(parent.path());
        assert!(!dead.exists(), "a dead daemon's subtree is removed");
        assert!(
            live.join("slot-1").exists(),
            "a live daemon's subtree is kept"
        );
    }

    #[test]
    fn no_controllers_means_no_cgroups() {
        let host = fake_host(
            "33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            "0::/\n",
        );
        fs::create_dir_all(host.path().join("sys/fs/cgroup/unified")).unwrap();
        fs::write(
            host.path().join("sys/fs/cgroup/unified/cgroup.controllers"),
            "",
        )
        .unwrap();
        assert_eq!(Cgroups::discover(host.path(), 1), None);
    }
}
