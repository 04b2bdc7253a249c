//! Where the leading master keeps its registry (admitted, unreachable and
//! gone agents, role weights; `agora.internal.v1.Registry`, protobuf): a
//! file in `--work-dir` (replaced atomically) or, with `--zk`, a fenced
//! document in ZooKeeper next to the election (`<path>-registry`, not under
//! the election's path: pymesos takes the smallest child name there as the
//! leader). Without either it lives in memory only.
//!
//! The core says when the registry changed; the driver hands the newest
//! encoding to one writer task, which stores only the latest (a burst of
//! registrations costs one write). Unlike Mesos, an agent is admitted
//! before its registry entry is stored.

use std::path::PathBuf;
use std::sync::Arc;

use agora_proto::internal::Registry;
use agora_zk as zk;
use prost::Message as _;
use tokio::sync::{Notify, watch};
use tracing::{error, warn};

/// A registry store.
#[derive(Clone)]
pub enum RegistryStore {
    /// `<dir>/registry.pb`.
    File(PathBuf),
    /// A document over the leader's ZooKeeper session.
    Zk(Arc<zk::Document>),
}

/// What can go wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read or written.
    #[error("registry {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// ZooKeeper failed, or another leader wrote.
    #[error(transparent)]
    Zk(#[from] zk::ZkError),
    /// The stored registry does not decode.
    #[error("the stored registry is not valid: {0}")]
    Corrupt(#[from] prost::DecodeError),
}

impl RegistryStore {
    /// The file store in `dir` (created if missing).
    pub fn file(dir: PathBuf) -> Result<RegistryStore, RegistryError> {
        std::fs::create_dir_all(&dir).map_err(|e| RegistryError::Io(dir.clone(), e))?;
        Ok(RegistryStore::File(dir.join("registry.pb")))
    }

    /// The stored registry (empty when none was stored).
    pub async fn read(&self) -> Result<Registry, RegistryError> {
        let bytes = match self {
            RegistryStore::File(path) => match tokio::fs::read(path).await {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(RegistryError::Io(path.clone(), e)),
            },
            RegistryStore::Zk(doc) => doc.read().await?,
        };
        Ok(match bytes {
            Some(b) => Registry::decode(b.as_slice())?,
            None => Registry::default(),
        })
    }

    async fn write(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        match self {
            RegistryStore::File(path) => {
                let tmp = path.with_extension("pb.tmp");
                let io = |e| RegistryError::Io(path.clone(), e);
                tokio::fs::write(&tmp, bytes).await.map_err(io)?;
                let f = tokio::fs::File::open(&tmp).await.map_err(io)?;
                f.sync_data().await.map_err(io)?;
                tokio::fs::rename(&tmp, path).await.map_err(io)
            }
            RegistryStore::Zk(doc) => Ok(doc.write(bytes).await?),
        }
    }
}

/// The writer: stores the newest registry it is given. `fenced` is told
/// when another leader has written the ZooKeeper document since.
pub(crate) fn spawn_writer(
    store: RegistryStore,
    fenced: Arc<Notify>,
) -> (watch::Sender<Option<Registry>>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel::<Option<Registry>>(None);
    let task = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let Some(bytes) = rx.borrow_and_update().as_ref().map(|r| r.encode_to_vec()) else {
                continue;
            };
            match store.write(&bytes).await {
                Ok(()) => {}
                Err(RegistryError::Zk(zk::ZkError::Fenced(url))) => {
                    error!(%url, "another master wrote the registry: this one no longer leads");
                    fenced.notify_one();
                    return;
                }
                Err(e) => warn!(error = %e, "cannot store the registry"),
            }
        }
    });
    (tx, task)
}
