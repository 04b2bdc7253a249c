//! Tasks run as the user their framework names (`CommandInfo.user`, else
//! `FrameworkInfo.user`), as Mesos' `--switch_user`: the command executor
//! (which stays root, to manage cgroups and containers) switches each task's
//! process to that user between fork and exec, with the user's groups, and
//! hands it its sandbox (owner, mode 0750). A user the machine does not have
//! fails the task with a message naming it.

use std::ffi::CString;
use std::io;
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

/// A unix user, resolved before the fork.
#[derive(Clone, Debug)]
pub struct TaskUser {
    /// The name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary group.
    pub gid: Gid,
    /// Every group it is in.
    pub groups: Vec<Gid>,
}

/// Resolves `name` on this machine.
pub fn lookup(name: &str) -> Result<TaskUser, String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user '{name}': {e}"))?
        .ok_or_else(|| format!("No such user '{name}' on this agent"))?;
    let groups = CString::new(name)
        .ok()
        .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
        .unwrap_or_else(|| vec![user.gid]);
    Ok(TaskUser {
        name: name.to_string(),
        uid: user.uid,
        gid: user.gid,
        groups,
    })
}

/// Whether this process may switch users (it is root).
pub fn can_switch() -> bool {
    Uid::effective().is_root()
}

impl TaskUser {
    /// Makes `command`'s process run as this user.
    // The agent's second unsafe block (the first joins cgroups): std has
    // no stable way to set supplementary groups, and they must be set
    // before the uid changes.
    #[allow(unsafe_code)]
    pub fn switch_on_spawn(&self, command: &mut tokio::process::Command) {
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        // SAFETY: the closure runs in the forked child before exec and makes
        // only the setgroups(2), setgid(2) and setuid(2) system calls on
        // data prepared by the parent: async-signal-safe, no allocation.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
                nix::unistd::setgid(gid).map_err(io::Error::from)?;
                nix::unistd::setuid(uid).map_err(io::Error::from)?;
                Ok(())
            });
        }
    }

    /// Gives `dir` (and what is in it) to this user, mode 0750 for `dir`
    /// itself, as Mesos prepares a sandbox. The agent's own bookkeeping
    /// (`.agora`) stays root's.
    pub fn own(&self, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        chown_tree(dir, self.uid, self.gid)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
    }
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    nix::unistd::chown(path, Some(uid), Some(gid)).map_err(io::Error::from)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_name() == ".agora" {
                continue;
            }
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Makes `command` start in the network namespace `netns` (a handle on
/// `/run/netns/<name>`): entered before exec, before any user switch (it
/// needs the agent's privileges).
#[allow(unsafe_code)]
pub fn enter_netns_on_spawn(command: &mut tokio::process::Command, netns: std::fs::File) {
    // SAFETY: the closure runs in the forked child before exec and makes only
    // the setns(2) system call on a descriptor opened by the parent:
    // async-signal-safe, no allocation.
    unsafe {
        command.pre_exec(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_with_their_groups_or_say_they_do_not_exist() {
        let root = lookup("root").unwrap();
        assert!(root.uid.is_root());
        assert!(root.groups.contains(&root.gid));
        let e = lookup("no-such-user-here").unwrap_err();
        assert!(e.contains("No such user 'no-such-user-here'"), "{e}");
    }
}
