//! `agora`: one binary, a subcommand per role.

mod bench;
mod cli;

/// mimalloc: the master and agents allocate many small, short-lived objects
/// (protobuf messages, resource sets); it is markedly faster than glibc's
/// malloc for that (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
