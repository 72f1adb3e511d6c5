//! systemd integration: the units pass `systemd-analyze verify`, the notify protocol, socket
//! activation, and the Debian package installs and purges cleanly.

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::audit::root_or_skip;
use super::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether a program is on this machine; under CI its absence is a failure.
fn have(program: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{test} needs `{program}`, and CI=true: .ci/run installs it"
        );
        eprintln!("SKIPPED {test}: `{program}` is not installed");
    }
    found
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "units_pass_systemd_analyze_verify") {
        return;
    }
    // An image root: the units where systemd looks for them, the programs they run (only
    // their existence is checked), and the host's targets and slices they order against.
    let root = tempfile::tempdir().expect("tmp");
    let units = root.path().join("etc/systemd/system");
    let system = root.path().join("usr/lib/systemd/system");
    for dir in [
        &units,
        &system,
        &root.path().join("usr/bin"),
        &root.path().join("bin"),
    ] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    for program in ["usr/bin/toolgate", "bin/kill"] {
        let path = root.path().join(program);
        std::fs::write(&path, b"").expect("stub");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for entry in std::fs::read_dir("/usr/lib/systemd/system").expect("host units") {
        let path = entry.expect("entry").path();
        let keep = path
            .extension()
            .is_some_and(|e| e == "target" || e == "slice");
        if keep && path.is_file() {
            std::fs::copy(&path, system.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let mut paths = Vec::new();
    for unit in ["toolgate.service", "toolgate.socket"] {
        let source = PathBuf::from(ROOT).join("packaging/systemd").join(unit);
        std::fs::copy(&source, units.join(unit)).expect("copy unit");
        paths.push(units.join(unit));
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .args(&paths)
        .output()
        .expect("run systemd-analyze");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: none is acceptable.
    assert!(stderr.trim().is_empty(), "systemd-analyze warns:\n{stderr}");
}

/// The datagrams the daemon sends to NOTIFY_SOCKET.
struct Notifications(UnixDatagram, Vec<String>);

impl Notifications {
    fn wait_for(&mut self, wanted: &str, daemon: &Daemon) -> String {
        let start = Instant::now();
        loop {
            if let Some(i) = self.1.iter().position(|m| m.lines().any(|l| l == wanted)) {
                return self.1.remove(i);
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {wanted} in {:?}\n{}",
                self.1,
                daemon.log()
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.0.recv(&mut buf) {
                self.1.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

#[test]
fn notify_protocol_ready_reloading_stopping_and_watchdog() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut daemon = Daemon::start_custom(PROBE_TOOL, "", |command| {
        command
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
    });
    let mut notes = Notifications(socket, Vec::new());
    let ready = notes.wait_for("READY=1", &daemon);
    assert!(ready.contains("STATUS=serving 1 tools"), "{ready}");
    // Pings at half the 200 ms interval: several within a second.
    for _ in 0..3 {
        notes.wait_for("WATCHDOG=1", &daemon);
    }

    daemon.signal(libc::SIGHUP);
    let reloading = notes.wait_for("RELOADING=1", &daemon);
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING without MONOTONIC_USEC: {reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|n| n > 0), "{usec}");
    notes.wait_for("READY=1", &daemon);

    daemon.signal(libc::SIGTERM);
    notes.wait_for("STOPPING=1", &daemon);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
}

/// An execve prepared in the parent, for a pre-exec hook.
struct Exec {
    program: CString,
    #[allow(dead_code)] // owns what `argv_ptrs` points to
    argv: Vec<CString>,
    #[allow(dead_code)] // owns what `env_ptrs` points to
    envp: Vec<CString>,
    pid_var: Vec<u8>,
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into the buffers the value owns; it is only used by one thread
// (the forked child).
unsafe impl Send for Exec {}
// SAFETY: as above.
unsafe impl Sync for Exec {}

impl Exec {
    /// Puts `fd` at 3 (as systemd does), sets LISTEN_PID to this process and execs.
    unsafe fn run(&mut self, fd: i32) -> std::io::Result<()> {
        // SAFETY: async-signal-safe calls on memory this value owns.
        unsafe {
            if fd == 3 {
                // dup2 onto itself would keep close-on-exec.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut pid = libc::getpid() as u64;
            let mut digits = [0u8; 20];
            let mut n = 0;
            loop {
                digits[n] = b'0' + (pid % 10) as u8;
                n += 1;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for i in 0..n {
                self.pid_var[11 + i] = digits[n - 1 - i];
            }
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
        }
        Err(std::io::Error::last_os_error())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_activation_serves_on_the_passed_socket() {
    // Like systemd: bind the socket, then start the daemon with it as fd 3, LISTEN_FDS=1 and
    // LISTEN_PID = the daemon's own pid, which is known only in the child after fork.
    let mut listener: Option<UnixListener> = None;
    let mut daemon = Daemon::start_custom(PROBE_TOOL, "", |command| {
        let config = command
            .get_args()
            .nth(2)
            .map(PathBuf::from)
            .expect("config path");
        let bound = UnixListener::bind(config.with_file_name("toolgate.sock")).expect("bind");
        let fd = bound.as_raw_fd();
        listener = Some(bound);
        // std fixes the child's environment before fork when the command sets any variable,
        // so the hook execs the daemon itself, with everything prepared here and only the
        // pid's digits written in the child.
        let cstring = |bytes: &[u8]| CString::new(bytes).expect("no NUL");
        let program = cstring(command.get_program().as_bytes());
        let mut argv = vec![program.clone()];
        argv.extend(command.get_args().map(|a| cstring(a.as_bytes())));
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !command.get_envs().any(|(name, _)| name == k))
            .collect();
        vars.extend(
            command
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        );
        let mut envp: Vec<CString> = vars
            .iter()
            .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect();
        envp.push(cstring(b"LISTEN_FDS=1"));
        let mut pid_var = b"LISTEN_PID=".to_vec();
        pid_var.extend([0u8; 24]);
        let exec = Exec {
            argv_ptrs: argv
                .iter()
                .map(|a| a.as_ptr())
                .chain([std::ptr::null()])
                .collect(),
            env_ptrs: envp
                .iter()
                .map(|e| e.as_ptr())
                .chain([pid_var.as_ptr().cast(), std::ptr::null()])
                .collect(),
            program,
            argv,
            envp,
            pid_var,
        };
        // SAFETY: the hook runs in the forked child, where it only calls dup2, fcntl, getpid
        // and execve (async-signal-safe) on memory prepared before the fork, and writes digits
        // into its own copy of `pid_var` (which `env_ptrs` points into).
        unsafe {
            let mut exec = exec;
            command.pre_exec(move || exec.run(fd));
        }
    });
    // The daemon holds its own copy now.
    drop(listener);
    daemon.wait_for(Duration::from_secs(10), "adopts the passed socket", || {
        daemon
            .log()
            .contains("listening on the socket passed by systemd")
    });
    let mut client = daemon.client().await;
    client
        .execute(args_request("probe", &["exit", "0"], "activated-1"))
        .await
        .expect("served on the passed socket");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(10)).success());
    assert!(
        daemon.socket.exists(),
        "the socket belongs to systemd: the daemon must not remove it"
    );
}

#[test]
fn root_deb_installs_and_purges_cleanly() {
    let test = "root_deb_installs_and_purges_cleanly";
    if !root_or_skip(test) || !have("dpkg", test) || !have("cargo-deb", test) {
        return;
    }
    // Package the binary the tests built, as if it were the release build.
    let work = tempfile::tempdir().expect("tmp");
    let release = work.path().join("target/release");
    std::fs::create_dir_all(&release).expect("mkdir");
    std::fs::copy(TOOLGATE, release.join("toolgate")).expect("copy binary");
    let deb = work.path().join("toolgate.deb");
    let out = Command::new("cargo")
        .args(["deb", "--no-build", "--output"])
        .arg(&deb)
        .current_dir(ROOT)
        .env("CARGO_TARGET_DIR", work.path().join("target"))
        .output()
        .expect("run cargo deb");
    assert!(out.status.success(), "cargo deb: {}", text(&out.stderr));

    let contents = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .expect("dpkg-deb");
    let listing = text(&contents.stdout);
    let conffiles = Command::new("dpkg-deb")
        .args(["-I"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb -I");
    let conffiles = text(&conffiles.stdout);
    for policy in std::fs::read_dir(PathBuf::from(ROOT).join("policies")).expect("policies") {
        let name = policy.expect("entry").file_name();
        let installed = format!("/etc/toolgate/policies.d/{}", name.to_string_lossy());
        assert!(
            listing.contains(&format!(".{installed}")),
            "{installed} not packaged"
        );
        assert!(
            conffiles.contains(&installed),
            "{installed} is not a conffile: {conffiles}"
        );
    }
    assert!(
        conffiles.contains("/etc/toolgate/toolgate.toml"),
        "{conffiles}"
    );

    let user_existed = Command::new("getent")
        .args(["passwd", "toolgate"])
        .output()
        .is_ok_and(|o| o.status.success());
    let installed = [
        "/usr/bin/toolgate",
        "/usr/lib/systemd/system/toolgate.service",
        "/usr/lib/systemd/system/toolgate.socket",
        "/usr/lib/sysusers.d/toolgate.conf",
        "/usr/lib/tmpfiles.d/toolgate.conf",
        "/etc/toolgate/toolgate.toml",
        "/etc/toolgate/policies.d/files.toml",
        "/usr/share/doc/toolgate/OPERATIONS.md",
    ];
    assert!(
        installed.iter().all(|p| !Path::new(p).exists()),
        "toolgate is already installed on this machine; refusing to overwrite it"
    );
    let dpkg = |args: &[&str]| {
        // Another package manager run may hold the lock for a moment: wait for it.
        let start = Instant::now();
        loop {
            let out = Command::new("dpkg").args(args).output().expect("run dpkg");
            let stderr = text(&out.stderr);
            if out.status.success()
                || !stderr.contains("lock")
                || start.elapsed() > Duration::from_secs(120)
            {
                return out;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    let out = dpkg(&["-i", deb.to_str().expect("path")]);
    let result = std::panic::catch_unwind(|| {
        assert!(
            out.status.success(),
            "dpkg -i: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        for path in installed {
            assert!(Path::new(path).exists(), "{path} not installed");
        }
        let version = Command::new("/usr/bin/toolgate")
            .arg("--version")
            .output()
            .expect("run");
        assert!(
            text(&version.stdout).starts_with("toolgate "),
            "{}",
            text(&version.stdout)
        );
        // The installed config and policy library load as shipped.
        let check = Command::new("/usr/bin/toolgate")
            .args([
                "policy",
                "check",
                "/etc/toolgate/policies.d",
                "--config",
                "/etc/toolgate/toolgate.toml",
            ])
            .output()
            .expect("policy check");
        // The shipped file tools need the workspace tmpfiles.d creates under systemd.
        let workspace = Path::new("/var/lib/toolgate/workspace");
        if workspace.exists() {
            assert!(check.status.success(), "{}", text(&check.stderr));
        }
        let status = Command::new("dpkg")
            .args(["-s", "toolgate"])
            .output()
            .expect("dpkg -s");
        assert!(text(&status.stdout).contains("Status: install ok installed"));
    });
    let out = dpkg(&["--purge", "toolgate"]);
    if !user_existed {
        // systemd-sysusers made the user; leave the machine as it was.
        let _ = Command::new("userdel").arg("toolgate").output();
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(out.status.success(), "dpkg --purge: {}", text(&out.stderr));
    for path in installed.iter().chain(&["/etc/toolgate"]) {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    let status = Command::new("dpkg")
        .args(["-s", "toolgate"])
        .output()
        .expect("dpkg -s");
    assert!(!status.status.success(), "still known to dpkg after purge");
}
