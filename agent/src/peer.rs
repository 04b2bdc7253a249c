//! Which process is on the other end of a local connection, from `/proc`.
//!
//! The executor API takes a call for an executor only from that executor
//! (or a process of its process group, which an executor run by a shell
//! needs): a forged TASK_FAILED from any local process once made the master
//! and marathon-rs replace a task that kept running. Executors that present
//! a token will not need this; executors that cannot (pymesos' executor)
//! keep working because the check needs nothing from them.
//!
//! The client's socket is found in the executor's own network namespace
//! (`/proc/<pid>/net/tcp` and `tcp6`) by its two ends, and its inode looked
//! for among the file descriptors of the executor, then of its group.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether the client end of a connection to this agent (`peer` → `local`)
/// is a socket held by process `pid` or a process of the group it leads.
pub fn from_group(pid: u32, peer: SocketAddr, local: SocketAddr) -> bool {
    let Some(inode) = client_inode(pid, peer, local) else {
        return false;
    };
    let target = format!("socket:[{inode}]");
    if holds(pid, &target) {
        return true;
    }
    group_members(pid).any(|member| holds(member, &target))
}

/// The inode of the socket whose local end is `peer` and remote end
/// `local`, in the network namespace of `pid`.
fn client_inode(pid: u32, peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    let want = (canonical(peer), canonical(local));
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = parse_addr(fields.get(1)?)?;
            let remote = parse_addr(fields.get(2)?)?;
            ((local, remote) == want).then(|| fields.get(9)?.parse().ok())?
        })
    })
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), each 32-bit
/// word in the kernel's byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip.to_canonical(), port))
}

/// Whether process `pid` has `target` (`socket:[inode]`) open.
fn holds(pid: u32, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target))
}

/// The processes of the group `leader` leads, other than itself.
fn group_members(leader: u32) -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| {
            pid != leader
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    // After the command's ')': state, ppid, pgrp.
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                        .is_some_and(|pgrp| pgrp == leader.to_string())
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_the_kernel_prints_them() {
        let v4 = parse_addr("0100007F:1F90").unwrap();
        assert_eq!(v4, "127.0.0.1:8080".parse().unwrap());
        let v6 = parse_addr("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(v6, "[::1]:80".parse().unwrap());
        // An IPv4 client of a dual-stack listener.
        let mapped = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped, "127.0.0.1:80".parse().unwrap());
        assert!(parse_addr("zz:1").is_none());
    }

    #[tokio::test]
    async fn finds_the_process_holding_the_client_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        let local = listener.local_addr().unwrap();
        assert!(from_group(std::process::id(), peer, local));
        // Another process (a child of ours, in our group or not) does not hold it.
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!from_group(other.id(), peer, local));
        let _ = other.kill();
        let _ = other.wait();
        drop(client);
    }
}
