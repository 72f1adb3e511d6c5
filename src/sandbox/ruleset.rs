//! The landlock ruleset of a tool, built once at policy load.
//!
//! The ruleset handles every filesystem right the kernel knows (up to ABI 6), so anything not
//! granted below is denied: reading, writing, executing, creating, removing, renaming across
//! directories (refer), truncating and device ioctls. When the policy says `network = "none"` it
//! also handles TCP bind and connect with no port allowed. It always scopes abstract Unix sockets
//! and signals, so the tool can neither connect to an abstract socket of the host nor signal a
//! process outside its own sandbox. Paths the kernel lacks rights for are granted best effort:
//! an older kernel enforces fewer rights, never more access than granted.

use std::os::fd::OwnedFd;
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};

use super::{Error, Network, Spec};

/// The newest ABI whose rights this code grants deliberately.
const ABI_USED: ABI = ABI::V6;

/// Read-only system locations ordinary programs need to load and run: the dynamic loader, shared
/// libraries, the programs themselves, locale and time zone data.
const SYSTEM_READ: &[&str] = &[
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

/// Device files every program may read: sources of zeros and randomness.
const DEVICES_READ: &[&str] = &["/dev/zero", "/dev/urandom", "/dev/random", "/dev/full"];

/// Builds the ruleset for `spec`; `program` is always readable and executable.
pub fn build(spec: &Spec, program: &Path) -> Result<OwnedFd, Error> {
    let ruleset_error = |e: landlock::RulesetError| Error::LandlockRuleset(e.to_string());
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))
        .map_err(ruleset_error)?
        .scope(Scope::from_all(ABI_USED))
        .map_err(ruleset_error)?;
    if spec.network == Network::None {
        // Handling both TCP rights and adding no port rule denies every bind and connect.
        ruleset = ruleset
            .handle_access(AccessNet::from_all(ABI_USED))
            .map_err(ruleset_error)?;
    }
    let mut created = ruleset.create().map_err(ruleset_error)?;

    // Reading a directory tree also allows executing what is in it: tools run helpers from the
    // system directories (and the loader maps libraries, which needs ReadFile).
    let read = AccessFs::from_read(ABI_USED);
    // Writable trees get every right except creating device nodes.
    let write = AccessFs::from_all(ABI_USED) & !(AccessFs::MakeChar | AccessFs::MakeBlock);

    let mut grants: Vec<(&Path, BitFlags<AccessFs>, bool)> = Vec::new();
    if spec.system_paths {
        for path in SYSTEM_READ.iter().chain(DEVICES_READ) {
            grants.push((Path::new(path), read, false));
        }
        // /dev/null is where tools send what they do not want: reading and writing it is safe.
        grants.push((
            Path::new("/dev/null"),
            AccessFs::ReadFile | AccessFs::WriteFile,
            false,
        ));
    }
    grants.push((program, AccessFs::Execute | AccessFs::ReadFile, true));
    grants.extend(spec.read.iter().map(|p| (p.as_path(), read, true)));
    grants.extend(spec.write.iter().map(|p| (p.as_path(), write, true)));

    for (path, access, required) in grants {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // System locations differ between distributions; the policy's own must exist.
            Err(_) if !required => continue,
            Err(e) => {
                return Err(Error::LandlockRule {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        // Directory-only rights on a file are an error to the kernel: keep the file ones.
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(ABI_USED)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| Error::LandlockRule {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
    }
    Option::<OwnedFd>::from(created)
        .ok_or_else(|| Error::LandlockRuleset("the kernel returned no ruleset".to_owned()))
}
