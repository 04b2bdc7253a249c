//! Resources the agent offers when `--resources` does not say: as Mesos
//! does, all CPUs, memory less 1 GB (half when small), disk less 10 GB (half
//! when small), ports 31000–32000.

use std::path::Path;

use agora_proto::resources::Resources;

/// Detects what this machine has; `configured` (from `--resources`) wins for
/// every name it sets.
pub fn resources(work_dir: &Path, configured: Option<&Resources>) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let mem_total = meminfo_mb().unwrap_or(2048.0);
    let mem = if mem_total >= 2048.0 {
        mem_total - 1024.0
    } else {
        (mem_total / 2.0).floor()
    };
    let disk_free = disk_free_mb(work_dir).unwrap_or(20480.0);
    let disk = if disk_free >= 20480.0 {
        disk_free - 10240.0
    } else {
        (disk_free / 2.0).floor()
    };
    let detected = format!(
        "cpus:{cpus};mem:{};disk:{};ports:[31000-32000]",
        mem.floor(),
        disk.floor()
    );
    let mut out = Resources::parse(&detected, "*").unwrap_or_default();
    if let Some(c) = configured {
        let names: Vec<String> = c.names().into_iter().map(String::from).collect();
        out = out.filter(|r| !names.contains(&r.name));
        out += c;
    }
    out
}

fn meminfo_mb() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).floor())
}

fn disk_free_mb(path: &Path) -> Option<f64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some((stat.blocks_available() as f64 * stat.fragment_size() as f64 / (1024.0 * 1024.0)).floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_win() {
        let configured = Resources::parse("cpus:2;gpus:1", "*").unwrap();
        let r = resources(Path::new("/"), Some(&configured));
        assert_eq!(r.scalar("cpus"), 2.0);
        assert_eq!(r.scalar("gpus"), 1.0);
        assert!(r.scalar("mem") > 0.0);
        assert_eq!(r.ranges("ports").ranges(), &[(31000, 32000)]);
    }
}
