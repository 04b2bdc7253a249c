//! Resource limits for process tasks: one cgroup per task, cgroups v2 where
//! the unified hierarchy has the memory controller, else v1 (`memory` and
//! `cpu` hierarchies), under an `agora/` directory as Mesos uses `mesos/`.
//!
//! The task's process joins its cgroup between fork and exec (it writes `0`
//! to the cgroup's `cgroup.procs`, opened beforehand), so nothing it forks
//! escapes. Memory: `memory.max` / `memory.limit_in_bytes` (swap limited to
//! the same); cpu: a weight from `cpus`, and a CFS quota of `cpus` cores when
//! the agent enables hard limits (`--cgroups-enable-cfs`, as Mesos).
//! After the task exits, the cgroup's OOM-kill count tells whether it died of
//! its memory limit; the cgroup is emptied and removed.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use tracing::debug;

/// Which hierarchy the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy: `<root>/agora/<task cgroup>`.
    V2 {
        /// `<mount>/agora`.
        root: PathBuf,
    },
    /// Legacy hierarchies: `<memory mount>/agora/…` and `<cpu mount>/agora/…`.
    V1 {
        /// `<memory mount>/agora`.
        memory: PathBuf,
        /// `<cpu mount>/agora`.
        cpu: PathBuf,
    },
}

impl std::fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hierarchy::V2 { root } => write!(f, "cgroups v2 at {}", root.display()),
            Hierarchy::V1 { memory, .. } => write!(
                f,
                "cgroups v1 (memory, cpu) at {}",
                memory.parent().unwrap_or(memory).display()
            ),
        }
    }
}

/// Limits from a task's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// `cpus` (0 = no cpu limit): a weight, and a quota when `cfs`.
    pub cpus: f64,
    /// Enforce `cpus` as a CFS quota (a hard limit), not only a weight.
    pub cfs: bool,
    /// `mem` in bytes (0 = no memory limit).
    pub memory: u64,
}

const CFS_PERIOD_US: u64 = 100_000;

/// Why cgroup limits cannot be applied on this host.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file of the hierarchy cannot be read or written.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was tried.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No hierarchy with the memory and cpu controllers.
    #[error("no cgroup hierarchy with the memory and cpu controllers is mounted")]
    NoHierarchy,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { what, path, source }
}

/// Finds a writable hierarchy and creates its `agora` directory; the error
/// says why limits cannot be applied.
pub fn detect() -> Result<Hierarchy, CgroupError> {
    let mounts_file = Path::new("/proc/self/mounts");
    let mounts = std::fs::read_to_string(mounts_file).map_err(io("read", mounts_file))?;
    let mut v2 = None;
    let (mut memory, mut cpu) = (None, None);
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (path, kind, options) = (PathBuf::from(f[1]), f[2], f[3]);
        match kind {
            "cgroup2" => {
                let controllers =
                    std::fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default();
                if controllers.split_whitespace().any(|c| c == "memory") {
                    v2 = Some(path);
                }
            }
            "cgroup" => {
                let opts: Vec<&str> = options.split(',').collect();
                if opts.contains(&"memory") {
                    memory = Some(path.clone());
                }
                if opts.contains(&"cpu") {
                    cpu = Some(path);
                }
            }
            _ => {}
        }
    }
    let made = |p: &Path| std::fs::create_dir_all(p).map_err(io("create", p));
    if let Some(mount) = v2 {
        let root = mount.join("agora");
        made(&root)?;
        // Children of agora/ get the memory and cpu controllers.
        let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+memory +cpu");
        std::fs::write(root.join("cgroup.subtree_control"), "+memory +cpu")
            .map_err(io("enable the memory and cpu controllers in", &root))?;
        return Ok(Hierarchy::V2 { root });
    }
    match (memory, cpu) {
        (Some(m), Some(c)) => {
            let (memory, cpu) = (m.join("agora"), c.join("agora"));
            made(&memory)?;
            made(&cpu)?;
            Ok(Hierarchy::V1 { memory, cpu })
        }
        _ => Err(CgroupError::NoHierarchy),
    }
}

/// A task's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, opened for the child to join.
    procs: Vec<File>,
}

/// A cgroup name from a task id: safe characters only, plus a unique suffix.
pub fn name_for(task: &str) -> String {
    let safe: String = task
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{}", uuid::Uuid::new_v4().simple())
}

impl Hierarchy {
    /// Creates cgroup `name` with `limits`.
    pub fn create(&self, name: &str, limits: Limits) -> io::Result<Cgroup> {
        let cg = match self {
            Hierarchy::V2 { root } => {
                let dir = root.join(name);
                std::fs::create_dir(&dir)?;
                if limits.memory > 0 {
                    std::fs::write(dir.join("memory.max"), limits.memory.to_string())?;
                    // No swapping past the limit (absent without swap).
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                if limits.cpus > 0.0 {
                    if limits.cfs {
                        let quota = (limits.cpus * CFS_PERIOD_US as f64).round().max(1000.0);
                        std::fs::write(dir.join("cpu.max"), format!("{quota} {CFS_PERIOD_US}"))?;
                    }
                    // cpu.shares 1024 per cpu, mapped to a weight as systemd does.
                    let shares = (limits.cpus * 1024.0).round().clamp(2.0, 262_144.0);
                    let weight = 1.0 + ((shares - 2.0) * 9999.0) / 262_142.0;
                    std::fs::write(dir.join("cpu.weight"), (weight.round() as u64).to_string())?;
                }
                Cgroup {
                    v2: true,
                    procs: vec![open_procs(&dir)?],
                    dirs: vec![dir],
                }
            }
            Hierarchy::V1 { memory, cpu } => {
                let (m, c) = (memory.join(name), cpu.join(name));
                std::fs::create_dir(&m)?;
                std::fs::create_dir(&c)?;
                if limits.memory > 0 {
                    std::fs::write(m.join("memory.limit_in_bytes"), limits.memory.to_string())?;
                    let _ = std::fs::write(
                        m.join("memory.memsw.limit_in_bytes"),
                        limits.memory.to_string(),
                    );
                }
                if limits.cpus > 0.0 {
                    let shares = (limits.cpus * 1024.0).round().max(2.0) as u64;
                    std::fs::write(c.join("cpu.shares"), shares.to_string())?;
                    if limits.cfs {
                        let quota = (limits.cpus * CFS_PERIOD_US as f64).round().max(1000.0) as u64;
                        std::fs::write(c.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                        std::fs::write(c.join("cpu.cfs_quota_us"), quota.to_string())?;
                    }
                }
                Cgroup {
                    v2: false,
                    procs: vec![open_procs(&m)?, open_procs(&c)?],
                    dirs: vec![m, c],
                }
            }
        };
        debug!(dirs = ?cg.dirs, ?limits, "cgroup created");
        Ok(cg)
    }
}

fn open_procs(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
}

impl Cgroup {
    /// Makes `command`'s process join this cgroup between fork and exec.
    // The one unsafe block of the agent: std has no safe way to run code
    // between fork and exec, and joining any later lets the task fork first.
    #[allow(unsafe_code)]
    pub fn join_on_spawn(&self, command: &mut tokio::process::Command) {
        let fds: Vec<i32> = self.procs.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure runs in the forked child before exec; it only
        // calls write(2) on descriptors opened by the parent (no allocation,
        // no locks), which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                for fd in &fds {
                    let n = libc::write(*fd, b"0".as_ptr().cast(), 1);
                    if n != 1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// Whether the kernel killed a process of this cgroup for exceeding its
    /// memory limit.
    pub fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.memory_dir().join(file)).unwrap_or_default();
        let count = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        count("oom_kill") > 0 || (self.v2 && count("oom") > 0)
    }

    /// The most memory the cgroup used, in bytes.
    pub fn max_usage(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.memory_dir().join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.memory_dir().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills what is left in it and removes it.
    pub fn destroy(&self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for dir in &self.dirs {
            if let Err(e) = std::fs::remove_dir(dir) {
                debug!(dir = %dir.display(), error = %e, "cannot remove the cgroup");
            }
        }
    }

    /// Its directories (memory first).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_unique() {
        let a = name_for("web/../x y");
        assert!(a.starts_with("web_.._x_y-"), "{a}");
        assert_ne!(name_for("t"), name_for("t"));
    }

    /// Runs only where cgroups are writable (as root in CI); says so when not.
    #[tokio::test]
    async fn a_process_over_its_memory_limit_is_oom_killed() {
        let h = match detect() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("skipped: {e}");
                assert!(
                    std::env::var("AGORA_REQUIRE_ALL").is_err(),
                    "cgroups are required: {e}"
                );
                return;
            }
        };
        let cg = h
            .create(
                &name_for("oom-test"),
                Limits {
                    cpus: 0.5,
                    cfs: true,
                    memory: 16 << 20,
                },
            )
            .unwrap();
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg("head -c 200000000 /dev/zero | tail");
        c.stdout(std::process::Stdio::null());
        cg.join_on_spawn(&mut c);
        let status = c.spawn().unwrap().wait().await.unwrap();
        assert!(!status.success());
        assert!(cg.oom_killed(), "{:?}", cg.dirs());
        assert!(cg.max_usage().unwrap() <= 17 << 20);
        cg.destroy();
        assert!(cg.dirs().iter().all(|d| !d.exists()));

        // Within its limit, a process is not disturbed.
        let cg = h
            .create(
                &name_for("fits"),
                Limits {
                    cpus: 0.5,
                    cfs: true,
                    memory: 64 << 20,
                },
            )
            .unwrap();
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg("head -c 1000000 /dev/zero | tail >/dev/null");
        cg.join_on_spawn(&mut c);
        assert!(c.spawn().unwrap().wait().await.unwrap().success());
        assert!(!cg.oom_killed());
        cg.destroy();
    }
}
