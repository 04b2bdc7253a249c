//! Applying a configuration to a real HAProxy: write it next to the live
//! file, check it with `haproxy -c`, move it into place, and start HAProxy
//! in master-worker mode (`-W`) or reload it (SIGUSR2 to the master: new
//! workers take over the listening sockets the master holds, old workers
//! finish their connections). A configuration that fails the check is never
//! applied: the last good one keeps serving.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A HAProxy this process runs.
#[derive(Debug)]
pub struct Haproxy {
    bin: PathBuf,
    config: PathBuf,
    master: Option<Child>,
    /// Reloads done (not counting the start).
    pub reloads: u64,
}

impl Haproxy {
    /// HAProxy `bin` serving `config` (not started until the first apply).
    pub fn new(bin: impl Into<PathBuf>, config: impl Into<PathBuf>) -> Self {
        Haproxy {
            bin: bin.into(),
            config: config.into(),
            master: None,
            reloads: 0,
        }
    }

    /// `haproxy -c` on `path`; the error is HAProxy's own message.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg("-f")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Applies `text`: nothing when it is what is live; else check, swap,
    /// start or reload. Returns whether HAProxy was started or reloaded.
    pub fn apply(&mut self, text: &str) -> Result<bool, String> {
        let live = std::fs::read_to_string(&self.config).ok();
        if live.as_deref() == Some(text) && self.running() {
            return Ok(false);
        }
        if let Some(dir) = self.config.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = self.config.with_extension("new");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        if let Err(e) = self.check(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!(
                "the new configuration is invalid; the last good one stays: {e}"
            ));
        }
        std::fs::rename(&tmp, &self.config)
            .map_err(|e| format!("{}: {e}", self.config.display()))?;
        if self.running() {
            let pid = self.master.as_ref().map(|c| c.id()).unwrap_or(0);
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGUSR2,
            )
            .map_err(|e| format!("cannot reload HAProxy (pid {pid}): {e}"))?;
            self.reloads += 1;
        } else {
            let child = Command::new(&self.bin)
                .arg("-W")
                .arg("-db")
                .arg("-f")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
            self.master = Some(child);
        }
        Ok(true)
    }

    /// Whether the master process is alive.
    pub fn running(&mut self) -> bool {
        match &mut self.master {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops HAProxy (SIGTERM to the master, then waits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.master.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
