//! `agora`: one binary, a subcommand per role.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
