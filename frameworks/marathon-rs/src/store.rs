//! The store: marathon-rs' whole state as one JSON document, replaced
//! atomically. Embedded: a file in the work dir (write to a temporary file,
//! fsync, rename). Highly available: a [`zk::Document`] under
//! `<zk path>/state`, written over the leader's ZooKeeper session and fenced
//! (a deposed leader's write fails). Either way a crash leaves the old or
//! the new document, never half of one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agora_marathon_core::marathon::State;
use agora_zk as zk;
use tracing::error;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The document is not a marathon-rs state.
    #[error("{path} is not a valid marathon-rs state: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// ZooKeeper failed (or another leader wrote).
    #[error(transparent)]
    Zk(#[from] zk::ZkError),
}

/// Where the state is kept.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    File(PathBuf),
    Zk {
        doc: Arc<zk::Document>,
        /// Told when a write finds that another leader wrote since.
        fenced: Arc<tokio::sync::Notify>,
    },
}

impl Store {
    /// The store in `work_dir` (created if missing).
    pub fn open(work_dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(work_dir).map_err(|source| StoreError::Io {
            path: work_dir.to_path_buf(),
            source,
        })?;
        Ok(Store {
            backend: Backend::File(work_dir.join("marathon-state.json")),
        })
    }

    /// The state in ZooKeeper under `dir`, over `client`'s session (the
    /// leader's), with its current content.
    pub async fn zk(
        client: zk::zookeeper_client::Client,
        url: &zk::ZkUrl,
        dir: String,
    ) -> Result<(Store, State), StoreError> {
        let doc = zk::Document::new(client, url, dir.clone());
        let state = match doc.read().await? {
            None => State::default(),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                    path: PathBuf::from(format!("zk://{}{dir}", url.servers)),
                    source,
                })?
            }
        };
        let store = Store {
            backend: Backend::Zk {
                doc: Arc::new(doc),
                fenced: Arc::new(tokio::sync::Notify::new()),
            },
        };
        Ok((store, state))
    }

    /// Resolves when another leader has written the state: this one must
    /// stop (never for a file).
    pub async fn fenced(&self) {
        match &self.backend {
            Backend::File(_) => std::future::pending().await,
            Backend::Zk { fenced, .. } => fenced.notified().await,
        }
    }

    /// The stored state, or an empty one when nothing was stored yet.
    pub fn load(&self) -> Result<State, StoreError> {
        let Backend::File(path) = &self.backend else {
            unreachable!("a ZooKeeper store is loaded when it is opened");
        };
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StoreError::Io {
                path: path.clone(),
                source,
            }),
        }
    }

    /// Replaces the stored state with `bytes` (a serialised [`State`]).
    /// Never called with the state machine held: the driver hands the
    /// bytes over and goes on (see [`crate::driver`]).
    pub async fn save(&self, bytes: Vec<u8>) -> Result<(), StoreError> {
        match &self.backend {
            Backend::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || save_file(&path, &bytes))
                    .await
                    .map_err(|e| StoreError::Io {
                        path: PathBuf::from("marathon-state"),
                        source: std::io::Error::other(e),
                    })?
            }
            Backend::Zk { doc, fenced } => {
                let written = doc.write(&bytes).await;
                if let Err(zk::ZkError::Fenced(url)) = &written {
                    error!(%url, "another marathon-rs leader wrote the state: stepping down");
                    fenced.notify_one();
                }
                Ok(written?)
            }
        }
    }
}

fn save_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_and_loads_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load().unwrap().apps.is_empty());
        let mut state = State {
            framework_id: Some("fw-1".into()),
            ..Default::default()
        };
        state.root_version = "2024-01-01T00:00:00.000Z".into();
        store
            .save(serde_json::to_vec(&state).unwrap())
            .await
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.framework_id.as_deref(), Some("fw-1"));
        fs::write(dir.path().join("marathon-state.json"), b"{\"apps\": 3}").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("not a valid marathon-rs state"), "{err}");
    }
}
