//! Dynamic reservations and persistent volumes on the agent's side.
//!
//! The master sends the agent its whole total after each RESERVE,
//! UNRESERVE, CREATE or DESTROY. The agent checkpoints what operations made
//! of its static resources (`<work-dir>/meta/resources.pb`, outside the
//! agent id's directory as in Mesos, so a new agent id keeps them) and
//! registers with them after a restart. A volume's data lives in
//! `<work-dir>/volumes/roles/<role>/<id>`, created with the volume and
//! deleted with it, and appears in the sandbox of the tasks that use it as
//! a link at its container path.

use std::io;
use std::path::{Path, PathBuf};

use agora_agent_core::{SandboxVolume, volume_path};
use agora_proto::internal::CheckpointResources;
use agora_proto::resources::{self, Resources};
use prost::Message as _;

fn checkpoint_path(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("resources.pb")
}

/// What a previous run checkpointed (empty when nothing was).
pub fn load(work_dir: &Path) -> io::Result<Resources> {
    let bytes = match std::fs::read(checkpoint_path(work_dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Resources::new()),
        Err(e) => return Err(e),
    };
    let message = CheckpointResources::decode(bytes.as_slice())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Resources::from_protos(&message.total)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The agent's total: its static resources, with what operations made of
/// them. An error when the static resources no longer hold them (the
/// agent's `--resources` shrank under a reservation or a volume).
pub fn total(static_resources: &Resources, checkpointed: &Resources) -> Result<Resources, String> {
    let origin = checkpointed.map_identity(resources::as_static);
    if !static_resources.contains(&origin) {
        return Err(format!(
            "the checkpointed reservations and volumes ({checkpointed}) need {origin}, \
             which the agent's resources ({static_resources}) do not have; \
             restore --resources or remove {}",
            "<work-dir>/meta/resources.pb"
        ));
    }
    Ok(&(static_resources - &origin) + checkpointed)
}

/// Checkpoints a new total and makes the volume directories match it:
/// new volumes get an empty directory, destroyed ones lose theirs.
pub fn save(work_dir: &Path, total: &Resources, previous: &Resources) -> io::Result<()> {
    let checkpointed = total.checkpointed();
    let message = CheckpointResources {
        total: checkpointed.to_protos(),
    };
    let path = checkpoint_path(work_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("pb.tmp");
    std::fs::write(&tmp, message.encode_to_vec())?;
    std::fs::rename(&tmp, &path)?;
    for v in total.persistent_volumes().keys() {
        if let Some(dir) = dir_of(work_dir, v) {
            std::fs::create_dir_all(dir)?;
        }
    }
    let now: Vec<PathBuf> = total
        .persistent_volumes()
        .keys()
        .filter_map(|v| dir_of(work_dir, v))
        .collect();
    for v in previous.persistent_volumes().keys() {
        if let Some(dir) = dir_of(work_dir, v).filter(|d| !now.contains(d)) {
            tracing::info!(path = %dir.display(), "deleting a destroyed persistent volume");
            std::fs::remove_dir_all(&dir).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })?;
        }
    }
    Ok(())
}

/// A volume's directory.
fn dir_of(work_dir: &Path, v: &agora_proto::v1::Resource) -> Option<PathBuf> {
    let id = &v.disk.as_ref()?.persistence.as_ref()?.id;
    let role = v
        .reservations
        .last()
        .and_then(|r| r.role.as_deref())
        .unwrap_or("*");
    Some(volume_path(work_dir, role, id))
}

/// Links each volume into the sandbox at its container path, giving it to
/// its owner (a volume's files stay its task user's across runs).
pub fn link(sandbox: &Path, volumes: &[SandboxVolume]) -> io::Result<()> {
    for v in volumes {
        std::fs::create_dir_all(&v.host)?;
        let at = sandbox.join(&v.container_path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Another task of the same executor may use it already.
        if std::fs::read_link(&at).is_ok_and(|t| t == v.host) {
            continue;
        }
        std::os::unix::fs::symlink(&v.host, &at)?;
        if let Some(owner) = &v.owner {
            let u = crate::users::lookup(owner).map_err(io::Error::other)?;
            nix::unistd::chown(&v.host, Some(u.uid), Some(u.gid)).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Resources {
        Resources::parse(text, "*").unwrap()
    }

    fn reserved_disk(volume: Option<&str>) -> Resources {
        let mut r = agora_proto::v1::Resource {
            name: "disk".into(),
            r#type: agora_proto::v1::value::Type::Scalar as i32,
            scalar: Some(agora_proto::v1::value::Scalar { value: 100.0 }),
            reservations: vec![agora_proto::v1::resource::ReservationInfo {
                r#type: Some(agora_proto::v1::resource::reservation_info::Type::Dynamic as i32),
                role: Some("db".into()),
                principal: Some("ops".into()),
                labels: None,
            }],
            ..Default::default()
        };
        if let Some(id) = volume {
            r.disk = Some(agora_proto::v1::resource::DiskInfo {
                persistence: Some(agora_proto::v1::resource::disk_info::Persistence {
                    id: id.into(),
                    principal: Some("ops".into()),
                }),
                volume: Some(agora_proto::v1::Volume {
                    container_path: "data".into(),
                    mode: agora_proto::v1::volume::Mode::Rw as i32,
                    ..Default::default()
                }),
                source: None,
            });
        }
        Resources::from_protos(&[r]).unwrap()
    }

    #[test]
    fn the_total_is_the_static_resources_with_what_operations_made_of_them() {
        let statics = parse("cpus:4;mem:1024;disk:1000");
        let volume = reserved_disk(Some("v1"));
        let total = total(&statics, &volume).unwrap();
        assert_eq!(total.scalar("disk"), 1000.0);
        assert_eq!(total.persistent_volumes(), volume);
        assert_eq!(total.unreserved(), parse("cpus:4;mem:1024;disk:900"));
    }

    #[test]
    fn static_resources_that_shrank_under_a_volume_are_an_error() {
        let err = total(&parse("cpus:4;disk:50"), &reserved_disk(Some("v1"))).unwrap_err();
        assert!(err.contains("restore --resources"), "{err}");
    }

    #[test]
    fn saving_makes_and_deletes_volume_directories_and_load_reads_it_back() {
        let work = tempfile::tempdir().unwrap();
        let statics = parse("cpus:1;disk:1000");
        let with_volume = total(&statics, &reserved_disk(Some("v1"))).unwrap();
        save(work.path(), &with_volume, &statics).unwrap();
        let dir = volume_path(work.path(), "db", "v1");
        assert!(dir.is_dir());
        std::fs::write(dir.join("x"), "kept").unwrap();
        assert_eq!(load(work.path()).unwrap(), with_volume.checkpointed());
        // DESTROY: the volume is plain reserved disk again.
        let destroyed = total(&statics, &reserved_disk(None)).unwrap();
        save(work.path(), &destroyed, &with_volume).unwrap();
        assert!(!dir.exists());
        assert_eq!(load(work.path()).unwrap(), reserved_disk(None));
    }
}
