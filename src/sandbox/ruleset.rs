//! The landlock ruleset of a tool: computed once per policy, created by the child per call.
//!
//! The ruleset is created inside the child, after it has built its root, because its objects
//! are that root's: the read-only root, the fresh `/tmp`, the bound write paths. Those inodes are
//! new for every invocation, so a ruleset made once in the parent could not name them. What the
//! child needs is computed here: the handled rights, the rules as (path, rights) pairs and the
//! TCP port rules, all plain numbers and C strings.
//!
//! Rights granted: read and execute beneath `/` (the view already holds only what the policy
//! names), full rights except creating device nodes beneath the write paths and `/tmp`, read
//! and write of the `/dev` nodes. Handled: every filesystem right of the kernel's ABI (so refer,
//! truncate and device ioctls are denied elsewhere), TCP bind and connect when the policy limits
//! them, and the scopes for abstract Unix sockets and signals (ABI 6), so the tool can neither
//! reach an abstract socket of the host nor signal a process outside its sandbox.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{ABI, Access, AccessFs, AccessNet, BitFlags, Scope};

/// The newest ABI this code knows the rights of.
pub const NEWEST_ABI: i32 = 6;

/// The ruleset a child creates, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesetPlan {
    /// `handled_access_fs`.
    pub handled_fs: u64,
    /// `handled_access_net` (0 below ABI 4).
    pub handled_net: u64,
    /// `scoped` (0 below ABI 6).
    pub scoped: u64,
    /// Size of `struct landlock_ruleset_attr` to pass for the ABI in use.
    pub attr_size: usize,
    /// Path rules: inside path and allowed rights.
    pub paths: Vec<(CString, u64)>,
    /// TCP rules: allowed right (bind or connect) and port.
    pub ports: Vec<(u64, u64)>,
}

/// TCP limits for a tool with network access; `None` leaves that direction unrestricted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpPorts {
    /// Ports the tool may connect to.
    pub connect: Option<Vec<u16>>,
    /// Ports the tool may bind.
    pub bind: Option<Vec<u16>>,
}

fn abi(version: i32) -> ABI {
    match version.min(NEWEST_ABI) {
        i32::MIN..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

/// Computes the ruleset for kernel ABI `version`.
///
/// `network`: `None` denies every TCP bind and connect; `Some(ports)` limits what the lists say.
pub fn plan(version: i32, write: &[PathBuf], network: Option<&TcpPorts>) -> RulesetPlan {
    let abi = abi(version);
    let all: BitFlags<AccessFs> = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let file_rights = AccessFs::from_file(abi);
    // Creating device nodes would let a tool reach hardware through a node it made.
    let write_rights = all & !(AccessFs::MakeChar | AccessFs::MakeBlock);
    let device_rights =
        (AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev) & all;

    let mut paths = vec![(c_path(Path::new("/")), read.bits())];
    for path in write
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/tmp")])
    {
        let rights = if path.is_dir() || path == Path::new("/tmp") {
            write_rights
        } else {
            write_rights & file_rights
        };
        paths.push((c_path(path), rights.bits()));
    }
    for device in ["null", "zero", "full", "random", "urandom"] {
        paths.push((
            c_path(&Path::new("/dev").join(device)),
            device_rights.bits(),
        ));
    }

    let mut handled_net = BitFlags::<AccessNet>::empty();
    let mut ports = Vec::new();
    if version >= 4 {
        match network {
            None => handled_net = AccessNet::from_all(abi),
            Some(tcp) => {
                for (list, right) in [
                    (&tcp.connect, AccessNet::ConnectTcp),
                    (&tcp.bind, AccessNet::BindTcp),
                ] {
                    if let Some(list) = list {
                        handled_net |= right;
                        ports.extend(
                            list.iter()
                                .map(|&p| (BitFlags::from(right).bits(), u64::from(p))),
                        );
                    }
                }
            }
        }
    }
    let scoped = if version >= 6 {
        Scope::from_all(abi).bits()
    } else {
        0
    };
    RulesetPlan {
        handled_fs: all.bits(),
        handled_net: handled_net.bits(),
        scoped,
        attr_size: match version {
            i32::MIN..=3 => 8,
            4 | 5 => 16,
            _ => 24,
        },
        paths,
        ports,
    }
}

fn c_path(path: &Path) -> CString {
    // Policy paths were checked for NUL bytes when the policy loaded (TOML strings cannot hold
    // them); an empty string would then fail to open in the child, failing closed.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_none_handles_tcp_without_rules_and_scopes_everything() {
        let plan = plan(7, &[], None);
        assert_eq!(plan.handled_net, AccessNet::from_all(ABI::V6).bits());
        assert!(plan.ports.is_empty());
        assert_eq!(plan.scoped, Scope::from_all(ABI::V6).bits());
        assert_eq!(plan.attr_size, 24);
        assert_eq!(plan.paths[0].0.as_bytes(), b"/");
        assert_eq!(plan.paths[0].1, AccessFs::from_read(ABI::V6).bits());
    }

    #[test]
    fn port_lists_handle_only_their_direction() {
        let tcp = TcpPorts {
            connect: Some(vec![443]),
            bind: None,
        };
        let plan = plan(6, &[], Some(&tcp));
        assert_eq!(
            plan.handled_net,
            BitFlags::from(AccessNet::ConnectTcp).bits()
        );
        assert_eq!(
            plan.ports,
            [(BitFlags::from(AccessNet::ConnectTcp).bits(), 443)]
        );
        let old = super::plan(3, &[], Some(&tcp));
        assert_eq!((old.handled_net, old.scoped, old.attr_size), (0, 0, 8));
    }
}
