//! Sandboxes and processes: where an executor runs
//! (`<work-dir>/slaves/<agent>/frameworks/<fw>/executors/<ex>/runs/<container>`,
//! with `stdout` and `stderr`), how it is started (its own process group, so
//! that a kill reaches everything it started), and how it is killed.

use std::fs::File;
use std::io;
use std::path::Path;

use agora_proto::v1;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub use agora_agent_core::sandbox_path as path;

/// Creates the sandbox with empty `stdout`/`stderr` and a `latest` link to
/// this run; returns the two files.
pub fn create(dir: &Path) -> io::Result<(File, File)> {
    std::fs::create_dir_all(dir.join(".agora").join("pgids"))?;
    let stdout = File::create(dir.join("stdout"))?;
    let stderr = File::create(dir.join("stderr"))?;
    if let (Some(runs), Some(name)) = (dir.parent(), dir.file_name()) {
        let latest = runs.join("latest");
        let _ = std::fs::remove_file(&latest);
        let _ = std::os::unix::fs::symlink(name, &latest);
    }
    Ok((stdout, stderr))
}

/// How to start a process: a CommandInfo, extra environment, a directory.
pub struct Spec<'a> {
    /// The command (shell or argv form).
    pub command: &'a v1::CommandInfo,
    /// Environment on top of the agent's own.
    pub env: &'a [(String, String)],
    /// Working directory (the sandbox).
    pub dir: &'a Path,
}

/// Builds the process for a CommandInfo: `sh -c value` when `shell` (the
/// default), else `value` with `arguments` as argv. It gets its own process
/// group.
pub fn command(spec: &Spec<'_>) -> io::Result<tokio::process::Command> {
    let cmd = spec.command;
    let mut c = if cmd.shell.unwrap_or(true) {
        let value = cmd.value.clone().unwrap_or_default();
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(value);
        c
    } else {
        let program = cmd.value.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "CommandInfo.value is required when shell is false",
            )
        })?;
        let mut c = tokio::process::Command::new(&program);
        let mut args = cmd.arguments.iter();
        if let Some(argv0) = args.next() {
            c.arg0(argv0);
        }
        c.args(args);
        c
    };
    // Set for our executor by the agent; not for what it runs (a task must
    // not speak for its executor).
    c.env_remove("MIMALLOC_ALLOW_THP");
    c.env_remove("MESOS_EXECUTOR_AUTHENTICATION_TOKEN");
    for (k, v) in spec.env {
        c.env(k, v);
    }
    if let Some(env) = &cmd.environment {
        for var in &env.variables {
            if let Some(value) = &var.value {
                c.env(&var.name, value);
            }
        }
    }
    c.current_dir(spec.dir)
        .process_group(0)
        .kill_on_drop(false)
        .stdin(std::process::Stdio::null());
    Ok(c)
}

/// Sends `signal` to a process group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Process groups of tasks an executor started, as it recorded them in the
/// sandbox (`.agora/pgids/<task>`), so that destroying a run leaves nothing.
pub fn recorded_groups(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir.join(".agora").join("pgids")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Records a task's process group (called by the executor).
pub fn record_group(dir: &Path, task: &str, pgid: u32) {
    let safe: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let d = dir.join(".agora").join("pgids");
    let _ = std::fs::create_dir_all(&d);
    let _ = std::fs::write(d.join(safe), pgid.to_string());
}

/// Removes a task's recorded process group once it has exited.
pub fn forget_group(dir: &Path, task: &str) {
    let safe: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let _ = std::fs::remove_file(dir.join(".agora").join("pgids").join(safe));
}

/// Kills a run: its own process group and every task group it recorded.
pub fn destroy(pid: Option<u32>, dir: &Path) {
    if let Some(pid) = pid {
        signal_group(pid as i32, Signal::SIGKILL);
    }
    for pgid in recorded_groups(dir) {
        signal_group(pgid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn layout_is_mesos_like() {
        let p = path(Path::new("/w"), "A-S0", "F-0000", "t1", "c1");
        assert_eq!(
            p,
            PathBuf::from("/w/slaves/A-S0/frameworks/F-0000/executors/t1/runs/c1")
        );
    }

    #[test]
    fn sandbox_has_output_files_and_latest_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("runs").join("c1");
        create(&dir).unwrap();
        assert!(dir.join("stdout").exists() && dir.join("stderr").exists());
        assert_eq!(
            std::fs::read_link(tmp.path().join("runs").join("latest")).unwrap(),
            PathBuf::from("c1")
        );
        record_group(&dir, "a/b", 4242);
        assert_eq!(recorded_groups(&dir), vec![4242]);
        forget_group(&dir, "a/b");
        assert!(recorded_groups(&dir).is_empty());
    }
}
