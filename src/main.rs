//! The `toolgate` command: the daemon (`serve`) and its clients (`call`, `tools`, `policy`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
