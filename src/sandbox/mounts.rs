//! The filesystem view of a sandboxed tool: a plan of mounts, computed once per policy.
//!
//! The child builds a fresh root in its own mount namespace: a small tmpfs, made read-only once
//! built, holding only what the policy names. System directories and the policy's read paths are
//! read-only bind mounts; its write paths are read-write binds; `/tmp` is a fresh tmpfs with a
//! size cap; `/proc` is a new procfs of the tool's own pid namespace (other users' processes
//! invisible); `/dev` holds only null, zero, full, random, urandom and the fd links. Nothing
//! else of the host exists in the view, so a path outside the policy cannot even be named.
//!
//! Paths appear inside at their canonical host location. Host symlinks among the system
//! locations (`/bin -> usr/bin` on merged-/usr systems) are recreated as symlinks.
//!
//! All of this is data: `sys.rs` replays the steps with raw syscalls between clone and exec.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// System locations made visible read-only when the policy keeps `system_paths` on: the dynamic
/// loader, shared libraries, programs, locale and time zone data.
const SYSTEM_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
];

/// Device nodes bound into `/dev`: harmless sources and sinks every program may use.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One step of building the root, in order. Paths are absolute inside the new root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create a directory (mode 0755).
    Dir(PathBuf),
    /// Create an empty file to bind a file onto.
    File(PathBuf),
    /// Create a symlink at `path` pointing to `target`.
    Symlink {
        /// Where.
        path: PathBuf,
        /// The link's text.
        target: PathBuf,
    },
    /// Bind-mount a host path, read-only unless `writable`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Inside path.
        target: PathBuf,
        /// Read-write when true.
        writable: bool,
        /// Whether device nodes may be opened through it (only for `/dev` entries).
        devices: bool,
        /// MS_* flags the host mount has that a remount must keep (nosuid, noexec...).
        keep_flags: u64,
    },
    /// Mount a tmpfs with these options.
    Tmpfs {
        /// Inside path.
        target: PathBuf,
        /// tmpfs options, e.g. `size=67108864,mode=1777`.
        options: String,
    },
    /// Mount a procfs of the tool's pid namespace.
    Proc(PathBuf),
}

/// What the view must contain.
#[derive(Clone, Debug)]
pub struct ViewSpec<'a> {
    /// Host paths readable inside.
    pub read: &'a [PathBuf],
    /// Host paths writable inside.
    pub write: &'a [PathBuf],
    /// Whether the system locations are included.
    pub system_paths: bool,
    /// The program, which must be visible.
    pub program: &'a Path,
    /// The working directory, which must exist inside.
    pub cwd: &'a Path,
    /// Size of the private `/tmp`.
    pub tmp_bytes: u64,
}

/// The ordered steps that build the view.
pub fn plan(spec: &ViewSpec<'_>) -> Vec<Step> {
    let mut builder = Builder::default();
    builder.dir(Path::new("/tmp"));
    builder.steps.push(Step::Tmpfs {
        target: "/tmp".into(),
        options: format!("size={},mode=1777", spec.tmp_bytes.max(4096)),
    });
    builder.dir(Path::new("/proc"));
    builder.steps.push(Step::Proc("/proc".into()));
    builder.dir(Path::new("/dev"));
    for device in DEVICES {
        let path = Path::new("/dev").join(device);
        if path.exists() {
            builder.steps.push(Step::File(path.clone()));
            builder.steps.push(Step::Bind {
                source: path.clone(),
                target: path,
                writable: true,
                devices: true,
                keep_flags: 0,
            });
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        builder.steps.push(Step::Symlink {
            path: Path::new("/dev").join(link),
            target: target.into(),
        });
    }
    if spec.system_paths {
        for path in SYSTEM_PATHS {
            builder.add(Path::new(path), false, true);
        }
    }
    // Parents before children, so no bind is hidden by a later bind of its parent.
    let mut paths: Vec<(PathBuf, bool)> = spec
        .read
        .iter()
        .map(|p| (p.clone(), false))
        .chain(spec.write.iter().map(|p| (p.clone(), true)))
        .filter_map(|(p, w)| p.canonicalize().ok().map(|p| (p, w)))
        .collect();
    paths.sort_by_key(|(p, writable)| (p.components().count(), !writable));
    for (path, writable) in &paths {
        builder.add(path, *writable, false);
    }
    builder.add(spec.program, false, false);
    let cwd = spec
        .cwd
        .canonicalize()
        .unwrap_or_else(|_| spec.cwd.to_owned());
    if !builder.covered(&cwd) {
        builder.dir(&cwd);
    }
    builder.steps
}

#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    /// Inside paths that exist: created or mounted.
    made: BTreeSet<PathBuf>,
    /// Bound inside paths (their subtrees exist as on the host).
    bound: Vec<PathBuf>,
}

impl Builder {
    fn covered(&self, path: &Path) -> bool {
        self.bound.iter().any(|b| path.starts_with(b)) || self.made.contains(path)
    }

    /// Creates `path` and its missing ancestors as directories.
    fn dir(&mut self, path: &Path) {
        let mut ancestors: Vec<&Path> = path.ancestors().collect();
        ancestors.reverse();
        for dir in ancestors {
            if dir == Path::new("/") || self.covered(dir) {
                continue;
            }
            self.made.insert(dir.to_owned());
            self.steps.push(Step::Dir(dir.to_owned()));
        }
    }

    /// Makes host `path` visible at the same place; `optional` skips paths the host lacks.
    ///
    /// System locations (optional) that are symlinks are recreated as symlinks; any other path
    /// is shown at its canonical location, so no bind lands behind a symlink of the view.
    fn add(&mut self, path: &Path, writable: bool, optional: bool) {
        if !optional {
            if let Ok(real) = path.canonicalize() {
                self.add_real(&real, writable);
            }
            return;
        }
        let Ok(meta) = path.symlink_metadata() else {
            return;
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(path) {
                if let Some(parent) = path.parent() {
                    self.dir(parent);
                }
                if !self.covered(path) {
                    self.made.insert(path.to_owned());
                    self.steps.push(Step::Symlink {
                        path: path.to_owned(),
                        target,
                    });
                }
            }
            return;
        }
        self.add_real(path, writable);
    }

    /// Binds a path that is not a symlink.
    fn add_real(&mut self, path: &Path, writable: bool) {
        // Policy paths were checked to exist at load; one removed since then is left out.
        let Ok(meta) = path.metadata() else {
            return;
        };
        if self.bound.iter().any(|b| b == path) {
            return;
        }
        // Inside an already bound read-only tree, a read-only bind adds nothing.
        if !writable && self.bound.iter().any(|b| path.starts_with(b)) {
            return;
        }
        if let Some(parent) = path.parent() {
            self.dir(parent);
        }
        let inside_bind = self.bound.iter().any(|b| path.starts_with(b));
        if !inside_bind {
            self.made.insert(path.to_owned());
            self.steps.push(if meta.is_dir() {
                Step::Dir(path.to_owned())
            } else {
                Step::File(path.to_owned())
            });
        }
        self.steps.push(Step::Bind {
            source: path.to_owned(),
            target: path.to_owned(),
            writable,
            devices: false,
            keep_flags: locked_flags(path),
        });
        self.bound.push(path.to_owned());
    }
}

/// The mount flags of the host mount holding `path` that a bind remount must repeat: inside a
/// user namespace the kernel refuses to clear them (they are locked).
fn locked_flags(path: &Path) -> u64 {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let Ok(stat) = nix_statvfs(&c) else {
        return 0;
    };
    let mut flags = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if stat & st != 0 {
            flags |= ms;
        }
    }
    flags
}

fn nix_statvfs(path: &CString) -> std::io::Result<u64> {
    super::sys::statvfs_flags(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_a_minimal_root_with_policy_paths() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().canonicalize().unwrap();
        std::fs::create_dir(work.join("sub")).unwrap();
        let steps = plan(&ViewSpec {
            read: &[],
            write: std::slice::from_ref(&work),
            system_paths: true,
            program: Path::new("/bin/echo"),
            cwd: &work.join("sub"),
            tmp_bytes: 1 << 20,
        });
        // /tmp comes first so binds under it land inside the private tmpfs.
        assert_eq!(steps[0], Step::Dir("/tmp".into()));
        assert!(matches!(&steps[1], Step::Tmpfs { target, .. } if target == Path::new("/tmp")));
        assert!(steps.contains(&Step::Proc("/proc".into())));
        assert!(steps.iter().any(|s| matches!(s,
            Step::Bind { target, writable: true, .. } if *target == work)));
        assert!(steps.iter().any(|s| matches!(s,
            Step::Bind { target, writable: false, .. } if target == Path::new("/usr"))));
        // The cwd is inside the bound workspace: not created again.
        assert!(!steps.contains(&Step::Dir(work.join("sub"))));
        // Every directory is created before anything is mounted or made inside it.
        for (i, step) in steps.iter().enumerate() {
            if let Step::Bind { target, .. } | Step::Tmpfs { target, .. } = step {
                for parent in target.ancestors().skip(1) {
                    if parent == Path::new("/") {
                        continue;
                    }
                    let later = steps[i..]
                        .iter()
                        .any(|s| *s == Step::Dir(parent.to_owned()));
                    assert!(
                        !later,
                        "{} made after {}",
                        parent.display(),
                        target.display()
                    );
                }
            }
        }
    }
}
