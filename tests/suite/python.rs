//! The Python side of issue 6, run from the one test command: the Python client (sync and
//! asyncio, every refusal), `toolgate mcp` with the real Python MCP client, the LangChain
//! adapter, and the web tools against HTTPS servers on loopback, all against the real daemon
//! (pytest starts it from `TOOLGATE_BIN`).
//!
//! The packages live in `target/venv`, which `.ci/run` prepares. Without it the test skips with
//! the reason; under `CI=true` a missing venv is a failure.

use std::path::Path;
use std::process::Command;

use super::TOOLGATE;

#[test]
fn python_client_mcp_and_web_tools_pass_pytest() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join("target/venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "target/venv is missing and CI=true: run .ci/run (it creates the venv) first"
        );
        eprintln!(
            "SKIP python_client_mcp_and_web_tools_pass_pytest: no target/venv; .ci/run creates it"
        );
        return;
    }
    let output = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "clients/python/tests",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(repo)
        .env("TOOLGATE_BIN", TOOLGATE)
        .output()
        .expect("run pytest");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "pytest failed:\n{report}");
    eprintln!("{report}");
}
